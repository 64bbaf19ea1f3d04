"""Running the flow's generator to its decision, for every synchronous front end.

:mod:`dockercerts.flow` decides; a front end sends, reads, waits and closes in its own
library's way. Running the generator is the same in each: :func:`run`, used by
:class:`~dockercerts.Transport` and ``dockercerts.requests.Adapter`` (the async transport's
loop is the same, awaited).
"""

from __future__ import annotations

from typing import Any, Callable, Optional, TypeVar

from ._slots import Slot
from .flow import Decision, Exchange, Sent, Step

__all__ = ["run"]

R = TypeVar("R")


def run(
    exchange: Exchange[R],
    handle: Callable[[Step], Any],
    discard: Callable[[R], None],
    first: Optional[tuple[Slot[Any], Sent[R]]] = None,
) -> Decision[R]:
    """Drive ``exchange`` to its decision: ``handle(step)`` does a step and returns what the
    flow is sent back; ``first``: the steady lane's try, already made (see
    :func:`~dockercerts.flow.settle`). An interrupt (an exception out of
    ``handle``, ``KeyboardInterrupt``) ends the flow; an answer it was keeping as the best so
    far is given to ``discard``."""
    flow = exchange.flow(first)
    try:
        step = next(flow)
        while True:
            step = flow.send(handle(step))
    except StopIteration as end:
        decision: Decision[R] = end.value
        return decision
    finally:
        flow.close()
        for held in exchange.holding():  # interrupted while keeping an answer
            discard(held)
