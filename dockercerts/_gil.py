"""Long pure-Python loops that may run in a worker thread beside an event loop."""

from __future__ import annotations

import threading
import time

#: How many items are handled between two offers of the GIL (see :func:`let_others_run`).
_BATCH = 64
_MAIN = threading.main_thread()


def let_others_run(done: int) -> None:
    """Every ``_BATCH`` items (``done`` counts them from 0), in a worker thread, give the GIL
    back for a moment.

    Reading and preparing thousands of anchors is pure Python for tens of milliseconds. In a
    worker thread (where :class:`~dockercerts.AsyncTransport` does it) an event loop waiting
    for the GIL would get it only at the interpreter's forced switch, every 5 ms; offered
    here, it gets it after about a millisecond of work. The main thread never offers: an
    offer is a system call that a busy machine makes cost tens of microseconds, and the
    event loop the offer is for runs there.
    """
    if done % _BATCH == _BATCH - 1 and threading.current_thread() is not _MAIN:
        time.sleep(0)
