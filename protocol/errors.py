"""Typed errors shared by every side of the market.

Each error carries a stable machine-readable ``code`` (clients and scripts branch on it), a
message a person understands, an optional ``field`` (dotted path of the offending field) and the
HTTP status the server answers with.
"""
from __future__ import annotations

from typing import Any


class LearnwareError(Exception):
    """Base class: ``code`` is stable, ``message`` is for people."""

    code = "error"
    status = 400

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None,
                 status: int | None = None, details: Any = None):
        super().__init__(message)
        self.message = message
        self.field = field
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.details = details

    def to_dict(self) -> dict:
        out = {"code": self.code, "message": self.message}
        if self.field is not None:
            out["field"] = self.field
        if self.details is not None:
            out["details"] = self.details
        return out

    def __str__(self) -> str:
        where = f" (field {self.field})" if self.field else ""
        return f"[{self.code}] {self.message}{where}"


class ProtocolError(LearnwareError):
    """A message is malformed, too big, too deep, or breaks its schema."""

    code = "bad_message"
    status = 400


class EncodingError(ProtocolError):
    code = "bad_encoding"


class SchemaError(ProtocolError):
    code = "schema_violation"
    status = 422


class SignatureError(ProtocolError):
    code = "bad_signature"
    status = 401


class ReplayError(ProtocolError):
    code = "replayed_nonce"
    status = 409


class StaleMessageError(ProtocolError):
    code = "timestamp_out_of_window"
    status = 401


class AudienceError(ProtocolError):
    """A signed request addressed to another market (replayed from one market to another)."""

    code = "wrong_audience"
    status = 401


class UnknownMessageError(ProtocolError):
    code = "unknown_message_type"
    status = 400


class KeyMismatchError(LearnwareError):
    """The market answered with a key other than the one pinned for it."""

    code = "market_key_mismatch"
    status = 495


class UnsafeModelError(LearnwareError):
    """A model file holds a type outside the allow-list, or is not a safe model file at all."""

    code = "unsafe_model"
    status = 422


class ModelTooCostlyError(UnsafeModelError):
    """A model file needs more than a limit allows (expanded object-graph size, CPU time or
    memory to load or predict): ``details`` names the resource and the limit."""

    code = "model_too_costly"
    status = 422


class DataError(LearnwareError, ValueError):
    """User data that cannot be used as given (non-numeric columns, NaN, wrong shape, too few
    rows). Also a ``ValueError``, so callers (and scikit-learn) that catch that keep working."""

    code = "bad_data"
    status = 422


class ArgumentError(LearnwareError, ValueError):
    """A caller's argument outside what the call accepts (rounds, budget settings, reuse
    parameters): raised locally, never by the market. Also a ``ValueError``; ``lwm`` exits 2."""

    code = "bad_argument"
    status = 400


class IdentityError(LearnwareError):
    code = "bad_identity"
    status = 400


class ConfigFileError(LearnwareError):
    """A local configuration file (the pinned market keys) is unreadable: fail closed."""

    code = "bad_config_file"
    status = 400


class WithdrawnError(LearnwareError):
    """The learnware was withdrawn (by its developer or the market's operator): its record stays
    readable, its model is no longer served or used; the message gives the reason."""

    code = "withdrawn"
    status = 410


class KernelChangedError(LearnwareError):
    """A search requirement fitted under a kernel version the island no longer has: ``kernel``
    (``{gamma, scales, version}``, wire form) is the island's current one, so the client can
    refit under it and search again without fetching the island."""

    code = "kernel_changed"
    status = 409

    def __init__(self, message: str, *, kernel: dict | None = None, **kwargs: Any):
        super().__init__(message, **kwargs)
        self.kernel = kernel


ERROR_CLASSES = {c.code: c for c in (
    LearnwareError, ProtocolError, EncodingError, SchemaError, SignatureError, ReplayError,
    StaleMessageError, UnknownMessageError, AudienceError, KeyMismatchError, UnsafeModelError,
    DataError, ArgumentError, IdentityError, ConfigFileError, WithdrawnError,
    ModelTooCostlyError, KernelChangedError)}


def error_from_dict(d: dict, status: int | None = None) -> LearnwareError:
    """Rebuild a typed error from an error body (client side)."""
    code = str(d.get("code", "error"))
    cls = ERROR_CLASSES.get(code, LearnwareError)
    if cls is KernelChangedError:
        return cls(str(d.get("message", "unknown error")), field=d.get("field"), status=status,
                   kernel=d.get("kernel"))
    return cls(str(d.get("message", "unknown error")), field=d.get("field"), code=code,
               status=status, details=d.get("details"))
