"""The signed message protocol spoken by the market and its clients.

Canonical encoding, Ed25519 identities and signatures, replay protection, artefact signatures,
the schema of every message, and the shared definitions (kernel, metrics, safe model files) that
both sides must compute identically. Imports neither ``client_sdk`` nor ``market_server``.
"""
from .encoding import canonical_bytes, decode, decode_array, encode_array
from .envelope import (PROTOCOL_VERSION, Envelope, MemoryNonceStore, NonceStore, open_envelope,
                       seal)
from .errors import (DataError, EncodingError, KeyMismatchError, LearnwareError, ProtocolError,
                     ReplayError, SchemaError, SignatureError, StaleMessageError,
                     UnknownMessageError, UnsafeModelError)
from .identity import Identity, PublicKey, key_id_of

__all__ = [
    "canonical_bytes", "decode", "decode_array", "encode_array", "PROTOCOL_VERSION", "Envelope",
    "MemoryNonceStore", "NonceStore", "open_envelope", "seal", "DataError", "EncodingError",
    "KeyMismatchError", "LearnwareError", "ProtocolError", "ReplayError", "SchemaError",
    "SignatureError", "StaleMessageError", "UnknownMessageError", "UnsafeModelError", "Identity",
    "PublicKey", "key_id_of",
]
