"""What every synchronous front end does around the flow, written once.

:mod:`dockercerts.flow` decides; a front end sends, reads, waits and closes in its own
library's way. What is left is the same in each: running the generator to its
:class:`~dockercerts.flow.Decision` (:func:`run`), and turning what a try produced into the
:class:`~dockercerts.flow.Sent` the flow judges (:func:`answered`, :func:`failed`), from the
facts :mod:`dockercerts._watch` gathered at the ``ssl`` layer. Used by
:class:`~dockercerts.Transport` and ``dockercerts.requests.Adapter`` (the async transport
shares the last two: only its loop awaits).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Callable, TypeVar

from ._watch import Watch
from .flow import Decision, Exchange, Send, Sent, Step

__all__ = ["answered", "failed", "run"]

R = TypeVar("R")


def run(
    exchange: Exchange[R], handle: Callable[[Step], Any], discard: Callable[[R], None]
) -> Decision[R]:
    """Drive ``exchange`` to its decision: ``handle(step)`` does a step and returns what the
    flow is sent back. An interrupt (an exception out of ``handle``, ``KeyboardInterrupt``)
    ends the flow; an answer it was keeping as the best so far is given to ``discard``."""
    first = None
    try:
        slot = exchange.direct()
        if slot is not None:  # the steady state: the winner, judged without the generator
            sent: Sent[R] = handle(Send(slot, exchange.target))
            decided = exchange.settle_direct(slot, sent)
            if decided is not None:
                return decided
            first = (slot, sent)
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
    finally:
        for held in exchange.holding():  # interrupted while keeping an answer
            discard(held)


def answered(
    response: R, status: int, headers: Mapping[str, str], watch: Watch, start: float
) -> Sent[R]:
    """A try that got an answer; ``headers`` look names up without regard to case (httpx's
    and requests' both do)."""
    return Sent(
        response,
        status,
        headers,
        fresh=watch.fresh,
        responded=True,
        tls_version=watch.tls_version,
        elapsed=time.perf_counter() - start,
    )


def failed(exc: Exception, watch: Watch, start: float) -> Sent[Any]:
    """A try that raised ``exc``."""
    return Sent(
        error=exc,
        fresh=watch.fresh,
        responded=watch.responded,
        tls_version=watch.tls_version,
        elapsed=time.perf_counter() - start,
    )
