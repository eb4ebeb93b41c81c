"""Cost of hostile model files: peak memory of loading a padded file, time of a shared-reference
bomb, and what real models need (expanded nodes, uncompressed size, expansion ratio).

Each case runs in a fresh process so ``ru_maxrss`` is its own peak. Run:
``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/model_file_bench.py``
(``PYTHONPATH=<old checkout>`` measures another version of ``protocol``).
"""
from __future__ import annotations

import subprocess
import sys
import textwrap

CASE = textwrap.dedent("""
    import io, resource, sys, time, zipfile
    import numpy as np
    from sklearn.linear_model import Ridge
    from learnware_core.modelfile import dump_model, load_model
    X = np.random.default_rng(0).normal(size=(50, 3))
    honest = dump_model(Ridge().fit(X, X.sum(1)))
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(honest)) as zin, \\
            zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zout:
        for i in zin.infolist():
            zout.writestr(i.filename, zin.read(i))
        zout.writestr("pad.npy", bytes({pad_mib} << 20))  # never referenced by any node
    data = out.getvalue()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    try:
        load_model(data); result = "loaded"
    except Exception as exc:
        result = f"refused: {{str(exc)[:80]}}"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"padded file {{len(data) / 1e6:.2f}} MB ({pad_mib} MiB of zeros): "
          f"peak RSS {{before / 1024:.0f}} -> {{peak / 1024:.0f}} MB, "
          f"{{time.perf_counter() - t0:.2f}} s, {{result}}")
""")


def main() -> None:
    for pad in (700, 1000):
        subprocess.run([sys.executable, "-c", CASE.format(pad_mib=pad)], check=False)


if __name__ == "__main__":
    main()
