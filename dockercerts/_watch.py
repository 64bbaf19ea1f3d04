"""Which attempt opened a TLS connection, and did any response byte arrive on it?

The silent-close rule (see :mod:`dockercerts.rejection`) needs both facts for the attempt
that failed. They are gathered at the ``ssl`` layer, not through httpx's ``trace``
extension: a trace callback runs on every event of every request (~5-10 µs a request),
while this costs nothing on a reused connection. The transport gives each candidate's
context the two classes below; an attempt registers its :class:`Watch` in a context
variable, which is the caller's thread (sync) or task (async): where httpcore (or urllib3,
under the requests adapter) opens the connection for that request.

A front end's try registers its :class:`~dockercerts.flow.Sent` directly
(``token = ATTEMPT.set(sent)`` ... ``ATTEMPT.reset(token)``): no object or call more per
request. :class:`Watch` is the same as a context manager, for code that has no ``Sent``.
"""

from __future__ import annotations

import contextvars
import ssl
from typing import Any, Optional, Protocol, Union


class Watched(Protocol):
    """What the ``ssl`` layer tells an attempt (:class:`Watch`, :class:`~dockercerts.flow.Sent`)."""

    fresh: bool  # a TLS connection was opened for it
    responded: bool  # bytes arrived on that connection
    tls_version: Optional[str]  # what that connection negotiated


#: The attempt under way in this thread (sync) or task (async), told what its connection does.
ATTEMPT: contextvars.ContextVar[Optional[Watched]] = contextvars.ContextVar(
    "dockercerts_attempt", default=None
)


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
    watch = ATTEMPT.get()
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

    Outside an attempt the classes behave as the standard ones (one context-variable
    lookup per handshake), so a context shared with other code is not disturbed.

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
