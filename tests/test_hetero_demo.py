"""The heterogeneous scenario's feature sets (issue #15): what the figures rest on."""
from __future__ import annotations

from client_sdk.demo.datasets import TXHOUSING_FEATURES, VOTE_FEATURES
from client_sdk.demo.hetero import feature_sets


def test_feature_sets_follow_the_issue():
    for name, feats in (("txhousing", TXHOUSING_FEATURES), ("vote", VOTE_FEATURES)):
        devs, users, renamed = feature_sets(name, list(feats))
        assert len({tuple(d) for d in devs}) >= 3                       # >= 3 islands
        for a in devs:                                                  # that share features
            assert all(set(a) & set(b) for b in devs)
        unused = [u for u in users if u not in devs]
        assert unused                                                   # a set no developer used
        for u in users:
            assert set(u) <= set(feats) and u
        for i, ren in renamed.items():                                  # renamed columns exist
            assert set(ren) <= set(users[i])
    devs, _, _ = feature_sets("txhousing", list(TXHOUSING_FEATURES))
    assert {"log_listings", "inventory"}.isdisjoint(devs[1])
    assert {"d2", "d3"}.isdisjoint(devs[2]) and devs[0] == list(TXHOUSING_FEATURES)


def _record_demo_calls(monkeypatch):
    """``lwm demo``'s two jobs replaced by recorders: which ran, in what order, with what."""
    import client_sdk.demo.hetero as hetero
    import client_sdk.demo.run as run
    calls = []
    monkeypatch.setattr(run, "run_demo", lambda **kw: calls.append(("main", kw)))
    monkeypatch.setattr(hetero, "hetero_report",
                        lambda out, islands, **kw: calls.append(("hetero", dict(kw, out=out,
                                                                                islands=islands))))
    return calls


def test_demo_runs_the_hetero_scenario_after_the_main_job(monkeypatch, tmp_path):
    from client_sdk.cli import main
    calls = _record_demo_calls(monkeypatch)
    assert main(["demo", "--json", "--out", str(tmp_path), "--island", "vote", "--seed", "3"]) == 0
    assert [c[0] for c in calls] == ["main", "hetero"]
    het = calls[1][1]
    # same island, seed and grid; the homogeneous run just made is the reference, not re-run
    assert het["islands"] == "vote" and het["seed"] == 3 and het["quick"] is False
    assert het["reference"] == tmp_path / "results.csv" and het["out"] == tmp_path


def test_demo_hetero_flags(monkeypatch, tmp_path):
    from client_sdk.cli import main
    calls = _record_demo_calls(monkeypatch)
    main(["demo", "--json", "--out", str(tmp_path), "--no-hetero"])
    assert [c[0] for c in calls] == ["main"]
    calls.clear()      # the ablation's results are no reference for the scenario
    main(["demo", "--json", "--out", str(tmp_path), "--no-kernel-refinement"])
    assert [c[0] for c in calls] == ["main"]
    calls.clear()      # --hetero: the scenario alone
    main(["demo", "--json", "--out", str(tmp_path), "--hetero", "--quick"])
    assert [c[0] for c in calls] == ["hetero"] and calls[0][1]["reference"] is None
    assert calls[0][1]["quick"] is True


def test_developer_model_reuses_a_fit_on_the_same_inputs_only():
    """The scenario after the main job refits the developers who keep every feature on the
    same rows and seed: the second call returns the first fit; any other input refits."""
    import numpy as np
    from client_sdk.demo.run import developer_model
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + 0.1 * rng.normal(size=60)
    a = developer_model("regression", "rmse", X, y, True, 0)
    assert developer_model("regression", "rmse", X.copy(), y.copy(), True, 0) is a
    others = [developer_model("regression", "rmse", X[:, :2], y, True, 0),   # other columns
              developer_model("regression", "rmse", X, y + 1.0, True, 0),    # other labels
              developer_model("regression", "rmse", X, y, False, 0),         # other split
              developer_model("regression", "rmse", X, y, True, 1)]          # other seed
    assert all(m is not a for m in others)
    assert np.allclose(others[1].predict(X), a.predict(X) + 1.0, atol=0.3)


def test_demo_clients_pin_the_servers_own_key(monkeypatch, tmp_path):
    """The demo's throwaway loopback servers are pinned from their key file, not trusted on
    first use: nothing lands in the user's known_markets.json, so a later server on the same
    port (another key) is not refused."""
    from client_sdk import Identity, MarketClient
    from client_sdk.demo.server import ServerProcess
    config = tmp_path / "config"
    monkeypatch.setenv("LWM_CONFIG_DIR", str(config))
    monkeypatch.delenv("LWM_MARKET_KEY_FILE", raising=False)
    with ServerProcess(tmp_path / "market", address_limits=False) as server:
        key = server.market_key
        with MarketClient(server.url, Identity.generate(), market_key=key,
                          cache_dir=tmp_path / "cache") as c:
            c.world()                                   # a signed answer, checked against key
        import httpx
        assert httpx.get(server.url + "/v1/market").json()["market_key"] == key
    assert not (config / "known_markets.json").exists()
    other = ServerProcess(tmp_path / "other", extra_args=["--market-key-file",
                                                          str(tmp_path / "k.pem")])
    assert other.market_key is None                     # key elsewhere: no guess
