"""Hostile model files, built once for the benchmarks (``worst_request.py``) and the tests
(``tests/test_security_models.py``, ``tests/test_security_costs.py``): skops archives taken
apart and put back together with what no honest writer produces."""
from __future__ import annotations

import copy
import io
import itertools
import json
import zipfile

import numpy as np


def zip_entries(data: bytes) -> list[tuple[str, bytes]]:
    """(name, bytes) of every entry of a zip, in order."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return [(i.filename, zf.read(i)) for i in zf.infolist()]


def rezip(parts, compression: int = zipfile.ZIP_DEFLATED, level: int | None = None) -> bytes:
    """A zip of ``(name, bytes)`` parts, written by :mod:`zipfile`."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression, compresslevel=level) as zf:
        for name, content in parts:
            zf.writestr(name, content)
    return out.getvalue()


def nested_sum_gpr(depth: int, n_train: int = 20, n_features: int = 3, seed: int = 0) -> bytes:
    """A fitted GPR whose ``kernel_`` is Sum(k, k) nested ``depth`` times, where the second k
    of every level is a 4-key stub naming the first by skops ``__id__``: skops builds the shared
    node once, then walks it (audit, predict) along every path, 2^depth of them. The file stays a
    few KB (plus the ``n_train`` training rows; ``seed`` makes distinct files)."""
    import skops.io as sio
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, Sum

    X = np.random.RandomState(seed).rand(n_train, n_features)
    gpr = GaussianProcessRegressor(kernel=RBF(), optimizer=None).fit(X, X.sum(1))
    gpr.L_ = np.eye(1)  # mean predictions never read it; keeps the file small
    gpr.kernel_ = Sum(gpr.kernel_, RBF())
    parts = zip_entries(sio.dumps(gpr))
    schema = json.loads(dict(parts)["schema.json"])
    template = schema["content"]["content"]["kernel_"]
    ids = itertools.count(10 ** 9)
    node = template["content"]["content"]["k1"]  # the RBF leaf
    for _ in range(depth):
        level = copy.deepcopy(template)
        level["__id__"], level["content"]["__id__"] = next(ids), next(ids)
        level["content"]["content"]["k1"] = node
        level["content"]["content"]["k2"] = {k: node[k] for k in
                                             ("__class__", "__module__", "__loader__", "__id__")}
        node = level
    schema["content"]["content"]["kernel_"] = node
    return rezip([(n, json.dumps(schema).encode() if n == "schema.json" else b)
                  for n, b in parts])
