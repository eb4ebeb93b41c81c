"""Issue 14 items 5 and 7: the client surface users touch, and what ``lwm`` prints.

Typed errors exported from ``client_sdk`` (and catchable as ``ValueError``), one input checker
run once per call, ``island_spec`` leaving the caller's dict alone, typed island and manifest
records, a CLI that starts without numpy/scikit-learn, search output with names, localize
output that leads with the recommended mixture.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import client_sdk
from client_sdk import cli
from client_sdk.client import MarketClient
from tests.helpers import blob, fitted_ridge, linear_task, semantic

FEATURES = ("a", "b", "c")
HEAVY = ("numpy", "sklearn", "pandas", "httpx", "scipy", "skops")


# ----------------------------------------------------------------------------- typed errors
def test_error_types_are_exported_and_data_errors_are_value_errors():
    from client_sdk import (ArgumentError, DataError, KeyMismatchError, LearnwareError,
                            ProtocolError, SchemaError, UnsafeModelError, WithdrawnError)
    from protocol import errors
    assert DataError is errors.DataError and WithdrawnError is errors.WithdrawnError
    for cls in (ProtocolError, DataError, ArgumentError, WithdrawnError, KeyMismatchError,
                SchemaError, UnsafeModelError):
        assert issubclass(cls, LearnwareError)
    assert issubclass(DataError, ValueError) and issubclass(ArgumentError, ValueError)
    assert not issubclass(WithdrawnError, ValueError)
    with pytest.raises(ValueError) as exc:  # bad data, caught the way callers always did
        client_sdk.RKMESpec.fit(np.full((60, 2), np.nan))
    assert isinstance(exc.value, DataError) and exc.value.code == "bad_data"


def test_localize_argument_errors_are_typed_and_value_errors(tmp_path):
    """The rounds checks run before any request: typed, with the field, still ValueErrors."""
    from client_sdk import ArgumentError, MetricBudget
    user = MarketClient("http://127.0.0.1:9", cache_dir=tmp_path)
    X, y, sem = np.zeros((10, 3)), np.zeros(10), semantic()
    with pytest.raises(ValueError) as exc:
        user.localize(X, y, sem, rounds=0)
    assert isinstance(exc.value, ArgumentError) and exc.value.field == "rounds"
    with pytest.raises(ArgumentError, match="max_rounds"):
        user.localize(X, y, sem, rounds=3, budget=MetricBudget(max_rounds=2))
    with pytest.raises(ArgumentError, match="jitter"):
        MetricBudget(jitter=-1.0)


# ----------------------------------------------------------------------- one input checker
def _count_checks(monkeypatch) -> list[str]:
    """Count every call of the SDK's input checkers, wherever a module imported them."""
    import client_sdk.client as client_mod
    import client_sdk.data as data_mod
    import client_sdk.rkme as rkme_mod
    calls: list[str] = []

    def counting(fn):
        def wrapper(*args, **kwargs):
            calls.append(fn.__name__)
            return fn(*args, **kwargs)
        return wrapper
    for mod in (client_mod, data_mod, rkme_mod):
        for name in ("as_matrix",):
            if hasattr(mod, name):
                monkeypatch.setattr(mod, name, counting(getattr(mod, name)))
    return calls


def test_publish_and_search_check_their_input_once(market, monkeypatch):
    rng = np.random.default_rng(3)
    X = pd.DataFrame(blob(rng, (0, 0, 0), n=150), columns=list(FEATURES))
    dev, user = market.client(), market.client()
    calls = _count_checks(monkeypatch)
    dev.publish(fitted_ridge(X.to_numpy(), linear_task(rng, X.to_numpy(), (1, 2, 3))), X,
                semantic(), k=10)
    assert calls == ["as_matrix"], calls
    calls.clear()
    res = user.search(X[list(reversed(FEATURES))], semantic(), k=10)  # reordered by name
    assert calls == ["as_matrix"], calls
    assert [m.learnware_id for m in res.single] == ["lw-1"]


# --------------------------------------------------------------------- island_spec, records
def test_island_spec_leaves_the_callers_semantic_unchanged(market):
    rng = np.random.default_rng(4)
    client = market.client()
    X1, X2 = blob(rng, (0, 0, 0), n=150), blob(rng, (1, 0, 1), n=150)
    sem = semantic()
    before = copy.deepcopy(sem)
    first = client.island_spec(X1, sem, k=10)  # a new island: scales declared from X1
    assert sem == before
    assert "feature_scales" in first.semantic and isinstance(first.spec, client_sdk.RKMESpec)
    lid = client.publish(fitted_ridge(X1, linear_task(rng, X1, (1, 2, 3))), None, sem,
                         spec=first)
    assert sem == before
    assert client.manifest(lid).semantic["feature_scales"] == first.semantic["feature_scales"]
    declared = dict(sem, feature_scales=first.semantic["feature_scales"])
    kept = copy.deepcopy(declared)
    second = client.island_spec(X2, declared, k=10)  # the island exists: its kernel rules
    assert declared == kept and "feature_scales" not in second.semantic
    assert client.publish(fitted_ridge(X2, linear_task(rng, X2, (3, 2, 1))), None, declared,
                          spec=second) == "lw-2"
    assert "feature_scales" not in client.manifest("lw-2").semantic


def test_islands_and_manifests_are_typed_records(market):
    from client_sdk import IslandInfo, Learnware, Manifest
    rng = np.random.default_rng(5)
    X = blob(rng, (0, 0, 0), n=150)
    client = market.client()
    lid = client.publish(fitted_ridge(X, linear_task(rng, X, (1, 2, 3))), X,
                         semantic("typed records"), k=10)
    (info,) = client.islands()
    assert isinstance(info, IslandInfo) and info.learnware_count == 1
    assert info.n_features == 3 and info["island_id"] == info.island_id == "isl-1"
    assert client.island(semantic()) == info
    man = client.manifest(lid)
    assert isinstance(man, Manifest) and man.deleted is False and man.withdrawn is None
    assert man["model_sha256"] == man.model_sha256 and man.get("nothing", 7) == 7
    assert man.semantic["name"] == "typed records" and man.island_id == info.island_id
    with pytest.raises(dataclasses.FrozenInstanceError):
        man.deleted = True
    with pytest.raises(KeyError):
        man["nothing"]
    lw = client.download(lid)
    assert isinstance(lw, Learnware) and isinstance(lw.spec, client_sdk.RKMESpec)


# ---------------------------------------------------------------------------- CLI start-up
def test_cli_help_loads_no_heavy_module():
    """``lwm --help`` (and a command's help) parse arguments without numpy, scikit-learn,
    pandas or httpx; the model-file allow-list is still there when asked for."""
    code = ("import sys\nfrom client_sdk import cli\n"
            "for argv in (['--help'], ['localize', '--help'], ['search', '--help']):\n"
            "    try:\n        cli.main(argv)\n    except SystemExit:\n        pass\n"
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip().splitlines()[-1] == "[]", out[-500:]
    probe = ("import sys, learnware_core.modelfile as m\n"
             "assert not any(k.startswith('sklearn') for k in sys.modules)\n"
             "print(len(m.ALLOWED_TYPES), 'NdArrayNode' in m.ALLOWED_LOADERS)")
    n, has_loader = subprocess.run([sys.executable, "-c", probe], capture_output=True,
                                   text=True, check=True).stdout.split()
    assert int(n) > 100 and has_loader == "True"


def test_localize_help_says_the_mixture_is_the_answer(capsys):
    with pytest.raises(SystemExit):
        cli.main(["localize", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "recommends the mixture" in text and "secondary" in text


# ---------------------------------------------------------------------------- CLI output
NAMES = ("Austin weekly sales", "Dallas weekly sales", "Houston weekly sales",
         "El Paso weekly sales")


@pytest.fixture
def cli_world(market, tmp_path, monkeypatch):
    """Four named learnwares; ``lwm`` talks to the in-process market."""
    rng = np.random.default_rng(11)
    for i, name in enumerate(NAMES):
        X = blob(rng, (i, 0, -i), n=150)
        market.client().publish(fitted_ridge(X, linear_task(rng, X, (1, 2, 3 + 2 * i))), X,
                                semantic(name), k=10)
    (tmp_path / "sem.json").write_text(json.dumps(semantic("my task")))
    Xu = blob(rng, (3, 0, -3), n=120)
    user = pd.DataFrame(Xu, columns=list(FEATURES))
    user.to_csv(tmp_path / "user.csv", index=False)
    user["y"] = linear_task(rng, Xu, (1, 2, 9))
    user.head(30).to_csv(tmp_path / "labelled.csv", index=False)
    monkeypatch.setattr(cli, "_client", lambda args, need_identity=False: market.client())
    return tmp_path


def _lwm(capsys, *argv) -> str:
    assert cli.main(list(argv)) == cli.EXIT_OK
    return capsys.readouterr().out


def test_cli_search_shows_names(cli_world, capsys):
    sem, data = str(cli_world / "sem.json"), str(cli_world / "user.csv")
    out = _lwm(capsys, "search", "--semantic", sem, "--data", data, "--max-results", "4")
    ranked = [line for line in out.splitlines() if line[:3].strip().rstrip(".").isdigit()]
    assert len(ranked) == 4
    assert ranked[0].split()[1] == "lw-4" and repr(NAMES[3]) in ranked[0]
    assert all(any(repr(n) in line for n in NAMES) for line in ranked)
    res = json.loads(_lwm(capsys, "search", "--semantic", sem, "--data", data, "--json"))
    assert {m["learnware_id"]: m["name"] for m in res["single"]}["lw-1"] == NAMES[0]
    listed = json.loads(_lwm(capsys, "search", "--semantic", sem, "--json"))  # no requirement
    assert [m["name"] for m in listed["single"]] == list(NAMES)


def test_cli_localize_leads_with_the_mixture(cli_world, capsys):
    argv = ["localize", "--semantic", str(cli_world / "sem.json"), "--data",
            str(cli_world / "labelled.csv"), "--target", "y", "--jitter", "0"]  # comparable runs
    out = _lwm(capsys, *argv)
    lines = out.splitlines()
    assert lines[1].startswith("recommended: mixture ") and "expected rmse about" in lines[1]
    assert "secondary" in lines[2]
    assert "mmd 0" not in out and "fit unknown" not in out and "score" not in out
    ranked = [line for line in lines if line[:3].strip().rstrip(".").isdigit()]
    assert ranked and all("expected " in line and "+/-" in line for line in ranked)
    assert any(repr(n) in line for line in ranked for n in NAMES)
    data = json.loads(_lwm(capsys, *argv, "--json"))
    assert data["recommended"] == "mixture" and data["mixture"]["learnware_ids"]
    for key in ("single", "anchor_metrics", "sent_metrics", "anchors", "rounds", "n_rows_sent",
                "anchors_ignored"):
        assert key in data
    measured = [line for line in lines if line.startswith("    ") and " -> " in line]
    assert len(measured) == len(data["anchor_metrics"]) > 0
    for lid, value in data["anchor_metrics"].items():  # exact local value -> value sent
        line = next(m for m in measured if m.split()[0] == lid)
        assert line.split()[1] == f"{value:.6g}"
        assert line.split()[3] == f"{data['sent_metrics'][lid]:.6g}"
    assert lines.index(ranked[0]) < lines.index(measured[0])
