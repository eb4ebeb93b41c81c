"""Issue 14 items 3, 4: one home for the RKME spec's decoding, for the objectives' table and for
the publish checks (a pure function)."""
from __future__ import annotations

import pathlib
import re

import numpy as np

import learnware_core.spec as rkme_spec
from client_sdk.rkme import RKMESpec
from market_server import search
from market_server.config import ServerConfig
from market_server.publish_checks import check_publish
from protocol.encoding import encode_array
from tests.helpers import semantic

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _spec(d: int = 3) -> dict:
    X = np.random.default_rng(0).normal(size=(200, d))
    return RKMESpec.fit(X, k=10, gamma=1.0 / (2 * d), scales=np.ones(d)).to_dict()


def test_client_publish_and_search_decode_through_learnware_core_spec(monkeypatch):
    seen = []
    real = rkme_spec.decode_array

    def counting(obj, field, **kw):
        seen.append(field)
        return real(obj, field=field, **kw)

    monkeypatch.setattr(rkme_spec, "decode_array", counting)
    spec = _spec()
    RKMESpec.from_dict(spec)  # the client
    assert seen == ["z", "beta", "scales"]
    seen.clear()
    check_publish(semantic(), spec, {"size": 1, "data": "AA==", "sha256": "0" * 64}, {}, "x",
                  None, ServerConfig())  # the publish check
    assert {"spec.z", "spec.beta", "spec.scales"} <= set(seen)
    # the search index and the requirement: the same decoder
    assert search.decode_spec is rkme_spec.decode_points
    seen.clear()
    search.decode_spec(spec)
    assert seen == ["spec.z", "spec.beta"]


def test_check_publish_is_pure_and_collects_every_reason():
    spec = _spec()
    bad = dict(spec, beta=encode_array(np.full(10, 0.5)))
    sem = semantic(objective="accuracy", feature_scales=encode_array(np.ones(3)))
    model = {"size": 10**12, "data": "", "sha256": "0" * 64}
    checked = check_publish(sem, bad, model, {}, "nobody", None, ServerConfig())
    codes = {r.code for r in checked.reasons}
    assert {"model_too_large", "bad_objective", "spec_weights"} <= codes
    by_code = {r.code: r for r in checked.reasons}
    assert by_code["spec_weights"].field == "spec.beta"
    assert by_code["bad_objective"].message == ("objective accuracy does not fit a regression "
                                                "task")


def test_objective_ranges_and_task_types_live_in_one_table():
    from learnware_core.metrics import CLASSIFICATION_METRICS, METRICS, REGRESSION_METRICS
    from protocol.objectives import OBJECTIVE_TABLE, WIRE_OBJECTIVES
    from protocol.schemas import OBJECTIVES
    assert OBJECTIVES == WIRE_OBJECTIVES
    assert set(METRICS) == set(OBJECTIVE_TABLE)
    for name, (_, greater) in METRICS.items():
        assert greater == OBJECTIVE_TABLE[name].greater_is_better
        assert (name in REGRESSION_METRICS) == (OBJECTIVE_TABLE[name].task_type == "regression")
        assert (name in CLASSIFICATION_METRICS) != (name in REGRESSION_METRICS)
    # no other module spells a range or a task's objective list out
    pattern = re.compile(r'"(rmse|accuracy|r2|f1)"\s*:\s*\(|in \("rmse", "mse", "mae", "error"\)'
                         r'|in \("rmse", "mae",\s*"r2"\)|in \("accuracy", "f1"\)')
    offenders = [str(p.relative_to(ROOT)) for pkg in ("protocol", "learnware_core",
                                                      "market_server", "client_sdk")
                 for p in (ROOT / pkg).rglob("*.py")
                 if p.name != "objectives.py" and pattern.search(p.read_text())]
    assert offenders == []
