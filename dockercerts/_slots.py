"""One candidate's inner transport, counted by its users: :class:`Slot`."""

from __future__ import annotations

import threading
from typing import Any, Callable, Generic, Optional, TypeVar, Union, overload

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
        "key",
        "name",
        "shared_records",
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
        #: by every such request (see :func:`dockercerts.flow.settle`): by status, or by
        #: ``(status, endpoint)`` when routed.
        self.shared_records: dict[Union[int, tuple[int, str]], tuple[Any, ...]] = {}

    def build(self) -> None:
        """Build the inner transport now (its ``ssl`` context with it), without using it."""
        with self._lock:
            if self._inner is None and not self._retired:
                self._inner = self._make(self.candidate)

    @overload
    def acquire(self) -> Inner: ...
    @overload
    def acquire(self, make: bool) -> Optional[Inner]: ...

    def acquire(self, make: bool = True) -> Optional[Inner]:
        """Count a user and give it the inner transport, built now if need be. ``make=False``:
        ``None`` (and no user counted) when it is not built yet, for an async front end to
        build it off the event loop (:meth:`build`) and ask again."""
        self._users.append(None)
        inner = self._inner
        if inner is not None:
            return inner
        if not make:
            self._users.pop()
            return None
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
