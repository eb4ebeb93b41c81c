"""Numeric bounds of the protocol, shared by the SDK (it never sends past them) and the market
(its schemas refuse anything past them before any computation).

Every bound is far beyond real use, and close enough that nothing the market computes from an
accepted request can overflow (a kernel sum over the requirement's points stays a few
milliseconds; a metric squared stays finite; every answer encodes).
"""
from __future__ import annotations

#: reduced points of an RKME (a published spec or a search requirement). The SDK fits 100 by
#: default; a search's self term costs k^2 kernel values (40,000 points took 12 s).
MAX_SPEC_POINTS = 2000
#: input features of an island.
MAX_FEATURES = 10_000
#: rows a user measured anchor metrics on (``metrics_report.n_rows``).
MAX_ROWS = 10**9
#: magnitude of any metric value (rmse, mae, -r2...): a model 1e12 target units off is useless.
MAX_METRIC = 1e12
#: (each objective's range: protocol/objectives.py, from MAX_METRIC)
#: any other real number of a message (kernel gamma, MMD, scores): far beyond real values.
MAX_REAL = 1e12
#: counts, versions and ids (the database's 32-bit INTEGER columns).
MAX_COUNT = 2**31 - 1
#: integer class labels (numpy's int64).
MAX_LABEL_INT = 2**63 - 1
#: Unix times in seconds (exact in a double).
MAX_TIMESTAMP = 2**53
#: bytes of a model file on the wire (its base64 text is at most 200,000,000 characters).
MAX_MODEL_BYTES = 150_000_000
#: characters of a withdrawal reason.
MAX_REASON_CHARS = 1000

#: key rotations a market announces (GET /v1/market/keys) and a client walks (protocol/rotation.py)
MAX_ROTATIONS = 100
#: a differentially private spec's declared budget (issue #19): epsilon beyond 100 protects
#: nothing, delta beyond 0.01 neither (it must stay well below 1 / rows).
MAX_DP_EPSILON = 100.0
MAX_DP_DELTA = 0.01
#: characters of a learnware's model card (markdown in its semantic specification).
MAX_MODEL_CARD_CHARS = 20_000
#: characters of a usage report's comment.
MAX_REPORT_COMMENT_CHARS = 500
