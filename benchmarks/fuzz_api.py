"""Issue #8 "Bad input": a longer bounded fuzz run of the market's HTTP API.

The hostile-request strategies of ``benchmarks/hostile.py`` (also run, briefly, by
``tests/test_hostile_inputs.py``): (a) arbitrary bytes and byte-mutated envelopes to every
POST/DELETE endpoint, (b) validly signed envelopes with hostile bodies, (c) GETs with hostile path
segments and query strings. Every answer must be < 500 and a JSON envelope signed by the market
(an ``error``, or the endpoint's type); refused requests must leave the market's learnwares and
islands unchanged. Prints cases tried, 5xx count and crash count (a crash: an exception out of the
app, or a dropped connection / dead server process).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/fuzz_api.py --examples 5000
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/fuzz_api.py --examples 2000 --server
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/fuzz_api.py --examples 0 --schemathesis 300

``--server`` also runs them against a real ``market_server serve`` process on 127.0.0.1
(client_sdk.demo.server.ServerProcess). ``--schemathesis N`` adds a schemathesis run (N examples
per operation, generated from /openapi.json, in-process) when schemathesis is installed; it is not
a dependency of the project (``.venv/bin/pip install schemathesis``).

Exit status 1 when any 5xx, crash or check failure was seen.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from hypothesis import HealthCheck, given, settings  # noqa: E402

from hostile import (NO_ADDRESS_LIMIT_ARGS, NO_ADDRESS_LIMITS, Fuzzer, Unsendable,  # noqa: E402
                     build_context, cases, flask_sender, httpx_sender, populate, run_cases,
                     state_checker)


class InProcessMarket:
    """One market app in this process: what :func:`populate`, :func:`build_context` and
    :func:`state_checker` read (a benchmark does not import the test suite's ``MarketEnv``)."""

    url = "http://market.test"

    def __init__(self, data_dir: Path):
        from market_server import ServerConfig, create_app
        self.data_dir = data_dir
        self.app = create_app(ServerConfig(data_dir=data_dir, refine_at=(), **NO_ADDRESS_LIMITS))
        self.state = self.app.extensions["learnware_market"]
        self.store = self.state.store
        self.market_key = self.state.identity.public_key_b64

    def client(self):
        import httpx

        from client_sdk import Identity, MarketClient
        return MarketClient(self.url, Identity.generate(),
                            transport=httpx.WSGITransport(app=self.app),
                            cache_dir=self.data_dir / f"cache-{time.time_ns()}")

    def close(self) -> None:
        self.state.market.sandbox.close()  # its model worker processes
        self.store.dispose()


def report(name: str, fuzzer: Fuzzer, seconds: float) -> bool:
    s = fuzzer.stats
    print(f"[{name}] {s.line()}  ({seconds:.0f} s)")
    print(f"[{name}] answers: {dict(sorted(s.by_answer.items(), key=lambda kv: -kv[1]))}")
    for msg in s.failures[:20]:
        print(f"[{name}]   FAIL {msg[:800]}")
    return not s.failures


def run_schemathesis(app, examples: int) -> bool:
    try:
        import schemathesis
    except ImportError:
        print("[schemathesis] not installed: skipped (.venv/bin/pip install schemathesis)")
        return True
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    tried = server_errors = crashes = 0
    failures: list[str] = []
    t0 = time.time()
    for result in schema.get_all_operations():
        op = result.ok()

        @settings(max_examples=examples, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(op.as_strategy())
        def run(case):
            nonlocal tried, server_errors, crashes
            tried += 1
            try:
                resp = case.call()
            except Exception as exc:  # noqa: BLE001
                crashes += 1
                failures.append(f"crash {case.method} {case.formatted_path}: {exc!r}"[:500])
                return
            if resp.status_code >= 500:
                server_errors += 1
                failures.append(f"{resp.status_code} {case.method} {case.formatted_path}"[:500])

        run()
    print(f"[schemathesis] cases tried: {tried}  5xx: {server_errors}  crashes: {crashes}  "
          f"({time.time() - t0:.0f} s)")
    for msg in failures[:20]:
        print(f"[schemathesis]   FAIL {msg}")
    return not failures


class _Skip(Exception):
    pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--examples", type=int, default=5000, help="hostile cases in-process")
    ap.add_argument("--server", action="store_true",
                    help="also fuzz a real server process on 127.0.0.1")
    ap.add_argument("--server-examples", type=int, default=None,
                    help="cases against the server process (default: --examples)")
    ap.add_argument("--schemathesis", type=int, default=0, metavar="N",
                    help="schemathesis examples per operation (0: skip)")
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="lwm-fuzz-"))
    os.environ["LWM_CONFIG_DIR"] = str(tmp / "config")  # never pin keys in ~/.config

    ok = True
    env = None
    try:
        if args.examples <= 0 and not args.schemathesis:
            raise _Skip
        env = InProcessMarket(tmp / "inproc")
        populate(env)
        ctx = build_context(env)
        fuzzer = Fuzzer(env.market_key, flask_sender(env.app), state_checker(env), strict=False)
        t0 = time.time()
        run_cases(fuzzer, cases(ctx), args.examples, seed=args.seed)
        ok &= report("in-process", fuzzer, time.time() - t0)
        if args.schemathesis:
            ok &= run_schemathesis(env.app, args.schemathesis)
    except _Skip:
        pass
    finally:
        if env is not None:
            env.close()

    try:
        if args.server:
            ok &= fuzz_server(tmp / "server", args.server_examples or args.examples, args.seed)
    finally:
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    print("OK: no 5xx, no crash" if ok else "FAILED (see above)")
    return 0 if ok else 1


def fuzz_server(data_dir: Path, examples: int, seed: int | None) -> bool:
    """The same cases over real HTTP against ``market_server serve`` on loopback."""
    import httpx

    from client_sdk import Identity, MarketClient
    from client_sdk.demo.server import ServerProcess
    from market_server import ServerConfig
    from market_server.storage import Store

    with ServerProcess(data_dir, extra_args=NO_ADDRESS_LIMIT_ARGS) as server:
        class Env:  # what populate/build_context need, pointed at the server's database
            url = server.url
            market_key = httpx.get(server.url + "/v1/market").json()["market_key"]

            def client(self):
                return MarketClient(server.url, Identity.generate(),
                                    cache_dir=data_dir / f"cache-{time.time_ns()}")
        env = Env()
        populate(env)
        cfg = ServerConfig(data_dir=data_dir)
        store = Store(cfg.resolved_db_url(), blob_store=cfg.resolved_blob_store(),
                      blob_dir=data_dir / "blobs")
        try:
            from market_server.market import Market
            env.store = store
            env.state = type("S", (), {"market": Market(cfg, store)})()
            ctx = build_context(env)

            def check():
                if server.proc.poll() is not None:
                    return "the server process died"
                return state()
            state = state_checker(env)
            with httpx.Client(base_url=server.url, timeout=60) as http:
                send = httpx_sender(http)

                def send_checked(method, path, data):
                    if server.proc.poll() is not None:
                        raise RuntimeError("the server process died")
                    try:
                        return send(method, path, data)
                    except (httpx.InvalidURL, httpx.UnsupportedProtocol, UnicodeError) as exc:
                        raise Unsendable(str(exc)) from exc  # refused by the client itself
                fuzzer = Fuzzer(env.market_key, send_checked, check, strict=False)
                t0 = time.time()
                run_cases(fuzzer, cases(ctx), examples, seed=seed)
            alive = server.proc.poll() is None
            ok = report("server process", fuzzer, time.time() - t0)
            if not alive:
                print("[server process] the server process died")
            return ok and alive
        finally:
            store.dispose()


if __name__ == "__main__":
    sys.exit(main())
