"""One active sequence per backend, and a bounded FIFO queue in front of it.

A Mamba state belongs to one sequence and the backends generate batch 1, so one generation runs at a time; up to
``max_queue`` requests wait in arrival order (a deque) and one more is refused with 429 and a Retry-After estimated
from the mean generation time. No batching.

Threads: the asyncio loop only schedules. Generation runs in ONE dedicated worker thread, so the backend is always
called from the same thread (CUDA streams and captured graphs are per thread) and the loop keeps answering /health
and /metrics while a sequence decodes. The worker posts events (Started, Piece, Finished, Failed) back to the
request's handler through ``loop.call_soon_threadsafe``.

Cancellation: ``Job.cancel`` (the client went away, or the server is shutting down) removes a queued job from the
queue at once; a running one has its ``cancelled`` event set, which the generation loop checks after every token, so
it stops within one decode step. The slot is released only when the worker thread has returned: two generations
never overlap, and a cancelled client frees the slot for the next request within one decode step. A job still
queued at its deadline (--request-timeout) leaves the queue with a 503.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable


class Rejected(Exception):
    """A job that will not run: status 429 (queue full) or 503 (shutting down, or waited past its deadline), a
    short ``code`` and the seconds a client should wait before retrying (None: do not retry here)."""

    def __init__(self, status: int, code: str, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.retry_after = status, code, message, retry_after


@dataclass
class Started:
    """The job got the slot; its generation starts now."""


@dataclass
class Piece:
    text: str


@dataclass
class Finished:
    outcome: Any


@dataclass
class Failed:
    error: BaseException


class Job:
    """One request's place in line and its generation. ``payload`` is what the work function reads; ``deadline``
    (time.monotonic) bounds queueing and generation together."""

    def __init__(self, loop: asyncio.AbstractEventLoop, payload: Any, timeout_s: float,
                 leave: Callable[[Job], None]):
        self.payload = payload
        self.created = time.monotonic()
        self.deadline = self.created + timeout_s
        self.cancelled = threading.Event()
        self.events: asyncio.Queue = asyncio.Queue()
        self.future: asyncio.Future | None = None  # the worker thread's run, once started
        self._loop, self._leave = loop, leave

    def post(self, event: Started | Piece | Finished | Failed) -> None:
        """Hand an event to the request's handler (from any thread)."""
        try:
            self._loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the loop closed at shutdown: nobody is listening any more
            pass

    def cancel(self) -> None:
        """A queued job leaves the queue now; a running one stops after its current token. Idempotent; call it from
        the loop's thread."""
        self.cancelled.set()
        self._leave(self)


class Scheduler:
    """Runs ``work(job)`` for one job at a time in the worker thread; see the module docstring. Every method runs
    in the event loop's thread (no locks: the loop serializes them)."""

    def __init__(self, work: Callable[[Job], Any], max_queue: int):
        self._work = work
        self.max_queue = max_queue
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edge-quamba-generate")
        self._queue: deque[Job] = deque()
        self._expiry: dict[Job, asyncio.TimerHandle] = {}
        self.active: Job | None = None
        self.closing = False
        self._mean_s: float | None = None  # running mean of generation time (for Retry-After)

    @property
    def waiting(self) -> int:
        return len(self._queue)

    def retry_after(self) -> int:
        """Whole seconds until the queue has likely moved by one more than it holds now (at least 1)."""
        return max(1, math.ceil((self._mean_s or 1.0) * (self.waiting + 1)))

    def submit(self, payload: Any, timeout_s: float) -> Job:
        """Queue a job (it starts as soon as the slot is free) or raise Rejected."""
        if self.closing:
            raise Rejected(503, "shutting_down", "the server is shutting down")
        if self.waiting + (self.active is not None) > self.max_queue:  # one generating, max_queue waiting: full
            raise Rejected(429, "queue_full", f"{self.waiting} requests are already waiting for the model "
                           f"(--max-queue {self.max_queue}); retry later", self.retry_after())
        loop = asyncio.get_running_loop()
        job = Job(loop, payload, timeout_s, self._leave)
        self._queue.append(job)
        self._expiry[job] = loop.call_later(timeout_s, self._expire, job)
        self._dispatch()
        return job

    def _unqueue(self, job: Job) -> bool:
        if job not in self._expiry:
            return False
        self._queue.remove(job)
        self._expiry.pop(job).cancel()
        return True

    def _expire(self, job: Job) -> None:
        if self._unqueue(job):
            waited = time.monotonic() - job.created
            job.post(Failed(Rejected(503, "queue_timeout", f"the request waited {waited:.1f} s for the model "
                                     f"without starting (--request-timeout)", self.retry_after())))

    def _leave(self, job: Job) -> None:
        """Job.cancel: a queued job leaves (the client left, or shutdown); a running one sees ``cancelled``."""
        if self._unqueue(job):
            job.post(Failed(Rejected(503, "shutting_down", "the server is shutting down") if self.closing
                            else Rejected(499, "cancelled", "cancelled")))

    def _dispatch(self) -> None:
        """Start the first queued job if the slot is free."""
        if self.active is not None or not self._queue:
            return
        job = self._queue[0]
        self._unqueue(job)
        self.active = job
        job.post(Started())
        start = time.monotonic()
        job.future = asyncio.get_running_loop().run_in_executor(self._executor, self._work, job)
        job.future.add_done_callback(lambda future: self._finished(job, future, time.monotonic() - start))

    def _finished(self, job: Job, future: asyncio.Future, elapsed: float) -> None:
        """The worker thread returned: answer, free the slot, start the next job."""
        if future.cancelled():
            job.post(Failed(Rejected(503, "shutting_down", "the server is shutting down")))
        elif future.exception() is not None:  # the handler answers it (and logs a bug's traceback)
            job.post(Failed(future.exception()))
        else:
            job.post(Finished(future.result()))
            self._mean_s = elapsed if self._mean_s is None else 0.8 * self._mean_s + 0.2 * elapsed
        self.active = None
        self._dispatch()

    def close(self, grace_s: float) -> None:
        """Start shutting down: refuse new jobs, drop the queued ones (503), and cancel the running one if it has not
        finished within ``grace_s`` seconds (it then ends as if it had reached its token limit)."""
        self.closing = True
        for job in list(self._queue):
            job.cancel()
        if self.active is not None:
            asyncio.get_running_loop().call_later(grace_s, self.active.cancel)

    async def drain(self) -> None:
        """Cancel what still runs and wait for the worker thread to return (at most one model call)."""
        self.closing = True
        for job in list(self._queue):
            job.cancel()
        job = self.active
        if job is not None:
            job.cancel()
            await asyncio.wait([job.future])
        self._executor.shutdown(wait=True)
