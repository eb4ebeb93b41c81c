"""``MarketClient``: publish, search, download and localise against a market, from local data.

Raw data never leaves this module's caller: ``publish`` sends the RKME specification and the
model file, ``search`` sends the user's RKME requirement, ``localize`` sends anchor metrics and a
row count. Every request that changes state or searches is a signed envelope; every answer is
verified against the pinned market key (given, or trusted on first use and remembered in the
user's config directory) and bound to the request by ``reply_to`` (GETs send a fresh nonce in a
header for it); every signed request names the market it is for (``aud``, the pinned key's id),
and every answer that names an id, island or key must name the one asked for.
"""
from __future__ import annotations

import base64
import copy
import functools
import json
import math
import os
import time
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from protocol.artefact import sha256_hex, sign_artefact, verify_artefact
from protocol.encoding import decode_array, encode_array
from protocol.envelope import open_envelope, seal
from protocol.envelope import get_reply_to, new_nonce
from protocol.errors import (ArgumentError, AudienceError, ConfigFileError, KernelChangedError,
                             KeyMismatchError, LearnwareError, ProtocolError, WithdrawnError,
                             error_from_dict)
from protocol.identity import Identity, key_id_of
from protocol.rotation import follow_rotations
from learnware_core.island import base_kernel, robust_scales
from learnware_core.modelfile import dump_model, load_model
from learnware_core.semantic import ISLAND_FIELDS, island_key, validate_semantic

from .data import as_matrix, as_target
from .disclosure import MetricBudget
from .learnware import Learnware
from .records import IslandInfo, Manifest, PreparedSpec, ReportReceipt
from .rkme import RKMESpec, dp_scales

DEFAULT_K = 100
NONCE_HEADER = "X-LWM-Nonce"


@functools.lru_cache(maxsize=1)
def _tls_context():
    """One verifying TLS context per process (httpx's default: the same CA bundle and
    environment). Building one reads the CA bundle, ~0.1 s, and a demo or benchmark opens a
    client per developer."""
    return httpx.create_ssl_context()


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``path`` atomically. The temporary name is unique per writer: several clients
    (threads or processes sharing a config or cache directory) may write the same file at once,
    and a shared temporary name would make one writer's rename fail."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def config_dir() -> Path:
    env = os.environ.get("LWM_CONFIG_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "learnware-market"


@dataclass
class Match:
    learnware_id: str
    score: float
    mmd: float
    fit: str = "unknown"
    estimate: float | None = None
    uncertainty: float | None = None
    name: str | None = None  # the learnware's name, when the market sends it
    # search across islands: the learnware's island, its inputs the user's columns cover
    # ({its feature: user column}) and those the user lacks (to fill: client_sdk/fill.py)
    island_id: str | None = None
    covered: dict[str, str] | None = None
    fill: list[str] | None = None
    baseline_mmd: float | None = None  # the typical MMD on the same marginal (``mmd`` / it)
    reports: dict | None = None  # users' usage reports: {count, metric, median, q1, q3, rows}


@dataclass
class Mixture:
    learnware_ids: list[str]
    weights: list[float]
    score: float
    mmd: float = 0.0
    estimate: float | None = None


@dataclass
class SearchResult:
    island_id: str | None
    single: list[Match]
    mixture: Mixture | None
    message: str | None = None
    objective: str | None = None
    baseline_mmd: float | None = None
    text_matches: list[dict] = field(default_factory=list)
    anchors: list[str] = field(default_factory=list)
    anchor_metrics: dict[str, float] = field(default_factory=dict)
    rounds: int = 0
    sent_metrics: dict[str, float] = field(default_factory=dict)
    anchors_ignored: int = 0
    n_rows_sent: int | None = None
    # search across islands (the specification world): the component searched, its islands,
    # the feature matches the market made and the user columns the mixture was weighed on
    component_id: str | None = None
    islands: list[str] = field(default_factory=list)
    matches: list[dict] = field(default_factory=list)
    mixture_features: list[str] = field(default_factory=list)

    @classmethod
    def from_body(cls, body: dict) -> "SearchResult":
        mix = body.get("mixture")
        return cls(island_id=body.get("island_id"),
                   single=[Match(m["learnware_id"], m["score"], m["mmd"], m.get("fit", "unknown"),
                                 m.get("estimate"), m.get("uncertainty"), m.get("name"),
                                 reports=m.get("reports"))
                           for m in body.get("single", [])],
                   mixture=None if not mix else Mixture(mix["learnware_ids"], mix["weights"],
                                                        mix["score"], mix.get("mmd", 0.0),
                                                        mix.get("estimate")),
                   message=body.get("message"), objective=body.get("objective"),
                   baseline_mmd=body.get("baseline_mmd"),
                   text_matches=list(body.get("text_matches", [])))

    @classmethod
    def from_world_body(cls, body: dict) -> "SearchResult":
        """The answer of a search across the islands of a component (``world_search_result``)."""
        mix = body.get("mixture")
        single = [Match(m["learnware_id"], m["score"], m["mmd"], m["fit"], name=m.get("name"),
                        island_id=m["island_id"], covered=dict(m["covered"]),
                        fill=list(m["fill"]), baseline_mmd=m.get("baseline_mmd"))
                  for m in body["single"]]
        return cls(island_id=single[0].island_id if single else None, single=single,
                   mixture=None if not mix else Mixture(mix["learnware_ids"], mix["weights"],
                                                        mix["score"], mix.get("mmd", 0.0)),
                   message=body.get("message"), objective=body.get("objective"),
                   component_id=body.get("component_id"), islands=list(body["islands"]),
                   matches=list(body["matches"]),
                   mixture_features=list(body.get("mixture_features", [])))


#: characters of a requirement in words (the market refuses longer ones: describe.py)
MAX_DESCRIBE_CHARS = 500


class MarketClient:
    """Talks to one market. ``transport`` swaps the HTTP transport (e.g. an in-process app)."""

    def __init__(self, url: str, identity: Identity | None = None, *,
                 market_key: str | None = None, transport: httpx.BaseTransport | None = None,
                 cache_dir: str | os.PathLike | None = None, timeout: float = 120.0,
                 trust_on_first_use: bool = True,
                 certificate: dict | str | os.PathLike | None = None):
        """``certificate``: the market operator's publisher certificate for this identity
        (a dict or a JSON file from ``lwm certify``), sent with every publish; markets that
        admit only certified publishers need it."""
        self.url = url.rstrip("/")
        if certificate is not None and not isinstance(certificate, dict):
            certificate = json.loads(Path(certificate).read_text())
        self.certificate = certificate
        self.identity = identity or Identity.generate()
        self._http = httpx.Client(base_url=self.url, transport=transport, timeout=timeout,
                                  verify=_tls_context())
        self._pinned = market_key
        self._tofu = trust_on_first_use and market_key is None
        self.cache_dir = Path(cache_dir) if cache_dir else config_dir() / "cache"
        self.model_transfers = 0  # how many model files this client fetched over the network
        self._parsed: dict[str, Any] = {}  # sha256 -> model parsed from verified bytes
        self._islands: dict[str, tuple[float, IslandInfo]] = {}  # key -> (fetched at, info)
        self._world_cache: tuple[float, dict] | None = None  # (fetched at, world body)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "MarketClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- transport and verification --------------------------------------------------------
    def _known_markets_file(self) -> Path:
        return config_dir() / "known_markets.json"

    def _known_markets(self) -> dict[str, str]:
        """The pinned keys by market URL. A file that cannot be read or is not such a mapping
        fails closed: trusting on first use again would silently unpin every market."""
        path = self._known_markets_file()
        if not path.exists():
            return {}
        try:
            known = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            known, why = None, f"{type(exc).__name__}: {exc}"
        else:
            why = "it is not an object mapping market URLs to base64 public keys"
        if (not isinstance(known, dict)
                or not all(isinstance(k, str) and isinstance(v, str) and len(v) == 44
                           for k, v in known.items())):
            raise ConfigFileError(
                f"the pinned market keys in {path} cannot be read ({why}); refusing to trust "
                f"any market key anew. Fix the file, or delete it to trust every market on "
                f"first use again", field=str(path))
        return known

    def _pinned_key(self) -> str | None:
        """The key pinned for this market (given, or from ``known_markets.json``), or None."""
        if self._pinned is None:
            self._pinned = self._known_markets().get(self.url)
        return self._pinned

    def _require_tofu(self) -> None:
        if not self._tofu:
            raise KeyMismatchError("no market key is pinned for this market; pass market_key=")

    def _market_key(self, seen: str) -> str:
        """The pinned key; on first contact (trust on first use) ``seen``, pinned from now on."""
        if self._pinned_key() is not None:
            return self._pinned
        self._require_tofu()
        self._pin(seen, replacing=None)
        return seen

    def _pin(self, key: str, *, replacing: str | None) -> None:
        """Pin ``key``; remembered in ``known_markets.json`` when this market's entry there
        is ``replacing`` (a key given as ``market_key=`` is followed in memory only)."""
        known = self._known_markets()
        if known.get(self.url) == replacing:
            known[self.url] = key
            _atomic_write(self._known_markets_file(),
                          json.dumps(known, indent=1, sort_keys=True).encode("utf-8"))
        self._pinned = key

    def _follow_rotation(self, seen: str) -> bool:
        """Pin ``seen`` when the market's key rotations (``GET /v1/market/keys``, each signed
        by the key it retired: protocol/rotation.py) lead from the pinned key to it."""
        try:
            resp, reply_to = self._get_bound("/v1/market/keys")
            env = open_envelope(resp.content, nonce_store=None, expected_sender=seen)
            if (env.type != "market_keys" or env.reply_to != reply_to
                    or follow_rotations(env.body["rotations"], self._pinned) != seen):
                return False
        except (LearnwareError, httpx.HTTPError):
            return False
        self._pin(seen, replacing=self._pinned)
        return True

    def _audience(self) -> str:
        """The key id of this market, which every signed request names: from the pinned key,
        or on first contact from ``GET /v1/market`` (trusted on first use, like any answer)."""
        if self._pinned_key() is None:
            self._require_tofu()
            resp = self._http.get("/v1/market")
            try:
                seen = resp.json()["market_key"]
                key_id_of(seen)
            except (ValueError, KeyError, TypeError, LearnwareError) as exc:
                raise ProtocolError(f"the market at {self.url} did not name its key "
                                    f"({resp.status_code}): {resp.text[:200]!r}",
                                    code="bad_response") from exc
            self._market_key(seen)
        return key_id_of(self._pinned)

    def _verify(self, resp: httpx.Response, expected: str, reply_to: str) -> dict:
        try:
            raw = json.loads(resp.content)
            sender = raw.get("sender") if isinstance(raw, dict) else None
        except ValueError:
            sender = None
        if not isinstance(sender, str):
            raise ProtocolError(f"the market answered {resp.status_code} with an unsigned or "
                                f"malformed body: {resp.text[:200]!r}", code="bad_response")
        pinned = self._market_key(sender)
        if sender != pinned and self._follow_rotation(sender):
            pinned = sender
        if sender != pinned:
            raise KeyMismatchError(
                f"the market at {self.url} now signs with another key than the one pinned "
                f"({pinned[:12]}..., seen {sender[:12]}...): refusing its answer. If the market "
                f"really changed keys, remove it from {self._known_markets_file()}")
        env = open_envelope(resp.content, nonce_store=None, expected_sender=pinned)
        # An error the market raised before it could verify the request (too large, unsigned,
        # replayed, stale, a malformed nonce header...) cannot name the request's nonce: it is
        # still the market's signed answer. Anything else must be bound to this request.
        unbound_error = env.type == "error" and env.reply_to is None
        if env.reply_to != reply_to and not unbound_error:
            raise ProtocolError("the market's answer is not bound to this request (reply_to)",
                                code="bad_response")
        if env.type == "error":
            raise error_from_dict(env.body, status=resp.status_code)
        if env.type != expected:
            raise ProtocolError(f"expected a {expected} answer, got {env.type}",
                                code="bad_response")
        return env.body

    def _signed(self, method: str, path: str, message_type: str, body: dict,
                expected: str, *, retry: bool = True) -> dict:
        nonce = new_nonce()
        audience = self._audience()
        data = seal(self.identity, message_type, body, nonce=nonce, audience=audience)
        resp = self._http.request(method, path, content=data,
                                  headers={"Content-Type": "application/json"})
        try:
            return self._verify(resp, expected, nonce)
        except AudienceError:
            if not retry or self._audience() == audience:
                raise
        # the refusal came with a key rotation this client followed: address the new key
        return self._signed(method, path, message_type, body, expected, retry=False)

    def _get_bound(self, path: str, params: dict | None = None) -> tuple[httpx.Response, str]:
        """GET with a fresh nonce; returns the answer and the reply_to it must carry."""
        nonce = new_nonce()
        req = self._http.build_request("GET", path, params=params,
                                       headers={NONCE_HEADER: nonce})
        below_root = req.url.path[len(self._http.base_url.path.rstrip("/")):]
        return self._http.send(req), get_reply_to(nonce, below_root, req.url.query)

    def _get(self, path: str, expected: str, params: dict | None = None) -> dict:
        resp, reply_to = self._get_bound(path, params)
        return self._verify(resp, expected, reply_to)

    def signed_get(self, path: str, expected: str, params: dict | None = None) -> dict:
        """The body of a GET answer the market signed and bound to this request (its type
        ``expected``): for modules of the SDK that read new endpoints (private search)."""
        return self._get(path, expected, params)

    @property
    def market_key_id(self) -> str:
        """The key id of this market (pinned, or trusted on first use)."""
        return self._audience()

    @staticmethod
    def _same(what: str, asked: Any, answered: Any) -> None:
        """Refuse a (signed, bound) answer about something other than what was asked."""
        if answered != asked:
            raise ProtocolError(f"the market answered about {what} {str(answered)[:80]!r}, "
                                f"not the {str(asked)[:80]!r} asked for", code="bad_response",
                                field=what)

    # --- islands ----------------------------------------------------------------------------
    def islands(self) -> list[IslandInfo]:
        return [IslandInfo.from_body(i)
                for i in self._get("/v1/islands", "island_list")["islands"]]

    def world(self, *, max_age_s: float = 0.0) -> dict:
        """The specification world: ``components`` (islands of one data type, task, target and
        objective connected by shared features, with the features that connect them and one
        kernel width per feature), ``island_features`` (each island's inputs as canonical
        features) and the feature ``matches`` the market made (by name, alias, description)."""
        hit = self._world_cache
        if hit is not None and time.monotonic() - hit[0] <= max_age_s:
            return hit[1]
        body = self._get("/v1/world", "world")
        self._world_cache = (time.monotonic(), body)
        return body

    def island(self, semantic: dict, *, max_age_s: float = 0.0) -> IslandInfo | None:
        """The island of this semantic specification, or None when none exists yet.

        ``max_age_s`` > 0 accepts an answer fetched that recently (publishing many learnwares
        to one island; a stale kernel is caught by the market and the spec recomputed)."""
        key = island_key(semantic)
        hit = self._islands.get(key)
        if hit is not None and time.monotonic() - hit[0] <= max_age_s:
            return hit[1]
        try:
            info = IslandInfo.from_body(self._get(f"/v1/islands/by-key/{key}", "island_info"))
        except LearnwareError as exc:
            if exc.code == "not_found":
                return None
            raise
        self._same("semantic_key", key, info.semantic_key)
        self._same("semantic_key", key, island_key(info.semantic))
        self._islands[key] = (time.monotonic(), info)
        return info

    @staticmethod
    def _kernel(island: IslandInfo) -> tuple[float, np.ndarray]:
        k = island.kernel
        return float(k["gamma"]), decode_array(k["scales"], field="kernel.scales", ndim=1)

    # --- publish ----------------------------------------------------------------------------
    def publish(self, model: Any, X_train, semantic: dict, *, k: int = DEFAULT_K,
                random_state: int = 0, spec: PreparedSpec | RKMESpec | None = None,
                dp: dict | None = None) -> str:
        """Compute the RKME locally, write the model safely, sign, upload. Returns the id.

        ``spec``: an RKME computed beforehand, best with :meth:`island_spec` (its
        ``PreparedSpec`` says which ``feature_scales`` the semantic must carry; a bare
        ``RKMESpec`` is sent with ``semantic`` as given). It is sent as is; if the market
        refuses it for its kernel (the island was refined since), it is recomputed from
        ``X_train``, which may be None only when no recomputation is possible (the refusal is
        then raised). ``semantic`` is not changed. ``dp``: ``{"epsilon", "delta", "bounds"}``
        for a differentially private spec (:meth:`RKMESpec.fit_dp`)."""
        semantic = dict(semantic)
        validate_semantic(semantic)
        if isinstance(spec, PreparedSpec):
            semantic.pop("feature_scales", None)
            if "feature_scales" in spec.semantic:
                semantic["feature_scales"] = spec.semantic["feature_scales"]
            spec = spec.spec
        X = (None if X_train is None and spec is not None
             else as_matrix(X_train, semantic["input_features"], name="X_train"))
        model_bytes = dump_model(model)
        model_sha = sha256_hex(model_bytes)
        for attempt in range(3):
            if spec is not None and attempt == 0:
                spec_dict = spec.to_dict()
            else:
                if X is None:
                    raise LearnwareError("the market refused the prepared spec for its kernel "
                                         "and no X_train was given to recompute it",
                                         code="kernel_mismatch")
                prepared = self._fit_for_island(X, semantic, k=k, random_state=random_state,
                                                max_age_s=30.0 if attempt == 0 else 0.0, dp=dp)
                semantic, spec_dict = prepared.semantic, prepared.to_dict()
            body = {"semantic": semantic, "spec": spec_dict,
                    "model": {"format": "skops", "sha256": model_sha, "size": len(model_bytes),
                              "data": base64.b64encode(model_bytes).decode("ascii")},
                    "artefact": sign_artefact(self.identity, semantic, spec_dict, model_sha)}
            if self.certificate is not None:
                body["certificate"] = self.certificate
            try:
                res = self._signed("POST", "/v1/learnwares", "publish", body, "publish_result")
                return res["learnware_id"]
            except LearnwareError as exc:
                codes = {d.get("code") for d in (exc.details or []) if isinstance(d, dict)}
                if "kernel_mismatch" in codes and attempt < 2:
                    continue  # the island's kernel changed meanwhile: recompute under the new one
                raise
        raise LearnwareError("publish failed after recomputing the spec twice")  # pragma: no cover

    def island_spec(self, X, semantic: dict, *, k: int = DEFAULT_K, random_state: int = 0,
                    max_age_s: float = 30.0, dp: dict | None = None) -> PreparedSpec:
        """The RKME of X under the kernel a publish to this semantic's island needs now (the
        island's, or for a new island the base kernel of ``semantic["feature_scales"]``, taken
        from X when missing), with the semantic it was fitted for; pass it to
        ``publish(..., spec=)``. ``semantic`` is not changed."""
        X = as_matrix(X, semantic["input_features"], name="X_train")
        return self._fit_for_island(X, semantic, k=k, random_state=random_state,
                                    max_age_s=max_age_s, dp=dp)

    def _fit_for_island(self, X: np.ndarray, semantic: dict, *, k: int, random_state: int,
                        max_age_s: float, dp: dict | None = None) -> PreparedSpec:
        """:meth:`island_spec` for an X already checked (by ``as_matrix``)."""
        semantic = dict(semantic)
        if dp is not None:
            dp_scales(dp, X.shape[1])  # a DataError naming what is wrong in dp, before any call
        island = self.island(semantic, max_age_s=max_age_s)
        if island is None:
            if "feature_scales" not in semantic:  # (DP: from the declared bounds, not X)
                semantic["feature_scales"] = encode_array(
                    robust_scales(X) if dp is None else dp_scales(dp, X.shape[1]))
            declared = decode_array(semantic["feature_scales"], field="feature_scales")
            gamma, scales = base_kernel(declared, X.shape[1])
        else:
            semantic.pop("feature_scales", None)
            gamma, scales = self._kernel(island)
        spec = (RKMESpec.fit_checked(X, k=k, gamma=gamma, scales=scales,
                                     random_state=random_state) if dp is None else
                RKMESpec.fit_dp(X, k=k, gamma=gamma, scales=scales, random_state=random_state,
                                **dp))
        return PreparedSpec(spec, semantic)

    # --- search -----------------------------------------------------------------------------
    def requirement(self, X_user, semantic: dict, *, k: int = DEFAULT_K,
                    random_state: int = 0) -> tuple[RKMESpec, IslandInfo]:
        """The user's RKME requirement under the island's kernel, and the island."""
        island = self._island_to_search(semantic, max_age_s=0.0)
        X = as_matrix(X_user, semantic["input_features"], name="X_user")
        return self._fit_requirement(X, island, k=k, random_state=random_state), island

    def _island_to_search(self, semantic: dict, *, max_age_s: float) -> IslandInfo:
        island = self.island(semantic, max_age_s=max_age_s)
        if island is None:
            raise LearnwareError("no island matches this semantic specification yet",
                                 code="no_island")
        return island

    def _fit_requirement(self, X: np.ndarray, island: IslandInfo, *, k: int,
                         random_state: int, dp: dict | None = None) -> RKMESpec:
        gamma, scales = self._kernel(island)
        if dp is not None:
            dp_scales(dp, X.shape[1])  # checks dp's keys and bounds
            return RKMESpec.fit_dp(X, k=k, gamma=gamma, scales=scales,
                                   random_state=random_state, **dp)
        return RKMESpec.fit_checked(X, k=k, gamma=gamma, scales=scales, random_state=random_state)

    def _island_with_kernel(self, island: IslandInfo, kernel: dict) -> IslandInfo:
        """The cached island with the current kernel a ``kernel_changed`` answer carried (its
        other fields, e.g. the learnware count, keep the age they had)."""
        key = island_key(island.semantic)
        fetched_at = self._islands.get(key, (0.0, island))[0]
        island = replace(island, kernel=dict(kernel))
        self._islands[key] = (fetched_at, island)
        return island

    def search(self, X_user, semantic: dict, max_results: int = 5, *, k: int = DEFAULT_K,
               random_state: int = 0, private: bool = False,
               dp: dict | None = None) -> SearchResult:
        """Find learnwares for a task. Sends only the RKME requirement (or nothing when
        ``X_user`` is None). ``private``: send not even the requirement; the island's index is
        mirrored and the ranking done here (:mod:`client_sdk.private_search`). ``dp``: a
        differentially private requirement (``{"epsilon", "delta", "bounds"}``)."""
        if private and X_user is not None:
            from .private_search import private_search
            X = as_matrix(X_user, semantic["input_features"], name="X_user")
            return private_search(self, X, semantic, int(max_results), k=k,
                                  random_state=random_state)
        query = {f: semantic[f] for f in ISLAND_FIELDS if f in semantic}
        for f in ("name", "tags", "classes"):
            if f in semantic:
                query[f] = semantic[f]
        validate_semantic(query, query=True)
        body: dict[str, Any] = {"semantic": query, "max_results": int(max_results)}
        if X_user is None:
            return SearchResult.from_body(
                self._signed("POST", "/v1/search", "search", body, "search_result"))
        X = as_matrix(X_user, semantic["input_features"], name="X_user")
        plan = self._world_plan(semantic)
        if plan is not None:  # other islands share the user's features: search them all
            return self._world_search(X, semantic, plan, int(max_results), k=k,
                                      random_state=random_state)
        # One round trip: the requirement is fitted under the cached island's kernel and says
        # which version that is; the market answers kernel_changed (with its current kernel)
        # when it is stale, and the requirement is refitted once under that kernel.
        island = self._island_to_search(semantic, max_age_s=math.inf)
        for attempt in range(2):
            spec = self._fit_requirement(X, island, k=k, random_state=random_state, dp=dp)
            body.update(requirement=spec.to_dict(), island_id=island.island_id,
                        kernel_version=int(island.kernel["version"]))
            try:
                res = self._signed("POST", "/v1/search", "search", body, "search_result")
                break
            except KernelChangedError as exc:
                if attempt or exc.kernel is None:
                    raise
                island = self._island_with_kernel(island, exc.kernel)
            except LearnwareError as exc:  # the cached island is gone (a reset market)
                if attempt or exc.code not in ("not_found", "island_mismatch"):
                    raise
                island = self._island_to_search(semantic, max_age_s=0.0)
        self._same("island_id", body["island_id"], res["island_id"])
        return SearchResult.from_body(res)

    #: how long a fetched world is reused by search (a publish elsewhere shows up after this)
    WORLD_MAX_AGE_S = 10.0

    def _world_plan(self, semantic: dict):
        """``(component, {column: canonical feature})`` when the user's columns reach islands
        other than exactly their own (or no exact island exists), else None (the one-island
        search)."""
        from .world_view import plan_for
        return plan_for(self.world(max_age_s=self.WORLD_MAX_AGE_S), semantic)

    def _world_search(self, X: np.ndarray, semantic: dict, plan, max_results: int, *, k: int,
                      random_state: int) -> SearchResult:
        """The requirement fitted on the user's columns that match a feature of the component,
        under the component's kernel on them (only names cross the wire for the others)."""
        from .world_view import requirement_kernel
        comp, cols = plan
        used = [c for c in semantic["input_features"] if c in cols]
        idx = [list(semantic["input_features"]).index(c) for c in used]
        gamma, scales = requirement_kernel(comp, [cols[c] for c in used])
        spec = RKMESpec.fit_checked(X[:, idx], k=k, gamma=gamma, scales=scales,
                                    random_state=random_state)
        query = {f: semantic[f] for f in ISLAND_FIELDS}
        query["input_features"] = used
        for f in ("feature_info", "feature_map"):
            if semantic.get(f):
                query[f] = {c: v for c, v in semantic[f].items() if c in cols}
        validate_semantic(query, query=True)
        body = {"semantic": query, "requirement": spec.to_dict(), "max_results": max_results}
        res = self._signed("POST", "/v1/search/world", "world_search", body,
                           "world_search_result")
        return SearchResult.from_world_body(res)

    def text_search(self, query: str, limit: int = 20) -> list[dict]:
        return self._get("/v1/learnwares", "search_result",
                         params={"q": query, "limit": limit})["text_matches"]

    def describe(self, requirement: str, limit: int = 10, *, ranker: str = "auto") -> dict:
        """Islands and learnwares ranked for a requirement in words, with scores and the
        words each matched (``ranker``: auto, lexical, semantic or hybrid). The text is sent
        to the market as it is: it is what the user chose to tell (docs/SECURITY.md)."""
        if not isinstance(requirement, str) or not requirement.strip():
            raise ValueError("describe needs a non-empty requirement text")
        if len(requirement) > MAX_DESCRIBE_CHARS:
            raise ValueError(f"a requirement is at most {MAX_DESCRIBE_CHARS} characters "
                             f"(this one has {len(requirement)})")
        res = self._get("/v1/describe", "describe_result",
                        params={"q": requirement, "limit": int(limit), "ranker": ranker})
        self._same("query", requirement, res["query"])
        return res

    # --- download ---------------------------------------------------------------------------
    def manifest(self, learnware_id: str, *, include_withdrawn: bool = False) -> Manifest:
        """The learnware's signed record. A withdrawn learnware raises
        :class:`~protocol.errors.WithdrawnError` (with who withdrew it and why) unless
        ``include_withdrawn``: its record is then returned with ``withdrawn`` filled in."""
        man = Manifest.from_body(self._get(f"/v1/learnwares/{learnware_id}",
                                           "download_manifest"))
        self._same("learnware_id", learnware_id, man.learnware_id)
        if man.deleted and not include_withdrawn:
            w = man.withdrawn or {"by": "developer", "reason": "no reason recorded"}
            raise WithdrawnError(f"{man.learnware_id} was withdrawn by its {w['by']}: "
                                 f"{w['reason']}; it is not to be used", field="learnware_id")
        return man

    def download(self, learnware_id: str) -> Learnware:
        """Fetch, verify (developer signature + hash) and load safely; cached by sha256. A
        withdrawn learnware raises :class:`~protocol.errors.WithdrawnError` (a cached copy of
        its model file is not used either)."""
        man = self.manifest(learnware_id)
        sha = man.model_sha256
        verify_artefact(man.developer, man.artefact, semantic=man.semantic, spec=man.spec,
                        model_sha256=sha)
        path = self.cache_dir / "models" / f"{sha}.skops"
        data = None
        if path.exists():
            cached = path.read_bytes()
            if sha256_hex(cached) == sha:
                data = cached
        if data is None:
            resp, reply_to = self._get_bound(f"/v1/models/{sha}")
            if resp.status_code != 200:
                self._verify(resp, "error", reply_to)
            data = resp.content
            self.model_transfers += 1
            if sha256_hex(data) != sha:
                raise ProtocolError("the model file does not match the developer-signed sha256",
                                    code="model_hash_mismatch")
            _atomic_write(path, data)
        # Parsing a skops file costs far more than hashing it: a model already parsed from the
        # same verified bytes is copied instead of parsed again.
        if sha not in self._parsed:
            self._parsed[sha] = load_model(data)
        model = copy.deepcopy(self._parsed[sha])
        return Learnware(man.learnware_id, model, RKMESpec.from_dict(man.spec), man.semantic)

    def delete(self, learnware_id: str, reason: str | None = None) -> bool:
        """Withdraw a learnware (yours, or any as the market's operator), with a reason shown
        to everyone who asks for it afterwards. Its record stays; its model is no longer
        served."""
        body = {"learnware_id": learnware_id}
        if reason is not None:
            body["reason"] = reason
        res = self._signed("DELETE", f"/v1/learnwares/{learnware_id}", "delete", body,
                           "delete_result")
        return bool(res["deleted"])

    # --- usage reports ----------------------------------------------------------------------
    def report(self, learnware_id: str, X, y, *, reuse: str = "direct",
               comment: str | None = None, budget: MetricBudget | None = None
               ) -> ReportReceipt:
        """Send a signed usage report on a learnware you reused: its model is downloaded
        (verified) and run here on your labelled rows ``X, y``; only the island objective's
        value (rounded and jittered as ``budget``, default :class:`MetricBudget`, discloses a
        localisation's anchor values), the row count on the 1-2-5 grid, ``reuse`` (how you used
        it: "direct", "averaging", "ensemble_pruning", "job_selector", "feature_augment",
        "other") and an optional short ``comment`` are sent. The value is the learnware's own
        on your rows whatever the reuse, so that reports are comparable. One report per key
        and learnware: a new one replaces yours."""
        from protocol.limits import MAX_REPORT_COMMENT_CHARS
        from protocol.schemas import REUSE_MODES
        budget = MetricBudget() if budget is None else budget
        if reuse not in REUSE_MODES:
            raise ArgumentError(f"reuse must be one of {list(REUSE_MODES)}, got {reuse!r}",
                                field="reuse")
        if comment is not None and (not isinstance(comment, str)
                                    or len(comment) > MAX_REPORT_COMMENT_CHARS):
            raise ArgumentError(f"comment must be text of at most {MAX_REPORT_COMMENT_CHARS} "
                                "characters", field="comment")
        lw = self.download(learnware_id)
        metric = lw.semantic["objective"]
        budget.check(metric)
        X = as_matrix(X, lw.semantic["input_features"], name="X")
        y = as_target(y, len(X))
        exact, sent = budget.disclose(metric, y, lw.model.predict(X), budget.rng())
        body = {"learnware_id": learnware_id, "metric": metric, "value": sent,
                "n_rows": budget.n_rows(len(y)), "reuse": reuse}
        if comment:
            body["comment"] = comment
        res = self._signed("POST", f"/v1/learnwares/{learnware_id}/reports", "usage_report",
                           body, "usage_report_result")
        self._same("learnware_id", learnware_id, res["learnware_id"])
        return ReportReceipt(learnware_id, metric, float(exact), float(sent), body["n_rows"],
                             reuse, bool(res["replaced"]), res["summary"])

    def reports(self, learnware_id: str) -> dict:
        """A learnware's usage reports as the market shows anyone: ``{learnware_id, summary,
        reports: [{reporter (key id), value, n_rows, reuse, at, comment?}]}``, newest first."""
        body = self._get(f"/v1/learnwares/{learnware_id}/reports", "usage_reports")
        self._same("learnware_id", learnware_id, body["learnware_id"])
        return body

    # --- anchors ----------------------------------------------------------------------------
    def localize(self, X, y, semantic: dict, metric: str | None = None, rounds: int = 1, *,
                 max_anchors: int = 8, more_per_round: int = 4,
                 max_results: int = 5, budget: MetricBudget | None = None) -> SearchResult:
        """Locate useful learnwares from anchor metrics: the anchors run here, on the user's
        labelled rows; only their metric values and the row count are sent, within ``budget``
        (default :class:`MetricBudget`): at most that many anchors per round, rounds and values
        whatever the market names (the rest are ignored and counted in
        ``result.anchors_ignored``), values rounded and jittered, ``n_rows`` bucketed.
        ``result.anchor_metrics`` holds the exact local values, ``result.sent_metrics`` what
        the market got."""
        budget = MetricBudget() if budget is None else budget
        if rounds < 1 or rounds > 10:
            raise ArgumentError("rounds must be between 1 and 10", field="rounds")
        if budget.max_rounds is not None and rounds > budget.max_rounds:
            raise ArgumentError(f"rounds={rounds} exceeds the budget's max_rounds="
                                f"{budget.max_rounds}", field="rounds")
        query = {f: semantic[f] for f in ISLAND_FIELDS}
        validate_semantic(query, query=True)
        metric = metric or semantic["objective"]
        budget.check(metric)
        X = as_matrix(X, semantic["input_features"], name="X")
        y = as_target(y, len(X))
        ask = budget.allowance(0)
        aset = self._signed("POST", "/v1/anchors", "anchor_request",
                            {"semantic": query, "max_anchors": int(max_anchors if ask is None
                                                                   else min(max_anchors, ask))},
                            "anchor_set")
        island_id, pending = aset["island_id"], list(dict.fromkeys(aset["anchors"]))
        asked_key = island_key(query)
        if not pending:
            raise LearnwareError("the island has no anchors", code="empty_island")
        rng = budget.rng()
        n_rows = budget.n_rows(len(y))
        values: dict[str, float] = {}
        sent: dict[str, float] = {}
        named: set[str] = set(pending)
        body: dict = {}
        for r in range(1, rounds + 1):
            allow = budget.allowance(len(sent))
            take = pending if allow is None else pending[:allow]
            for lid in take:
                lw = self.download(lid)
                self._same("semantic_key", asked_key, island_key(lw.semantic))
                values[lid], sent[lid] = budget.disclose(metric, y, lw.model.predict(X), rng)
            report = {"island_id": island_id, "metric": metric, "n_rows": n_rows,
                      "values": sent, "round": r, "max_results": int(max_results)}
            more = budget.allowance(len(sent))
            more = int(more_per_round) if more is None else min(int(more_per_round), more)
            if r < rounds and more > 0:
                report["more_anchors"] = more
            body = self._signed("POST", "/v1/localize", "metrics_report", report,
                                "localization_result")
            self._same("island_id", island_id, body["island_id"])
            pending = [i for i in dict.fromkeys(body.get("next_anchors", [])) if i not in sent]
            named.update(pending)
            if not pending or r == rounds or "more_anchors" not in report:
                break
        res = SearchResult.from_body(body)
        res.anchors, res.anchor_metrics, res.rounds = list(values), dict(values), r
        res.sent_metrics, res.n_rows_sent = dict(sent), n_rows
        res.anchors_ignored = len(named - set(sent))  # named by the market, never evaluated
        return res
