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
