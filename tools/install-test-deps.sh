#!/usr/bin/env bash
# What `make test` needs beyond the Python packages, installed when missing:
#   chromium + chromium-driver: the web catalogue's browser tests (tests/test_web_browser.py)
#   nginx: the deploy test (a reverse proxy in front of `lwm serve`)
# Only as root with apt-get (CI containers, fresh Debian machines); anywhere else it says what
# is missing and carries on: the tests that need it then skip with a message saying so.
set -uo pipefail

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
[ -x /usr/sbin/nginx ] || missing+=(nginx)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "install-test-deps: installing chromium chromium-driver nginx (missing: ${missing[*]})"
    export DEBIAN_FRONTEND=noninteractive
    if apt-get update && apt-get install -y chromium chromium-driver nginx; then
        exit 0
    fi
    echo "install-test-deps: apt-get failed; the tests that need ${missing[*]} will skip" >&2
else
    echo "install-test-deps: ${missing[*]} missing and not installable here (needs root and" \
         "apt-get); the tests that need them will skip, saying so" >&2
fi
exit 0
