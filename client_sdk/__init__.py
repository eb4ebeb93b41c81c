"""What data owners and model developers run locally. Raw data never leaves this package.

``Identity`` signs, ``RKMESpec`` describes data without revealing it, ``MarketClient`` publishes,
searches, downloads and localises; ``client_sdk.reuse`` turns learnwares into estimators. The
error types are exported here too (``from client_sdk import DataError, WithdrawnError``): every
error the SDK raises is a :class:`LearnwareError` with a stable ``code``; ``DataError`` and
``ArgumentError`` are also ``ValueError``s.

Names are imported on first use (PEP 562), so ``import client_sdk.cli`` (``lwm --help``) does not
load numpy, scikit-learn or httpx.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_ERRORS = ("LearnwareError", "ProtocolError", "EncodingError", "SchemaError", "SignatureError",
           "ReplayError", "StaleMessageError", "AudienceError", "UnknownMessageError",
           "KeyMismatchError", "UnsafeModelError", "ModelTooCostlyError", "DataError",
           "ArgumentError", "IdentityError", "ConfigFileError", "WithdrawnError",
           "KernelChangedError")

_EXPORTS: dict[str, str] = {
    "Identity": "protocol.identity",
    "MarketClient": "client_sdk.client", "SearchResult": "client_sdk.client",
    "Match": "client_sdk.client", "Mixture": "client_sdk.client",
    "IslandInfo": "client_sdk.records", "Manifest": "client_sdk.records",
    "PreparedSpec": "client_sdk.records", "ReportReceipt": "client_sdk.records",
    "Learnware": "client_sdk.learnware", "RKMESpec": "client_sdk.rkme",
    "MetricBudget": "client_sdk.disclosure",
    **{name: "protocol.errors" for name in _ERRORS},
}

__all__ = list(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from protocol.errors import (ArgumentError, AudienceError, ConfigFileError, DataError,
                                 EncodingError, IdentityError, KernelChangedError,
                                 KeyMismatchError, LearnwareError,
                                 ModelTooCostlyError, ProtocolError, ReplayError, SchemaError,
                                 SignatureError, StaleMessageError, UnknownMessageError,
                                 UnsafeModelError, WithdrawnError)
    from protocol.identity import Identity

    from .client import MarketClient, Match, Mixture, SearchResult
    from .disclosure import MetricBudget
    from .learnware import Learnware
    from .records import IslandInfo, Manifest, PreparedSpec, ReportReceipt
    from .rkme import RKMESpec


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
