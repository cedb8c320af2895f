"""The stop/with-statement half of a component that owns one background thread."""

from __future__ import annotations

import threading
from typing import Optional


class ThreadOwner:
    """Mixin for components with ``self._stop`` (an Event), ``self._thread`` and ``start()``.

    ``stop()`` signals the thread and joins it, raising if it does not end in time, so a stuck reader
    never goes unnoticed; ``with component:`` starts and stops it.
    """

    _stop: threading.Event
    _thread: Optional[threading.Thread]
    thread_label = "worker"

    def start(self):  # pragma: no cover - implemented by each component
        raise NotImplementedError

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise RuntimeError(f"{self.thread_label} thread did not stop within {timeout} s")
            self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
