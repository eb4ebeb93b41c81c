"""How long the CLI takes to start: the median of N runs of ``lwm --help`` and of
``python -c "import client_sdk.cli"``, each a fresh process, and how many scikit-learn modules
that import loads.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/cli_start_bench.py [--runs 10] [--root DIR]

``--root DIR`` measures the source tree in DIR instead of the installed one (put first on
``PYTHONPATH``), e.g. an export of an older commit for a before/after comparison:
``git archive 55b5058 | tar -x -C /tmp/before`` then ``--root /tmp/before``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COUNT_SKLEARN = ("import sys, client_sdk.cli; "
                 "print(sum(m.split('.')[0] == 'sklearn' for m in sys.modules))")


def lwm_command() -> list[str]:
    """The installed ``lwm`` script next to this interpreter, else its equivalent."""
    script = Path(sys.executable).with_name("lwm")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from client_sdk.cli import main; sys.exit(main())"]


def median_seconds(cmd: list[str], env: dict, runs: int, cwd: str) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--root", default=None, help="source tree to measure (default: installed)")
    args = ap.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if args.root:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(args.root).resolve()),
                                                         env.get("PYTHONPATH")]))
    cwd = tempfile.gettempdir()  # `python -c` puts the working directory first on sys.path
    help_s = median_seconds(lwm_command() + ["--help"], env, args.runs, cwd)
    import_s = median_seconds([sys.executable, "-c", "import client_sdk.cli"], env, args.runs,
                              cwd)
    n_sklearn = subprocess.run([sys.executable, "-c", COUNT_SKLEARN], env=env, cwd=cwd,
                               check=True, capture_output=True, text=True).stdout.strip()
    print(f"tree: {args.root or 'installed'}  runs: {args.runs}")
    print(f"lwm --help                        median {help_s:.3f} s")
    print(f"python -c 'import client_sdk.cli' median {import_s:.3f} s")
    print(f"scikit-learn modules loaded by that import: {n_sklearn}")


if __name__ == "__main__":
    main()
