"""The signed message protocol spoken by the market and its clients.

Canonical encoding, Ed25519 identities and signatures, replay protection, artefact and publisher
certificates, the schema of every message and its numeric bounds. What both sides compute
identically beyond the wire format (kernels, QP, metrics, model files, the semantic key) is
``learnware_core/``. Imports none of ``client_sdk``, ``market_server``, ``learnware_core``.
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
