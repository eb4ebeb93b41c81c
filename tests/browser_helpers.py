"""What the browser tests share: finding and starting Debian's Chromium through Playwright
(skipping, with the reason, only when it truly cannot run here), a watch on what a page does that
it should not, and screenshots into ``test-screenshots/`` (git-ignored; the best are kept in
docs/screenshots/)."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("LWM_CHROMIUM", "/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parents[1] / "test-screenshots"


@contextlib.contextmanager
def chromium():
    """A headless Chromium for a module's tests, or a skip that says why there is none."""
    if not (Path(CHROMIUM).exists() and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(f"browser tests skipped: no Chromium at {CHROMIUM} (Debian packages chromium "
                    f"chromium-driver; tools/install-test-deps.sh installs them as root)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("browser tests skipped: the playwright package is not installed "
                    "(pip install -e '.[dev]')")
    with sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        except Exception as exc:  # noqa: BLE001 - any launch failure: say why, then skip
            pytest.skip(f"browser tests skipped: Chromium at {CHROMIUM} does not start here: "
                        f"{str(exc).splitlines()[0][:300]}")
        try:
            yield b
        finally:
            b.close()


class Watch:
    """Everything a page did that it should not: console errors (a CSP refusal is one),
    uncaught exceptions, dialogs (alert() from a developer's text), requests to anywhere but
    ``origin`` (``data:`` URLs allowed)."""

    def __init__(self, page, origin: str):
        self.errors, self.dialogs, self.foreign = [], [], []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        page.on("request", lambda r: None if r.url.startswith(origin)
                or r.url.startswith("data:") else self.foreign.append(r.url))

    def clean(self) -> None:
        assert self.errors == [], self.errors
        assert self.dialogs == [], self.dialogs
        assert self.foreign == [], self.foreign


def shot(page, name: str) -> None:
    """A full-page screenshot ``test-screenshots/<name>.png``."""
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
