"""Long pure-Python loops that may run in a worker thread beside an event loop."""

from __future__ import annotations

import time

#: How many items are handled between two offers of the GIL (see :func:`let_others_run`).
_BATCH = 32


def let_others_run(done: int) -> None:
    """Every ``_BATCH`` items (``done`` counts them from 0), give the GIL back for a moment.

    Reading and preparing thousands of anchors is pure Python for tens of milliseconds. In a
    worker thread (where :class:`~dockercerts.AsyncTransport` does it) an event loop waiting
    for the GIL would get it only at the interpreter's forced switch, every 5 ms; offered
    here, it gets it after well under a millisecond of work. An offer costs one system call
    (~1 us), nothing when no other thread waits.
    """
    if done % _BATCH == _BATCH - 1:
        time.sleep(0)
