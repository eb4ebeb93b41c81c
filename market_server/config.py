"""Server configuration: one dataclass, passed to ``create_app`` (no global state)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from protocol.limits import MAX_SPEC_POINTS


@dataclass
class ServerConfig:
    data_dir: Path = Path("./lwm-data")
    #: SQLAlchemy URL; default ``sqlite:///<data_dir>/market.db``. ``postgresql://...`` for scale.
    db_url: str | None = None
    #: "folder" (content-addressed files under data_dir/blobs) or "db" (model files in the
    #: database, so several servers on different machines share them). Default: folder for
    #: SQLite, db for PostgreSQL.
    blob_store: str | None = None
    #: database schema to use (PostgreSQL only; tests use a throw-away schema).
    db_schema: str | None = None
    #: the market's signing identity (PEM); created on first start when missing.
    identity_path: Path | None = None
    max_message_bytes: int = 64 * 1024 * 1024
    max_model_bytes: int = 32 * 1024 * 1024
    timestamp_window_s: float = 300.0
    #: reduced points of a published spec or a search requirement (the protocol's schema
    #: caps both at MAX_SPEC_POINTS; a lower value here refuses more)
    max_spec_points: int = MAX_SPEC_POINTS
    min_spec_points: int = 1
    max_anchors: int = 8
    #: learnwares with the fewest usage reports handed out beside the anchors (anchors.
    #: coverage_anchors), so that what users later report covers the island: reports can only
    #: rank learnwares someone ran (docs/RESULTS.md, "Usage reports"). 0 = off.
    report_coverage_anchors: int = 0
    #: herded samples the publish check predicts on.
    check_samples: int = 64
    #: island kernel is refined from the island's own models when its size reaches these counts.
    refine_at: tuple[int, ...] = (4, 8, 16, 32, 64, 128, 256)
    #: untrusted models load and predict only in sandbox worker processes (market_server/
    #: sandbox.py): this many workers, each limited to this much memory (address space), and
    #: at most this much CPU time per task (one load, or one predict call).
    sandbox_workers: int = 1
    sandbox_memory_bytes: int = 2 * 1024 * 1024 * 1024
    sandbox_cpu_seconds: float = 20.0
    #: the publish check (a model's load and its predictions together, one task) and a model's
    #: load for island work get ``base + per_mb x file size in MB`` seconds, at most
    #: ``sandbox_cpu_seconds``: what the client sent buys the CPU time (honest models need a
    #: part of it: a 2.4 MB 500-stage gradient boosting loads in 1.3 s of its 2.9 s; see
    #: docs/SECURITY.md).
    sandbox_cpu_base_seconds: float = 0.5
    sandbox_cpu_seconds_per_mb: float = 1.0
    #: CPU time per predict call of an accepted model in island work (anchor profile, kernel
    #: refinement); a model over it is left out of that work.
    sandbox_island_cpu_seconds: float = 5.0
    #: the anchor profile covers at most this many learnwares of an island (those with the
    #: smallest sha256 of their id: a publish changes the subset by at most one).
    max_profile_learnwares: int = 64
    #: requests per minute per key (0 = unlimited).
    rate_limit_publish: int = 0
    rate_limit_search: int = 0
    #: usage reports per minute per key (keys are free: the address budget below matters more)
    rate_limit_report: int = 20
    #: requests per client address (limits notation, "" = off), on every endpoint together;
    #: text searches and publishes+deletes have a budget of their own as well.
    rate_limit_address: str = "1200 per minute"
    rate_limit_address_text: str = "120 per minute"
    rate_limit_address_publish: str = "60 per minute"
    rate_limit_address_report: str = "30 per minute"
    #: where the per-address counters live: "memory://" (this process: one worker) or
    #: "redis://host:port" (shared by every worker and server using it).
    rate_limit_storage: str = "memory://"
    #: reverse proxies in front of the market that set X-Forwarded-For (0: use the peer address).
    trusted_proxies: int = 0
    #: who may publish: "open", "allow:FILE" (public keys or key ids, one a line) or
    #: "certified" (a certificate signed by ``operator_key``).
    publishers: str = "open"
    #: the market operator's base64 Ed25519 public key (``lwm serve --operator-key``): a
    #: ``delete`` it signs withdraws any learnware. None: only developers withdraw their own.
    operator_key: str | None = None
    #: the sentence-embedding ranker of requirements in words (market_server/describe.py):
    #: "auto" (used when the ``words`` extra is installed) or "off" (lexical only).
    describe_embeddings: str = "auto"
    #: a query's embedding through the int8 copy of the model (faster; passages stay float32)
    describe_int8_queries: bool = True
    extra: dict = field(default_factory=dict)

    def resolved_db_url(self) -> str:
        if self.db_url:
            url = self.db_url
            if url.startswith("postgresql://"):
                url = "postgresql+psycopg://" + url[len("postgresql://"):]
            return url
        return f"sqlite:///{Path(self.data_dir).resolve() / 'market.db'}"

    def resolved_blob_store(self) -> str:
        if self.blob_store:
            return self.blob_store
        return "db" if self.resolved_db_url().startswith("postgresql") else "folder"
