"""A readers-writer lock: many searches at once, or one change of the index alone."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

__all__ = ["ReadWriteLock"]


class ReadWriteLock:
    """Shared (:meth:`read`) or exclusive (:meth:`write`) access.

    Readers run together; a writer waits until they have left and runs alone. A waiting writer
    goes first: readers that arrive after it wait, so a stream of searches cannot starve a
    change. The thread holding the write side may take either side again (re-entrant); a
    reader must not ask for the write side, nor for the read side a second time while a
    writer may be waiting (both would wait forever).
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer: int | None = None  # thread id holding the write side
        self._depth = 0  # how many times the writer holds it
        self._writers_waiting = 0

    @contextlib.contextmanager
    def read(self) -> Iterator[None]:
        """Shared access for the ``with`` block."""
        me = threading.get_ident()
        with self._cond:
            inside_write = self._writer == me
            if not inside_write:
                while self._writer is not None or self._writers_waiting:
                    self._cond.wait()
                self._readers += 1
        try:
            yield
        finally:
            if not inside_write:
                with self._cond:
                    self._readers -= 1
                    if not self._readers:
                        self._cond.notify_all()

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        """Exclusive access for the ``with`` block."""
        me = threading.get_ident()
        with self._cond:
            if self._writer != me:
                self._writers_waiting += 1
                try:
                    while self._writer is not None or self._readers:
                        self._cond.wait()
                except BaseException:  # interrupted while waiting: let the readers go on
                    self._writers_waiting -= 1
                    self._cond.notify_all()
                    raise
                self._writers_waiting -= 1
                self._writer = me
            self._depth += 1
        try:
            yield
        finally:
            with self._cond:
                self._depth -= 1
                if not self._depth:
                    self._writer = None
                    self._cond.notify_all()
