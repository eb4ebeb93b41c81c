"""Long steps (computing a specification, searching, downloading, publishing) run in a thread,
one at a time; the page of a job refreshes itself until it is done, then links onwards.

A job's failure is kept as a plain explanation (:func:`.errors.explain`), never a traceback."""
from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass, field
from typing import Callable

from .errors import explain

log = logging.getLogger("lwm.workbench")

__all__ = ["Job", "JobRunner", "BusyError"]

#: finished steps whose page is kept
MAX_JOBS = 100


class BusyError(RuntimeError):
    """Another step is still running."""


@dataclass
class Job:
    id: str
    title: str
    then: str                      # where to go once done
    stages: list[str] = field(default_factory=list)
    done: bool = False
    error: tuple[str, str] | None = None  # (what is wrong, what to do)

    def stage(self, text: str) -> None:
        """Called by the step as it goes: the progress page lists the stages."""
        self.stages.append(text)


class JobRunner:
    def __init__(self):
        self._lock = threading.Lock()
        self.jobs: dict[str, Job] = {}
        self.current: Job | None = None

    def start(self, title: str, then: str, fn: Callable[[Job], None]) -> Job:
        with self._lock:
            if self.current is not None and not self.current.done:
                raise BusyError(f"'{self.current.title}' is still running; wait for it to finish")
            job = Job(uuid.uuid4().hex[:12], title, then)
            self.jobs[job.id] = job
            while len(self.jobs) > MAX_JOBS:  # the oldest (all done: one runs at a time)
                self.jobs.pop(next(iter(self.jobs)))
            self.current = job
        threading.Thread(target=self._run, args=(job, fn), daemon=True,
                         name=f"workbench-{job.id}").start()
        return job

    @staticmethod
    def _run(job: Job, fn: Callable[[Job], None]) -> None:
        try:
            fn(job)
        except Exception as exc:  # noqa: BLE001 - every failure becomes an explanation
            log.info("workbench step %r failed", job.title, exc_info=True)
            job.error = explain(exc)
        finally:
            job.done = True
