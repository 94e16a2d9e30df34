"""Work that needs no engine, done in a thread of its own while this process starts one.

A variant on replicas (harness/scaleout) only waits while its Ray actors start their engines:
its tasks load meanwhile. An engine in the worker's own process is different: vLLM's engine core
runs there, and its Python holds the GIL for most of its start, so a thread beside it won a few
seconds where loading is long (a card suite) and lost more than one where it is short (the
demo's two tasks); there the work starts once the engine is up (harness/run/worker.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Generic, TypeVar

from harness.events import Event

T = TypeVar("T")


class Background(Generic[T]):
    """`work(progress)` in a daemon thread; `result()` waits for its value or raises what it raised.

    A daemon, so that a process whose engine failed ends at once, not after work nobody will read.
    Its progress is held back until `result()` is called: until then the process waits for its
    engine, which is what the display should say. Then the latest event held is passed on, and
    each later one as it comes; the caller sends none of its own meanwhile, since it is waiting.
    """

    def __init__(self, name: str, work: Callable[[Callable[[Event], None]], T], progress: Callable[[Event], None]):
        self._work = work
        self._progress = progress
        self._future: Future[T] = Future()
        self._lock = threading.Lock()  # between the held event and its release
        self._held: Event | None = None
        self._released = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def result(self) -> T:
        with self._lock:
            self._released = True
            if self._held is not None:
                self._progress(self._held)
        return self._future.result()

    def _run(self) -> None:
        try:
            self._future.set_result(self._work(self._report))
        except BaseException as e:  # raised again, the same exception, by result()
            self._future.set_exception(e)

    def _report(self, event: Event) -> None:
        with self._lock:
            if self._released:
                self._progress(event)
            else:
                self._held = event
