"""Which attempt opened a TLS connection, and did any response byte arrive on it?

The silent-close rule (see :mod:`dockercerts.rejection`) needs both facts for the attempt
that failed. They are gathered at the ``ssl`` layer, not through httpx's ``trace``
extension: a trace callback runs on every event of every request (~5-10 µs a request),
while this costs nothing on a reused connection. The transport gives each candidate's
context the two classes below; when one of them completes a handshake it looks for the
attempt it belongs to, in the thread (sync) or task (async) that is opening it: that is
where httpcore (or urllib3, under the requests adapter) opens the connection for a request.

A front end's send function is marked with :func:`sends`: while it runs, its local ``sent``
(a :class:`~dockercerts.flow.Sent`) is the attempt, found by walking up the stack from the
handshake. Nothing is registered per request: a handshake is rare and costs milliseconds,
while a context variable set and reset by every try cost a keep-alive request 3-5 µs of
client CPU, about 1% of the sync steady state (in-process A/B against the benchmark
server). :class:`Watch`, a context manager, is the same for code that has no such function;
the nearest marked function comes first, as the innermost attempt does.
"""

from __future__ import annotations

import contextvars
import ssl
import sys
from types import CodeType, FrameType
from typing import Any, Callable, Optional, Protocol, TypeVar, Union

F = TypeVar("F", bound=Callable[..., Any])


class Watched(Protocol):
    """What the ``ssl`` layer tells an attempt (:class:`Watch`, :class:`~dockercerts.flow.Sent`)."""

    fresh: bool  # a TLS connection was opened for it
    responded: bool  # bytes arrived on that connection
    tls_version: Optional[str]  # what that connection negotiated


#: A :class:`Watch` in effect in this thread (sync) or task (async).
ATTEMPT: contextvars.ContextVar[Optional[Watched]] = contextvars.ContextVar(
    "dockercerts_attempt", default=None
)

# The code of the functions marked by sends(): their frames hold the attempt in ``sent``.
_SENDS: set[CodeType] = set()


def sends(function: F) -> F:
    """Mark a send function: a connection opened while it runs (in its thread or task)
    reports to its local (or argument) ``sent``, which must be set before anything is sent.

    Raises :class:`TypeError` for a function without a ``sent`` variable, so that a rename
    fails at import rather than silently watching nothing."""
    code = function.__code__
    if "sent" not in code.co_varnames:
        raise TypeError(f"{function.__qualname__} has no variable 'sent' to report to")
    _SENDS.add(code)
    return function


def _attempt(frame: Optional[FrameType]) -> Optional[Watched]:
    """The attempt a handshake under ``frame`` belongs to: the nearest marked function's
    ``sent``, else the :class:`Watch` in effect, else ``None``."""
    while frame is not None:
        if frame.f_code in _SENDS:
            sent: Optional[Watched] = frame.f_locals.get("sent")
            return sent
        frame = frame.f_back
    return ATTEMPT.get()


class Watch:
    """One attempt: did it open a connection, which TLS version, did bytes arrive?"""

    __slots__ = ("_token", "fresh", "responded", "tls_version")

    def __init__(self) -> None:
        self.fresh = False
        self.responded = False
        self.tls_version: Optional[str] = None

    def __enter__(self) -> Watch:
        self._token = ATTEMPT.set(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        ATTEMPT.reset(self._token)


# How each kind of connection is read: httpcore's sync backend calls ``recv``, http.client
# (urllib3, requests) reads through ``makefile``, which calls ``recv_into``; anyio, trio and
# urllib3's TLS-in-TLS tunnel call the ``SSLObject``'s ``read``.
_READS = {ssl.SSLSocket: ("recv", "recv_into"), ssl.SSLObject: ("read",)}


def opened(conn: Union[ssl.SSLSocket, ssl.SSLObject]) -> None:
    """A handshake completed on ``conn``: tell the current attempt, if any, and spy on the
    first read (instance attributes shadow the class methods until data arrives)."""
    watch = _attempt(sys._getframe(1))
    if watch is None:
        return
    watch.fresh = True
    watch.tls_version = conn.version()
    names = _READS[ssl.SSLSocket if isinstance(conn, ssl.SSLSocket) else ssl.SSLObject]

    def spy(read: Any) -> Any:
        def first_read(*args: Any) -> Any:
            data = read(*args)
            if data:  # bytes, or a count from recv_into / read into a buffer
                watch.responded = True
                for name in names:
                    delattr(conn, name)
            return data

        return first_read

    for name in names:
        setattr(conn, name, spy(getattr(conn, name)))


class _Socket(ssl.SSLSocket):
    """What httpcore's sync backend opens."""

    def do_handshake(self, block: bool = False) -> None:
        super().do_handshake(block)
        opened(self)


class _Object(ssl.SSLObject):
    """What anyio and trio (async), and a TLS-in-TLS proxy tunnel (sync), open."""

    def do_handshake(self) -> None:
        super().do_handshake()  # raises SSLWantReadError until the handshake is done
        opened(self)


def watched(context: ssl.SSLContext) -> ssl.SSLContext:
    """``context``, its connections now reporting to the attempt that opens them.

    Outside an attempt the classes behave as the standard ones (one look up the stack per
    handshake), so a context shared with other code is not disturbed.

    A truststore context wraps a standard one (``_ctx``) whose classes verify the peer
    after the handshake: subclasses of those report once that verification passed.
    """
    inner = getattr(context, "_ctx", None)
    if type(context).__module__.startswith("truststore") and isinstance(inner, ssl.SSLContext):
        inner.sslsocket_class = _after(inner.sslsocket_class, _Socket)
        inner.sslobject_class = _after(inner.sslobject_class, _Object)
        return context
    context.sslsocket_class = _Socket
    context.sslobject_class = _Object
    return context


def _after(base: Any, watcher: Any) -> Any:
    """A subclass of ``base`` whose ``do_handshake`` reports as ``watcher``'s does."""
    if issubclass(base, watcher):
        return base

    def do_handshake(self: Any, *args: Any) -> None:
        base.do_handshake(self, *args)
        opened(self)

    return type(watcher.__name__, (base,), {"do_handshake": do_handshake})
