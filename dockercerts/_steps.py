"""What the flow (:mod:`dockercerts.flow`) and the front ends that drive it say to each
other: the steps it yields, what a try produced (:class:`Sent`) and how the exchange ends
(:class:`Decision`). Data only; every decision is the flow's. Import them from
:mod:`dockercerts.flow`."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Generic, Optional, TypeVar, Union

from ._slots import Slot
from .errors import Attempt
from .routing import Target

__all__ = ["Close", "Decision", "Learn", "Read", "Send", "Sent", "Step", "Wait"]

R = TypeVar("R")  # the front end's response object; the flow only holds it

_NO_HEADERS: Mapping[str, str] = MappingProxyType({})
_NOWHERE = Path()


@dataclass(frozen=True)
class Wait:
    turn: threading.Event
    timeout: Optional[float]


@dataclass(frozen=True)
class Send:
    slot: Slot[Any]
    #: Where to send it (containerd routing: see :func:`~dockercerts.routing.rewrite`);
    #: ``None``: the request's own URL, unchanged.
    target: Optional[Target] = None


@dataclass(frozen=True)
class Read(Generic[R]):
    response: R
    limit: int


@dataclass(frozen=True)
class Close(Generic[R]):
    response: R


@dataclass(frozen=True)
class Learn:
    #: Whose CA names (containerd routing: the endpoint being tried, see :class:`Send`);
    #: ``None``: the request's own host.
    target: Optional[Target] = None


Step = Union[Wait, Send, "Read[Any]", "Close[Any]", Learn]


class Sent(Generic[R]):
    """What one try produced: an answer (``response``, its ``status`` and ``headers``) or an
    ``error``. ``fresh``, ``responded``, ``tls_version``: what the ``ssl`` layer saw of a
    connection opened for this try (:mod:`dockercerts._watch`); ``elapsed``: seconds it took.

    ``headers`` is the answer's header mapping (case-insensitive, as httpx's and requests'
    are); the flow reads it only for the statuses it judges, so a steady 200 costs no lookup.

    A driver makes an empty one (``Sent()``), named ``sent``, in its send function (marked
    with ``_watch.sends``) before the try and lets :mod:`dockercerts._watch` fill in the
    connection's facts while it runs, then calls
    :meth:`answered` or :meth:`failed`: one object a try, where a watch and a result would be
    two. :meth:`of` makes a complete one at once.
    """

    # Defaults on the class and no ``__init__``: ``Sent()`` is made for every request and costs
    # an object, not a Python call that stores eight defaults.
    response: Optional[R] = None
    status: int = 0
    headers: Mapping[str, str] = _NO_HEADERS
    error: Optional[Exception] = None
    fresh: bool = False
    responded: bool = False
    tls_version: Optional[str] = None
    elapsed: float = 0.0

    @classmethod
    def of(
        cls,
        response: Optional[R] = None,
        status: int = 0,
        headers: Mapping[str, str] = _NO_HEADERS,
        *,
        error: Optional[Exception] = None,
        fresh: bool = False,
        responded: bool = False,
        tls_version: Optional[str] = None,
        elapsed: float = 0.0,
    ) -> Sent[R]:
        """What a try produced, all given at once (as a test's script does)."""
        made: Sent[R] = cls()
        made.response, made.status, made.headers, made.error = response, status, headers, error
        made.fresh, made.responded, made.tls_version = fresh, responded, tls_version
        made.elapsed = elapsed
        return made

    def answered(self, response: R, status: int, headers: Mapping[str, str], start: float) -> None:
        """The try got an answer; it started at ``start`` (``time.perf_counter()``)."""
        self.elapsed = time.perf_counter() - start
        self.response, self.status, self.headers, self.responded = response, status, headers, True

    def failed(self, error: Exception, start: float) -> None:
        """The try raised ``error``."""
        self.elapsed = time.perf_counter() - start
        self.error = error

    @property
    def challenge(self) -> bool:
        """The answer carries a ``WWW-Authenticate`` challenge."""
        return "www-authenticate" in self.headers

    @property
    def length(self) -> Optional[int]:
        """The answer's Content-Length, if it gives a valid one."""
        value = self.headers.get("content-length", "")
        return int(value) if value.isdigit() else None


@dataclass(frozen=True)
class Decision(Generic[R]):
    """How the exchange ends: give back ``response``, raise ``error``, or, when ``rejected``,
    raise the front end's "every client certificate was rejected" error (``error`` is the
    TLS failure to chain it to). ``note`` says why it stopped early, if it did."""

    response: Optional[R] = None
    error: Optional[Exception] = None
    rejected: bool = False
    attempts: tuple[Attempt, ...] = ()
    note: str = ""
    #: The index in ``attempts`` of the answer or error given back.
    chosen: Optional[int] = None
    #: The host directory the candidates came from.
    directory: Path = _NOWHERE

    # By hand, as :class:`~dockercerts.errors.Attempt`'s: one is made for every request.
    def __init__(
        self,
        response: Optional[R] = None,
        error: Optional[Exception] = None,
        rejected: bool = False,
        attempts: tuple[Attempt, ...] = (),
        note: str = "",
        chosen: Optional[int] = None,
        directory: Path = _NOWHERE,
    ) -> None:
        self.__dict__.update(
            response=response,
            error=error,
            rejected=rejected,
            attempts=attempts,
            note=note,
            chosen=chosen,
            directory=directory,
        )
