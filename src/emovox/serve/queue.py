"""The service's one inference thread, fed by a bounded queue: requests that wait together run as one batch.

Inference never runs on the event loop: requests are decoded in the thread pool and queued (at most ``max_queue``
waiting; beyond that ``Busy``, which the routes answer with 503 and ``Retry-After``) for this thread, which takes up
to ``max_batch`` waiting requests at a time. A ``Job`` (a whole timeline) runs alone between batches.
"""

import asyncio
import queue
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from emovox.inference.recognizer import Recognizer


class Busy(Exception):
    """The queue of waiting requests is full."""


@dataclass
class Job:
    """Work that needs the model to itself (a whole timeline), run on the inference thread between batches."""

    fn: Any
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


class InferenceQueue:
    """One inference thread fed by a bounded queue; requests that wait together run as a batch."""

    def __init__(self, recognizer: "Recognizer", *, max_queue: int, max_batch: int, batch_wait: float):
        self.recognizer = recognizer
        self.max_batch = max_batch
        self.batch_wait = batch_wait
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._thread: threading.Thread | None = None
        self.busy = False
        self.served = 0
        self.batches = 0

    @property
    def waiting(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="emovox-inference", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)  # blocks only while the queue is full, i.e. until the thread takes one
            self._thread.join(timeout=30)
            self._thread = None

    async def submit(self, clip, text: str | None, context: str | None = None):
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        try:
            self._queue.put_nowait((clip, text, context, future, loop))
        except queue.Full:
            raise Busy from None
        return await future

    async def run_exclusive(self, fn):
        """Run ``fn()`` on the inference thread, alone (no other batch meanwhile); its result or exception."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        try:
            self._queue.put_nowait(Job(fn, future, loop))
        except queue.Full:
            raise Busy from None
        return await future

    def _run(self) -> None:
        pending = None  # a job met while a batch was being gathered runs right after that batch
        while True:
            first, pending = (pending if pending is not None else self._queue.get()), None
            if first is None:
                return
            if isinstance(first, Job):
                self._run_job(first)
                continue
            batch = [first]
            deadline = time.monotonic() + self.batch_wait
            stop = False
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                if isinstance(item, Job):
                    pending = item
                    break
                batch.append(item)
            self.busy = True
            try:
                self._predict(batch)
            finally:
                self.busy = False
            if stop:
                return

    def _run_job(self, job: Job) -> None:
        self.busy = True
        try:
            result = job.fn()
        except Exception as exc:  # noqa: BLE001 - handed to the request that caused it
            result = exc
        finally:
            self.busy = False
        self.served += 1
        job.loop.call_soon_threadsafe(settle, job.future, result)

    def _predict(self, batch: list) -> None:
        import warnings

        from emovox.errors import UngroupedWarning

        with warnings.catch_warnings():
            # each request is its own clip: a recognizer that normalises per speaker answers with its unnormalised
            # head, which the service says once at start-up (``create_app``), not once per batch
            warnings.simplefilter("ignore", UngroupedWarning)
            self._predict_batch(batch)

    def _predict_batch(self, batch: list) -> None:
        rec = self.recognizer
        contexts = [b[2] for b in batch]
        context = contexts if any(c is not None for c in contexts) else None  # only context recognizers get one
        try:
            results: list[Any] = rec.predict([b[0] for b in batch], text=[b[1] for b in batch], context=context)
        except Exception:  # one bad request must not fail its batch-mates: redo them one by one
            results = []
            for clip, text, ctx, _, _ in batch:
                try:
                    results.append(rec.predict([clip], text=[text], context=None if ctx is None else [ctx])[0])
                except Exception as exc:  # noqa: BLE001 - handed to the request that caused it
                    results.append(exc)
        self.batches += 1
        self.served += len(batch)
        for (_, _, _, future, loop), result in zip(batch, results, strict=True):
            loop.call_soon_threadsafe(settle, future, result)


def settle(future: asyncio.Future, result: Any) -> None:
    if future.done():  # the client went away
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)
