"""Untrusted models run only here: worker processes with a memory limit and a CPU-time budget.

A published model file is foreign input, and loading or predicting with it can cost without
bound even when every type in it is allow-listed (a kernel ``Sum(k, k)`` nested over one shared
``k`` doubles its cost per level; a huge neighbours index, a pathological setting). So the
market never loads a model in its own process: a ``ModelSandbox`` owns a few warm worker
processes (``forkserver``, scikit-learn preloaded, so a new worker costs milliseconds, not a 2 s
import), each with ``RLIMIT_AS`` set, and each task (load, predict) gets a CPU-time budget
(``ITIMER_PROF`` to the tick, ``RLIMIT_CPU`` as the backstop; the caller may give a task less
than the sandbox's maximum) plus a wall-clock deadline in the parent. On overrun the worker is killed and replaced,
and the caller gets :class:`~protocol.errors.ModelTooCostlyError` (422 ``model_too_costly``,
naming the limit); the market keeps serving. Workers keep an LRU of loaded models by sha256, so
``predict`` after the first call costs one round trip.

Workers answer in JSON and ``.npy`` bytes read without pickle: even a worker that a crafted
model somehow took over cannot hand the market a pickle.
"""
from __future__ import annotations

import io
import json
import math
import multiprocessing as mp
import queue
import resource
import signal
import threading
import weakref
from collections import OrderedDict
from typing import Any, Callable

import numpy as np

from protocol.errors import LearnwareError, ModelTooCostlyError, UnsafeModelError

__all__ = ["ModelSandbox", "SandboxedModel"]

#: imported once by the fork server, so every worker starts with them loaded.
_PRELOAD = ["numpy", "scipy.linalg", "sklearn.base", "sklearn.ensemble", "sklearn.linear_model",
            "sklearn.neighbors", "sklearn.neural_network", "sklearn.gaussian_process",
            "sklearn.pipeline", "sklearn.svm", "sklearn.tree", "skops.io", "learnware_core.modelfile",
            "market_server.sandbox", "market_server.sandbox_preload"]
_FIELD = "model"


class _Overrun(Exception):
    """The worker exceeded a limit (``what``) and was killed."""

    def __init__(self, what: str):
        super().__init__(what)
        self.what = what


# --------------------------------------------------------------------------------- worker side
def _encode_array(out: Any) -> bytes:
    arr = np.asarray(out)
    if arr.dtype.hasobject:  # labels as Python objects: a concrete dtype or a refusal
        arr = np.asarray(arr.tolist())
        if arr.dtype.hasobject:
            raise TypeError("the model returns Python objects, not numbers or labels")
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _cpu_budget(cpu_seconds: float) -> None:
    """Let this task use ``cpu_seconds`` more CPU time: SIGPROF (a process CPU-time timer, to the
    tick) and SIGXCPU at the soft limit (whole seconds, the backstop) both kill. Only the soft
    limit moves: a hard limit can be lowered but never raised again, so a hard limit per task
    would make the task after the first whole CPU second fail to set its own."""
    signal.setitimer(signal.ITIMER_PROF, max(float(cpu_seconds), 1e-3))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft = int(math.ceil(usage.ru_utime + usage.ru_stime + cpu_seconds))
    hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _worker_main(conn, memory_bytes: int, max_model_bytes: int, cache_size: int) -> None:
    """Serve (op, sha, data, method, X, cpu_seconds) requests until the pipe closes."""
    from learnware_core.modelfile import allow_lists, load_model

    allow_lists()  # before the limits (a no-op when the fork server preloaded them)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    models: OrderedDict[str, Any] = OrderedDict()
    while True:
        try:
            op, sha, data, method, X, cpu_seconds = conn.recv()
        except (EOFError, OSError):
            return
        payload = b""
        try:
            _cpu_budget(cpu_seconds)
            model = models.get(sha)
            if model is None and data is None:
                head: dict = {"status": "missing"}
            else:
                if model is None:
                    model = load_model(data, max_bytes=max_model_bytes)
                    models[sha] = model
                    while len(models) > cache_size:
                        models.popitem(last=False)
                models.move_to_end(sha)
                head = {"status": "ok", "has_proba": hasattr(model, "predict_proba")}
                if op == "predict":
                    payload = _encode_array(getattr(model, method)(X))
        except LearnwareError as exc:
            head = {"status": "refused", "code": exc.code, "message": exc.message}
        except MemoryError:
            models.clear()
            head = {"status": "memory"}
        except Exception as exc:  # noqa: BLE001 - foreign model code: report, keep serving
            head = {"status": "error", "type": type(exc).__name__, "message": str(exc)[:300]}
        signal.setitimer(signal.ITIMER_PROF, 0)  # the budget is this task's only
        conn.send_bytes(json.dumps(head).encode())
        conn.send_bytes(payload)


# --------------------------------------------------------------------------------- market side
class _Worker:
    def __init__(self, ctx, memory_bytes: int, max_model_bytes: int, cache_size: int):
        parent, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, name="lwm-model-sandbox", daemon=True,
                                args=(child, memory_bytes, max_model_bytes, cache_size))
        self.proc.start()
        child.close()
        self.conn = parent
        self.loaded: OrderedDict[str, None] = OrderedDict()  # what it probably holds

    def call(self, request: tuple, wall_seconds: float) -> tuple[dict, bytes]:
        try:
            self.conn.send(request)
            if not self.conn.poll(wall_seconds):
                raise _Overrun("time")
            head = json.loads(self.conn.recv_bytes(1 << 16))
            payload = self.conn.recv_bytes()
        except (EOFError, OSError, ValueError):
            self.proc.join(1.0)
            code = self.proc.exitcode
            if code in (-signal.SIGXCPU, -signal.SIGPROF, -signal.SIGKILL):
                raise _Overrun("time") from None
            raise _Overrun("crash") from None
        return head, payload

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(1.0)
        self.conn.close()


def _shutdown(workers: list) -> None:
    for w in list(workers):
        w.kill()
    workers.clear()


class ModelSandbox:
    """A pool of sandboxed worker processes, started lazily, shut down at exit or ``close()``."""

    def __init__(self, *, workers: int = 1, memory_bytes: int = 2 << 30,
                 cpu_seconds: float = 20.0, max_model_bytes: int = 32 << 20,
                 cache_size: int = 32):
        self.size, self.memory_bytes, self.cpu_seconds = max(1, workers), memory_bytes, cpu_seconds
        self.max_model_bytes, self.cache_size = max_model_bytes, cache_size
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _shutdown, self._workers)

    def close(self) -> None:
        self._finalizer()

    # --- public --------------------------------------------------------------------------
    def load(self, sha: str, data: bytes | Callable[[], bytes], *,
             cpu_seconds: float | None = None) -> "SandboxedModel":
        """Load the model in a worker (refusals raise ``UnsafeModelError``) and return a proxy.
        ``cpu_seconds``: this load's CPU budget, and the proxy's per predict call (default: the
        sandbox's, which is also the most any call may get)."""
        head, _ = self._run("load", sha, data, None, None, cpu_seconds)
        return SandboxedModel(self, sha, data, bool(head.get("has_proba")), cpu_seconds)

    def call(self, sha: str, data: bytes | Callable[[], bytes], method: str,
             X: np.ndarray, *, cpu_seconds: float | None = None) -> np.ndarray:
        _, payload = self._run("predict", sha, data, method, np.asarray(X, dtype=np.float64),
                               cpu_seconds)
        return np.load(io.BytesIO(payload), allow_pickle=False)

    def warm(self) -> None:
        """Start the fork server and one worker now (``lwm serve`` does, before it listens):
        otherwise the first publish after a start waits seconds for them."""
        self._idle.put(self._acquire())

    # --- the pool ------------------------------------------------------------------------
    def _acquire(self) -> _Worker:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            if len(self._workers) < self.size:
                w = _Worker(_context(), self.memory_bytes, self.max_model_bytes, self.cache_size)
                self._workers.append(w)
                return w
        return self._idle.get()

    def _discard(self, w: _Worker) -> None:
        w.kill()
        with self._lock:
            if w in self._workers:
                self._workers.remove(w)

    def _run(self, op: str, sha: str, data, method: str | None,
             X: np.ndarray | None, cpu_seconds: float | None = None) -> tuple[dict, bytes]:
        cpu = self.cpu_seconds if cpu_seconds is None else min(cpu_seconds, self.cpu_seconds)
        w = self._acquire()
        wall = 2.0 * cpu + 5.0
        try:
            send = None if sha in w.loaded else (data() if callable(data) else data)
            head, payload = w.call((op, sha, send, method, X, cpu), wall)
            if head.get("status") == "missing":
                send = data() if callable(data) else data
                head, payload = w.call((op, sha, send, method, X, cpu), wall)
        except _Overrun as exc:
            self._discard(w)
            if exc.what == "crash":
                raise UnsafeModelError("the model crashed the process that ran it",
                                       field=_FIELD) from None
            raise ModelTooCostlyError(f"the model needed more than the {cpu:g} s "
                                      f"of CPU time it may use for this task", field=_FIELD,
                                      details={"resource": "cpu_seconds",
                                               "limit": cpu}) from None
        except BaseException:
            self._discard(w)
            raise
        status = head.get("status")
        if status == "memory":
            self._discard(w)
            raise ModelTooCostlyError(f"the model needed more than the {self.memory_bytes} bytes "
                                      f"of memory a model may use", field=_FIELD,
                                      details={"resource": "memory_bytes",
                                               "limit": self.memory_bytes})
        self._idle.put(w)
        if status in ("ok", "error"):
            w.loaded[sha] = None
            w.loaded.move_to_end(sha)
            while len(w.loaded) > self.cache_size:
                w.loaded.popitem(last=False)
        if status == "ok":
            return head, payload
        if status == "refused":
            err = UnsafeModelError(str(head.get("message", "model refused"))[:2000], field=_FIELD)
            if head.get("code") == ModelTooCostlyError.code:
                err = ModelTooCostlyError(err.message, field=_FIELD)
            raise err
        if status == "error":
            raise RuntimeError(f"{head.get('type', 'Error')}: {head.get('message', '')}"[:400])
        raise UnsafeModelError("the model's worker answered nonsense", field=_FIELD)


def _context():
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(_PRELOAD)  # no effect once the fork server runs
    return ctx


class SandboxedModel:
    """Stands in for a loaded model: ``predict`` (and ``predict_proba`` when the model has it)
    run in the sandbox. What the market's island computations need of a model."""

    def __init__(self, sandbox: ModelSandbox, sha: str, data, has_proba: bool,
                 cpu_seconds: float | None = None):
        self._sandbox, self.sha256, self._data, self._has_proba = sandbox, sha, data, has_proba
        self.cpu_seconds = cpu_seconds

    def with_source(self, data, cpu_seconds: float | None = None) -> "SandboxedModel":
        """The same model, reloaded (when a worker lost it) from ``data`` instead, with
        ``cpu_seconds`` per call (default: the sandbox's)."""
        return SandboxedModel(self._sandbox, self.sha256, data, self._has_proba, cpu_seconds)

    def predict(self, X) -> np.ndarray:
        return self._sandbox.call(self.sha256, self._data, "predict", X,
                                  cpu_seconds=self.cpu_seconds)

    def __getattr__(self, name: str):
        if name == "predict_proba" and self.__dict__.get("_has_proba"):
            return lambda X: self._sandbox.call(self.sha256, self._data, "predict_proba", X,
                                                cpu_seconds=self.cpu_seconds)
        raise AttributeError(name)
