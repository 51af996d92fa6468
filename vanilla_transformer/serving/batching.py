"""Micro-batching: concurrent requests gathered into one engine call, off the event loop.

`MicroBatcher` owns one worker thread. A request `submit`s its lines with its decoding options and
gets a `concurrent.futures.Future` (`await batcher.translate(...)` in a coroutine). The worker takes
the oldest waiting request, waits up to `max_wait_ms` after its arrival for more requests with the
same options, and sends them together, within `max_batch_sentences` lines and `max_batch_tokens`
padded source tokens (a request larger than that alone is one call), to the translator's
`translate_hypotheses`; each request gets its own lines' results. The engine splits the call into
its own batches again (`DecodingOptions.batch_size` / `max_tokens`). Hypotheses with scores come from `translate_hypotheses`, texts alone from
`translate` (LibreTranslate's answers need no scores).

An engine exception fails the request that caused it only: a call of several requests that fails
is retried one request at a time, so a client's bad input (say a line longer than the model's
positions) never fails another client's request; the worker keeps serving. `close()` refuses new
requests, finishes every request already submitted, then stops the thread (a server's graceful
shutdown).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future

from ..errors import UserError
from ..translation import DecodingOptions, Hypothesis

__all__ = ["BatchLimits", "BatcherClosed", "MicroBatcher"]

logger = logging.getLogger("vanilla_transformer.serving")


@dataclasses.dataclass(frozen=True)
class BatchLimits:
    """Bounds of one engine call: lines, padded source tokens (lines x the longest), and how long
    the oldest request waits for others to join it."""

    max_batch_sentences: int = 64
    max_batch_tokens: int = 8192
    max_wait_ms: float = 10.0

    def __post_init__(self):
        for name in ("max_batch_sentences", "max_batch_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if not self.max_wait_ms >= 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}.")


class BatcherClosed(RuntimeError):
    """The batcher is shutting down and takes no new requests."""


@dataclasses.dataclass(eq=False)
class _Job:
    lines: list[str]
    options: DecodingOptions
    key: tuple
    arrived: float
    longest: int | None = None  # tokens of its longest line, counted by the worker
    future: Future = dataclasses.field(default_factory=Future)


# on_batch(requests, sentences, seconds, failed): told after every engine call (metrics).
BatchObserver = Callable[[int, int, float, bool], None]


class MicroBatcher:
    """Gathers concurrent `submit`s into engine calls on one worker thread (module docstring)."""

    def __init__(
        self,
        translator,
        limits: BatchLimits | None = None,
        on_batch: BatchObserver | None = None,
    ):
        self.translator = translator
        self.limits = limits or BatchLimits()
        self.on_batch = on_batch
        self.calls = 0  # engine calls made
        self._pending: deque[_Job] = deque()
        self._ready = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="translation-batcher", daemon=True)
        self._thread.start()

    # -- the requests' side --------------------------------------------------------------------

    def submit(self, lines: list[str], options: DecodingOptions, scores: bool = False) -> Future:
        """A future of `lines`' hypotheses (per line, `options.num_return_sequences` of them);
        `scores`: with their scores (the engine's `translate_hypotheses`; else `translate`, texts
        only). Requests are gathered only with others of the same options and `scores`."""
        key = (scores, dataclasses.astuple(options))
        job = _Job(list(lines), options, key, time.monotonic())
        with self._ready:
            if self._closing:
                raise BatcherClosed("the server is shutting down; retry on another replica.")
            self._pending.append(job)
            self._ready.notify()
        return job.future

    async def translate(
        self, lines: list[str], options: DecodingOptions, scores: bool = False
    ) -> list[list[Hypothesis]]:
        return await asyncio.wrap_future(self.submit(lines, options, scores))

    def close(self, timeout: float | None = None) -> None:
        """Take no new requests, finish the submitted ones, stop the worker (waits `timeout`)."""
        with self._ready:
            self._closing = True
            self._ready.notify_all()
        self._thread.join(timeout)

    @property
    def pending(self) -> int:
        with self._ready:
            return len(self._pending)

    # -- the worker ----------------------------------------------------------------------------

    def _run(self) -> None:
        while (jobs := self._next_batch()) is not None:
            self._execute(jobs)

    def _next_batch(self) -> list[_Job] | None:
        """The next call's requests (None once closing with nothing left): the oldest request and
        those with its options that fit, after waiting for more until the call is full or the
        oldest has waited `max_wait_ms`."""
        with self._ready:
            while not self._pending and not self._closing:
                self._ready.wait()
            if not self._pending:
                return None
            deadline = self._pending[0].arrived + self.limits.max_wait_ms / 1000
            while not self._closing:
                jobs, full = self._select()
                remaining = deadline - time.monotonic()
                if full or remaining <= 0:
                    break
                self._ready.wait(remaining)
            jobs, _ = self._select()
            for job in jobs:
                self._pending.remove(job)
        # A request whose client went away (its future cancelled) is dropped here.
        return [job for job in jobs if job.future.set_running_or_notify_cancel()]

    def _select(self) -> tuple[list[_Job], bool]:
        """The oldest request and the later ones with the same options within the limits, and
        whether the limits are reached."""
        first = self._pending[0]
        jobs, sentences, longest = [first], len(first.lines), self._longest(first)
        for job in list(self._pending)[1:]:
            if job.key != first.key:
                continue
            self._longest(job)
            n, top = sentences + len(job.lines), max(longest, job.longest)
            if n > self.limits.max_batch_sentences or n * top > self.limits.max_batch_tokens:
                return jobs, True
            jobs.append(job)
            sentences, longest = n, top
        full = sentences >= self.limits.max_batch_sentences
        return jobs, full or sentences * longest >= self.limits.max_batch_tokens

    def _longest(self, job: _Job) -> int:
        """Tokens of the job's longest line, counted once, on the worker thread (a fast tokenizer
        must not be called from two threads at once)."""
        if job.longest is None:
            try:
                ids = self.translator.tokenizer(job.lines, add_special_tokens=True)["input_ids"]
                job.longest = max((len(i) for i in ids), default=1)
            except Exception:  # the engine call will report it, for this request only
                job.longest = 1
        return job.longest

    def _execute(self, jobs: list[_Job]) -> None:
        if not jobs:
            return
        lines = [line for job in jobs for line in job.lines]
        start = time.perf_counter()
        self.calls += 1
        try:
            results = self._call(lines, jobs[0])
        except Exception as err:  # the failing request's own error; the worker goes on
            if len(jobs) > 1:  # one request's input (a line too long, ...) fails it, not the others
                for job in jobs:
                    self._execute([job])
                return
            if isinstance(err, UserError):
                logger.warning("request refused: %s", err)
            else:
                logger.exception("translation of %d lines failed", len(lines))
            self._observe(jobs, lines, start, failed=True)
            for job in jobs:
                job.future.set_exception(err)
            return
        self._observe(jobs, lines, start, failed=False)
        offset = 0
        for job in jobs:
            job.future.set_result(results[offset : offset + len(job.lines)])
            offset += len(job.lines)

    def _call(self, lines: list[str], job: _Job) -> list[list[Hypothesis]]:
        scores, _ = job.key
        if scores:
            return self.translator.translate_hypotheses(lines, job.options)
        texts = self.translator.translate(lines, job.options)
        return [[Hypothesis(text) for text in outputs] for outputs in texts]

    def _observe(self, jobs, lines, start: float, failed: bool) -> None:
        if self.on_batch is not None:
            try:
                self.on_batch(len(jobs), len(lines), time.perf_counter() - start, failed)
            except Exception:  # metrics never stop the worker
                logger.exception("batch observer failed")
