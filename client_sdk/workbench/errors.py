"""What went wrong, in words a person can act on: (what is wrong, what to do)."""
from __future__ import annotations

import httpx

from protocol.errors import (DataError, KeyMismatchError, LearnwareError, SignatureError,
                             UnsafeModelError)

__all__ = ["explain", "WorkbenchError"]


class WorkbenchError(Exception):
    """A refusal of the workbench itself: ``message`` and ``todo`` are shown as they are."""

    def __init__(self, message: str, todo: str = "", status: int = 400):
        super().__init__(message)
        self.message, self.todo, self.status = message, todo, status


def explain(exc: BaseException) -> tuple[str, str]:
    if isinstance(exc, WorkbenchError):
        return exc.message, exc.todo
    if isinstance(exc, httpx.TimeoutException):
        return (f"the market did not answer in time ({type(exc).__name__})",
                "try again; if it keeps happening the market is overloaded or down")
    if isinstance(exc, httpx.HTTPError):
        url = getattr(getattr(exc, "request", None), "url", None)
        where = f" at {url.scheme}://{url.netloc.decode()}" if url is not None else ""
        return (f"cannot reach the market{where} ({type(exc).__name__}: {exc})",
                "check that the market is running (`lwm serve`) and that the address is right; "
                "restart the workbench with `lwm ui --market URL` to use another one")
    if isinstance(exc, KeyMismatchError):
        return (str(exc), "if the market really changed its key, remove it from the pinned keys "
                "file named above, then try again")
    if isinstance(exc, SignatureError):
        return (f"a signature was refused: {exc}",
                "check that the workbench's identity and the market's key are the right ones "
                "(`lwm keygen`, --identity, --market-key) and that this machine's clock is right")
    if isinstance(exc, UnsafeModelError):
        return (f"the model file was refused: {exc}",
                "save the model with skops (`skops.io.dump`) using scikit-learn estimators only")
    if isinstance(exc, DataError):
        return str(exc), "fix the table (or choose other columns) and try again"
    if isinstance(exc, LearnwareError):
        detail = "; ".join(str(d.get("message")) for d in (exc.details or [])
                           if isinstance(d, dict) and d.get("message"))
        what = f"the market refused: {exc}" + (f" ({detail})" if detail else "")
        todo = {"no_island": "no learnware shares these features and target yet: check the "
                             "column names against the market's islands, or publish first",
                "not_found": "it may have been withdrawn or the market reset; search again",
                "rate_limited": "wait a little and try again",
                "withdrawn": "choose another learnware"}.get(exc.code, "read the message above, "
                                                                    "fix what it names, and retry")
        return what, todo
    if isinstance(exc, (ValueError, FileNotFoundError)):
        return str(exc), "fix the input named above and try again"
    return (f"an unexpected error happened ({type(exc).__name__}: {str(exc)[:300]})",
            "try again; if it persists, run the same step with the `lwm` command line to see more")
