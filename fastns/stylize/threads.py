"""Background threads for I/O that overlaps with the network: a bounded producer and an ordered writer.

Decoding, loading and saving run beside the network (which releases the GIL), so a folder or a
video is limited by the slowest of the three, not by their sum. Errors in a thread re-raise in
the caller; closing stops the thread at its next item.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

_DONE = object()


class Background:
    """Run ``produce(put)`` in a daemon thread; iterate over what it puts (bounded queue).

    Exceptions in the thread re-raise in the consumer. ``close()`` (also on leaving a ``with``)
    asks the producer to stop at its next ``put`` and waits for it.
    """

    def __init__(self, produce: Callable[[Callable[[Any], None]], None], maxsize: int = 8, name: str = "io"):
        self._queue: queue.Queue = queue.Queue(maxsize)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._produce = produce
        self._thread = threading.Thread(target=self._main, name=f"fastns-{name}", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        raise Stopped

    def _main(self) -> None:
        try:
            self._produce(self._put)
        except Stopped:
            return
        except BaseException as e:  # noqa: BLE001 (handed to the consumer)
            self._error = e
        with contextlib.suppress(Stopped):
            self._put(_DONE)

    def __iter__(self) -> Iterator[Any]:
        while True:
            item = self._queue.get()
            if item is _DONE:
                if self._error is not None:
                    raise self._error
                return
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def __enter__(self) -> Background:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Stopped(Exception):
    """Raised inside a producer thread to unwind it when the consumer has stopped."""


class Writer:
    """A single worker thread that runs submitted jobs in order; ``finish()`` waits and re-raises.

    As a context manager it finishes on a normal exit and abandons the queue when an error unwinds.
    """

    def __init__(self, maxsize: int = 8, name: str = "writer") -> None:
        self._queue: queue.Queue = queue.Queue(maxsize)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name=f"fastns-{name}", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        while True:
            job = self._queue.get()
            if job is _DONE:
                return
            if self._error is None:
                try:
                    job()
                except BaseException as e:  # noqa: BLE001 (re-raised by submit/finish)
                    self._error = e

    def submit(self, job: Callable[[], None]) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(job)

    def finish(self) -> None:
        self._queue.put(_DONE)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def abandon(self) -> None:
        """Stop after the jobs in the queue, without raising (used while unwinding an error)."""
        self._error = self._error or Stopped()  # the worker now skips the queued jobs...
        with contextlib.suppress(queue.Full):
            self._queue.put(_DONE, timeout=10)  # ...so there is room for this soon
        self._thread.join(timeout=10)

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is None:
            self.finish()
        else:
            self.abandon()
