"""Rotating the market key (issue 20): the old key signs the hand-over, the market announces it
at ``GET /v1/market/keys``, and a client pinned to the old key follows it (and nothing else)."""
from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from market_server.admin import main as admin_main
from market_server.deploy_checks import DeployError, check_deployment
from market_server.config import ServerConfig
from protocol.errors import KeyMismatchError
from protocol.identity import Identity
from protocol.rotation import RotationError, follow_rotations, sign_rotation, verify_rotation
from tests.helpers import blob, fitted_ridge, linear_task, semantic

SEM = semantic("rotation")


def test_a_rotation_verifies_under_the_old_key_only():
    a, b, c = Identity.generate(), Identity.generate(), Identity.generate()
    r = sign_rotation(a, b)
    assert verify_rotation(r, old=a.public_key_b64) == b.public_key_b64
    with pytest.raises(RotationError):
        verify_rotation(r, old=c.public_key_b64)
    forged = dict(r, new=c.public_key_b64)  # someone swaps in their own key
    with pytest.raises(RotationError):
        verify_rotation(forged, old=a.public_key_b64)
    # a statement the new key did not sign (the rotator does not hold it) is refused
    unproven = dict(sign_rotation(a, c), new=b.public_key_b64)
    with pytest.raises(RotationError):
        verify_rotation(unproven, old=a.public_key_b64)
    with pytest.raises(RotationError):
        verify_rotation(dict(r, old_signature="A" * 86 + "=="), old=a.public_key_b64)


def test_follow_rotations_walks_the_chain_from_the_pinned_key():
    a, b, c = Identity.generate(), Identity.generate(), Identity.generate()
    chain = [sign_rotation(a, b), sign_rotation(b, c)]
    assert follow_rotations(chain, a.public_key_b64) == c.public_key_b64
    assert follow_rotations(chain, b.public_key_b64) == c.public_key_b64
    assert follow_rotations(chain, c.public_key_b64) == c.public_key_b64
    other = Identity.generate().public_key_b64
    assert follow_rotations(chain, other) == other  # nothing hands "other" over


def _publish_one(env) -> str:
    rng = np.random.default_rng(0)
    X = blob(rng, [0, 1, 2], n=80)
    return env.client().publish(fitted_ridge(X, linear_task(rng, X, [1.0, 0.5, 0.0])), X, SEM,
                                k=10)


def _rotated_sibling(env, tmp_path, *, announce: bool = True):
    """The market's database served with a new key (announced by a rotation or not)."""
    old = env.state.identity
    new = Identity.generate()
    new.save(tmp_path / "new.pem")
    if announce:
        env.store.claim_market_key(old.public_key_b64)
        env.store.add_rotation(sign_rotation(old, new))
    return env.sibling(identity_path=tmp_path / "new.pem"), new


class Switch(httpx.BaseTransport):
    """One address whose server is replaced (a restart with the new key)."""

    def __init__(self, inner: httpx.BaseTransport):
        self.inner, self.requests = inner, []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append((request.method, request.url.path))
        return self.inner.handle_request(request)


@pytest.mark.parametrize("first", ["get", "post"])
def test_a_pinned_client_follows_a_rotation_signed_by_the_old_key(market, tmp_path, first):
    lid = _publish_one(market)
    switch = Switch(market.transport)
    user = market.client(transport=switch)
    X = blob(np.random.default_rng(1), [0, 1, 2], n=50)
    assert user.search(X, SEM, k=10).single[0].learnware_id == lid  # pins the old key
    rotated, new = _rotated_sibling(market, tmp_path)
    switch.inner = rotated.transport
    mark = len(switch.requests)
    if first == "get":
        assert user.download(lid).id == lid
    else:  # a signed request addressed to the old key (the island is cached: no GET first):
        # refused by the new key, the rotation followed, the request sent again
        assert user.search(X, SEM, k=10).single[0].learnware_id == lid
        assert switch.requests[mark:] == [("POST", "/v1/search"), ("GET", "/v1/market/keys"),
                                          ("POST", "/v1/search")]
    assert user._pinned == new.public_key_b64
    assert user.search(X, SEM, k=10).single[0].learnware_id == lid


def test_a_trust_on_first_use_pin_is_updated_in_known_markets(market, tmp_path, config_dir):
    lid = _publish_one(market)
    market.client().download(lid)
    known = json.loads((config_dir / "known_markets.json").read_text())
    assert known[market.url] == market.market_key
    rotated, new = _rotated_sibling(market, tmp_path)
    rotated.client().download(lid)
    known = json.loads((config_dir / "known_markets.json").read_text())
    assert known[market.url] == new.public_key_b64
    fresh = rotated.client()  # a new client reads the new pin: no rotation to follow
    assert fresh._pinned_key() == new.public_key_b64


def test_a_new_key_without_a_rotation_is_still_refused(market, tmp_path):
    lid = _publish_one(market)
    user = market.client()
    user.download(lid)
    rotated, _ = _rotated_sibling(market, tmp_path, announce=False)
    user = rotated.client(market_key=market.market_key)
    with pytest.raises(KeyMismatchError):
        user.download(lid)


def test_the_rotations_endpoint_is_signed_and_bound(market, tmp_path):
    rotated, new = _rotated_sibling(market, tmp_path)
    resp, reply_to = rotated.client()._get_bound("/v1/market/keys")
    kind, body = rotated.reply(resp)
    assert kind == "market_keys" and body["market_key"] == new.public_key_b64
    assert follow_rotations(body["rotations"], market.market_key) == new.public_key_b64


def test_lwm_admin_rotate_key_then_serve_needs_the_new_key(tmp_path, capsys):
    old, new = tmp_path / "old.pem", tmp_path / "new.pem"
    Identity.generate().save(old)
    ident_new = Identity.generate()
    ident_new.save(new)
    cfg = ServerConfig(data_dir=tmp_path / "d")
    check_deployment(cfg, key_file=str(old), environ={})
    base = ["--data-dir", str(tmp_path / "d"), "--market-key-file", str(old)]
    assert admin_main(["rotate-key", *base, "--new-key-file", str(new)]) == 0
    assert ident_new.key_id in capsys.readouterr().out
    with pytest.raises(DeployError, match="retired by a key rotation"):
        check_deployment(cfg, key_file=str(old), environ={})
    assert check_deployment(cfg, key_file=str(new), environ={}).identity.key_id \
        == ident_new.key_id
    # a second rotation must start from the current key
    assert admin_main(["rotate-key", *base, "--new-key-file", str(new)]) == 1
    assert "not the market's current key" in capsys.readouterr().err
