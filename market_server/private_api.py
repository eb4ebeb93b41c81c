"""Endpoints of private search (issue #19): the island's index and exact specs, as signed GETs.

A client that ranks locally asks only for what every user of the island may read anyway; the
answers are bound to its ``X-LWM-Nonce`` like every other GET. Domain work: :mod:`.digest`."""
from __future__ import annotations

from flask import Blueprint, request

from protocol.errors import LearnwareError

from .digest import island_digest, parse_pks, spec_batch
from .market import kernel_wire
from .responses import market, signed

private = Blueprint("private", __name__, url_prefix="/v1")


def _int_arg(name: str, default: int, hi: int) -> int:
    text = request.args.get(name)
    if text is None:
        return default
    if not (text.isdigit() and len(text) <= 10) or int(text) > hi:
        raise LearnwareError(f"{name} must be an integer from 0 to {hi}", code="bad_query",
                             field=name)
    return int(text)


def _island_and_index(island_id: str):
    m = market().market
    island = m.island_by_public_id(island_id)
    return island, m.index(island)


@private.get("/islands/<island_id>/digest")
def digest(island_id: str):
    since = _int_arg("since", 0, 2**31 - 1)
    limit = _int_arg("limit", 0, 2**31 - 1) or None
    island, idx = _island_and_index(island_id)
    return signed("island_digest", island_digest(
        idx, island.island_id, kernel_wire(island.kernel, island.kernel_version), since, limit))


@private.get("/islands/<island_id>/specs")
def specs(island_id: str):
    pks = parse_pks(request.args.get("pks", "")[:20_000])
    island, idx = _island_and_index(island_id)
    return signed("spec_batch", spec_batch(idx, island.island_id, pks))
