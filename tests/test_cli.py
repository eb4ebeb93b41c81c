"""The `lwm` command line end to end against a real server process on loopback."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from client_sdk.demo.server import ServerProcess
from learnware_core.modelfile import dump_model

LWM = [sys.executable, "-m", "client_sdk.cli"]
FEATURES = ["a", "b", "c"]


def run(args, env, check=True):
    p = subprocess.run(LWM + args, capture_output=True, text=True, env=env, timeout=120)
    if check and p.returncode != 0:
        raise AssertionError(f"lwm {' '.join(args)} -> {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    env = dict(os.environ, LWM_CONFIG_DIR=str(tmp / "config"), OMP_NUM_THREADS="1")
    sem = {"name": "cli sales", "description": "a CLI test", "data_type": "table",
           "task_type": "regression", "input_features": FEATURES, "target": "y",
           "objective": "rmse"}
    (tmp / "sem.json").write_text(json.dumps(sem))
    with ServerProcess(tmp / "market") as server:
        yield tmp, env, server


def test_cli_round_trip(world):
    from sklearn.linear_model import Ridge
    tmp, env, server = world
    m = ["--market", server.url]
    out = json.loads(run(["keygen", "--identity", str(tmp / "dev.pem"), "--json"], env).stdout)
    assert len(out["key_id"]) == 32 and (os.stat(tmp / "dev.pem").st_mode & 0o777) == 0o600
    ids = []
    rng = np.random.default_rng(0)
    for loc in (0.0, 8.0):
        X = rng.normal(loc=loc, size=(300, 3))
        df = pd.DataFrame(X, columns=FEATURES)
        df.to_csv(tmp / f"train{loc}.csv", index=False)
        (tmp / f"m{loc}.skops").write_bytes(dump_model(Ridge().fit(X, X @ [1, 2, 3 + loc])))
        res = run(["publish", *m, "--identity", str(tmp / "dev.pem"), "--model",
                   str(tmp / f"m{loc}.skops"), "--data", str(tmp / f"train{loc}.csv"),
                   "--semantic", str(tmp / "sem.json"), "--json"], env)
        ids.append(json.loads(res.stdout)["learnware_id"])
    Xu = rng.normal(loc=8.0, size=(120, 3))
    user = pd.DataFrame(Xu, columns=FEATURES)
    user.to_parquet(tmp / "user.parquet") if _has_parquet() else user.to_csv(tmp / "user.csv",
                                                                              index=False)
    data = tmp / ("user.parquet" if _has_parquet() else "user.csv")
    res = json.loads(run(["search", *m, "--semantic", str(tmp / "sem.json"), "--data", str(data),
                          "--json"], env).stdout)
    assert res["single"][0]["learnware_id"] == ids[1]
    human = run(["search", *m, "--semantic", str(tmp / "sem.json"), "--data", str(data)],
                env).stdout
    assert ids[1] in human and "score" in human
    res = json.loads(run(["download", *m, ids[1], "--out", str(tmp / "dl"), "--json"],
                         env).stdout)
    assert Path(res["path"]).exists()
    lab = user.copy()
    lab["y"] = Xu @ [1, 2, 11] + 0.1
    lab.head(10).to_csv(tmp / "labelled.csv", index=False)
    res = json.loads(run(["localize", *m, "--semantic", str(tmp / "sem.json"), "--data",
                          str(tmp / "labelled.csv"), "--target", "y", "--json"], env).stdout)
    assert res["single"] and set(res["anchor_metrics"]) <= set(ids)
    world = json.loads(run(["world", *m, "--json"], env).stdout)
    assert len(world["components"]) == 1 and world["components"][0]["learnware_count"] >= 2
    human = run(["world", *m], env).stdout
    assert world["components"][0]["component_id"] in human and "island" in human


def _has_parquet():
    try:
        import pyarrow  # noqa: F401
        return True
    except ImportError:
        return False


def test_cli_exit_codes(world):
    tmp, env, server = world
    # refused by the data checks -> 1 with a clear message
    pd.DataFrame(np.ones((5, 3)), columns=FEATURES).to_csv(tmp / "tiny.csv", index=False)
    p = run(["search", "--market", server.url, "--semantic", str(tmp / "sem.json"), "--data",
             str(tmp / "tiny.csv")], env, check=False)
    assert p.returncode == 1 and "too few" in p.stderr.lower() and "Traceback" not in p.stderr
    # usage error -> 2
    p = run(["search", "--market", server.url, "--semantic", str(tmp / "nope.json")], env,
            check=False)
    assert p.returncode == 2 and "cannot read" in p.stderr
    # unreachable market -> 3
    p = run(["search", "--market", "http://127.0.0.1:9", "--semantic", str(tmp / "sem.json")],
            env, check=False)
    assert p.returncode == 3 and "cannot reach" in p.stderr
    assert run(["--help"], env).stdout.count("localize") >= 1
