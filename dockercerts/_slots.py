"""One candidate's inner transport, counted by its users: :class:`Slot`."""

from __future__ import annotations

import threading
from typing import Any, Callable, Generic, Optional, TypeVar

from .loader import Candidate

__all__ = ["Slot"]

Inner = TypeVar("Inner")


class Slot(Generic[Inner]):
    """One candidate's inner transport: built on first use, closed once retired and unused.

    ``acquire`` and ``release`` count the requests (and open responses) using it, so a
    transport retired by a reload or an eviction is closed by whoever leaves it last, never
    under a request that is still running.

    The count is a list of tokens, not an integer under the lock: ``list.append`` and
    ``list.pop`` are atomic, so the common path (a live slot) takes no lock. The order makes
    it safe: a user appends its token *before* reading ``_inner``, and ``_take_if_done``
    empties ``_inner`` *before* looking at the tokens (putting it back if it sees one), so a
    user either is seen and keeps the transport, or reads ``None`` and waits for the lock.
    """

    __slots__ = (
        "_inner",
        "_lock",
        "_make",
        "_retired",
        "_users",
        "candidate",
        "kept",
        "key",
        "name",
    )

    def __init__(
        self, candidate: Candidate, key: tuple[object, ...], make: Callable[[Candidate], Inner]
    ) -> None:
        self.candidate = candidate
        #: The candidate's name, read on every request (``Candidate.name`` is a property).
        self.name = candidate.name
        self.key = key
        self._make: Callable[[Candidate], Inner] = make
        self._inner: Optional[Inner] = None
        self._lock = threading.Lock()
        self._users: list[None] = []
        self._retired = False
        #: The flow's records of this candidate's answers on kept-alive connections, shared
        #: by every such request (see :func:`dockercerts.flow.settle`), by status and endpoint.
        self.kept: dict[tuple[int, Optional[str]], tuple[Any, ...]] = {}

    @property
    def built(self) -> bool:
        """Whether the inner transport exists (an async front end builds it off the loop)."""
        return self._inner is not None

    def build(self) -> None:
        """Build the inner transport now (its ``ssl`` context with it), without using it."""
        with self._lock:
            if self._inner is None and not self._retired:
                self._inner = self._make(self.candidate)

    def acquire(self) -> Inner:
        self._users.append(None)
        inner = self._inner
        if inner is not None:
            return inner
        with self._lock:
            if self._inner is None:
                try:
                    self._inner = self._make(self.candidate)
                except BaseException:
                    self._users.pop()
                    raise
            return self._inner

    def release(self) -> Optional[Inner]:
        """Drop one user; returns the transport for the caller to close when it was the last."""
        self._users.pop()
        if not self._retired:
            return None
        with self._lock:
            return self._take_if_done()

    def retire(self) -> Optional[Inner]:
        """No new request will pick this slot; returns the transport if nobody uses it."""
        with self._lock:
            self._retired = True
            return self._take_if_done()

    def _take_if_done(self) -> Optional[Inner]:
        inner, self._inner = self._inner, None
        if self._users:  # someone is (or is about to be) using it: put it back
            self._inner = inner
            return None
        return inner
