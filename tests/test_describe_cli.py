"""`lwm find` against a real server process on loopback (human and --json output)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from client_sdk import Identity, MarketClient
from client_sdk.demo.server import ServerProcess

from tests.helpers import fitted_ridge, semantic

LWM = [sys.executable, "-m", "client_sdk.cli"]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("find")
    env = dict(os.environ, LWM_CONFIG_DIR=str(tmp / "config"), OMP_NUM_THREADS="1")
    with ServerProcess(tmp / "market") as server:
        dev = MarketClient(server.url, Identity.generate(), cache_dir=tmp / "dev-cache")
        rng = np.random.default_rng(0)
        ids = []
        for i, (name, desc) in enumerate((
                ("Texas home sales", "monthly sales of homes in Texas cities"),
                ("Cigarette demand", "yearly cigarette packs sold per US state"))):
            X = rng.normal(loc=3 * i, size=(60, 3))
            ids.append(dev.publish(fitted_ridge(X, X.sum(axis=1)), X,
                                   semantic(name, description=desc), k=10))
        dev.close()
        yield env, server, ids


def run(args, env):
    p = subprocess.run(LWM + args, capture_output=True, text=True, env=env, timeout=120)
    return p


def test_lwm_find_ranks_and_says_why(served):
    env, server, ids = served
    p = run(["find", "--market", server.url, "monthly home sales in a Texas town", "--json"],
            env)
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    assert res["learnwares"][0]["learnware_id"] == ids[0]
    assert res["islands"][0]["best_learnware_id"] == ids[0]
    p = run(["find", "--market", server.url, "monthly home sales in a Texas town",
             "--ranker", "lexical"], env)
    assert p.returncode == 0, p.stderr
    first = p.stdout.splitlines().index("learnwares:") + 1
    assert ids[0] in p.stdout.splitlines()[first] and "matched" in p.stdout
    assert "ranker: lexical" in p.stdout


def test_lwm_find_refuses_a_long_requirement(served):
    env, server, _ = served
    p = run(["find", "--market", server.url, "x" * 501], env)
    assert p.returncode != 0 and "at most 500" in p.stderr
