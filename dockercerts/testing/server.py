"""A real mutual-TLS registry on loopback that rejects client certificates like real servers do.

:class:`MTLSServer` listens on ``127.0.0.1`` (and ``::1`` when asked) on a free port, accepts in a
background thread and serves each connection from a bounded thread pool, so sync and async
clients, and concurrent connections, all just work. It speaks enough of the registry API
(``/v2/``, ``/v2/_catalog``, a Bearer challenge) and HTTP/1.1 (keep-alive, chunked bodies) for
transport tests, and records every handshake and request. This module holds that loop, the
records and the lifecycle; the handshake's context and the verdict on a client certificate are
in ``_tls``, what to answer in ``_responder``, the HTTP bytes in ``_http``.

Three ways to reject a client certificate, as real servers refuse one
(``tests/test_peers.py`` pins each against the real binary):

``reject="tls"``
    docker-registry's ``http.tls.clientcas``: the certificate is required and checked during the
    handshake. TLS 1.2 clients fail in the handshake; TLS 1.3 clients see the alert at their
    first read.
``reject="http"``
    nginx's ``ssl_verify_client on``: the handshake completes with no certificate or a bad one,
    then every request gets nginx's ``400 No required SSL certificate was sent`` or
    ``400 The SSL certificate error`` page and the connection is closed.
``reject="status"``
    nginx with an authorisation rule (or ``error_page`` for 495/496): ``accept(info)`` decides
    per request, refused requests get ``status`` (403 by default).

Example::

    from dockercerts.testing import CA, MTLSServer, client_ssl_context
    import httpx

    ca = CA()
    alice = ca.issue_client("alice")
    with MTLSServer(client_ca=ca, reject="http", tls_version="1.3") as srv:
        ctx = client_ssl_context(trust=srv.server_ca, leaf=alice)
        assert httpx.get(srv.url + "/v2/", verify=ctx).status_code == 200
        assert srv.requests[0].client_subject == "CN=alice"

What the standard-library ``ssl`` module cannot do shows in three places (the module
``dockercerts.testing._tls`` says how the handshake works around it):

* In ``"http"`` and ``"status"`` modes the handshake lets through any certificate from the
  trees of ``client_ca`` and ``handshake_cas``, whatever its dates, and each request judges it
  against ``client_ca`` only. A certificate from a CA listed nowhere (e.g. self-signed) still
  fails the handshake with ``unknown_ca``: pass its CA in ``handshake_cas`` (the
  ``mtls_server`` fixture passes every CA ``mtls_ca_factory`` made).
* In those two modes intermediates are found in the known CA trees, so a leaf sent without its
  intermediates is accepted where nginx would answer 400. Use ``reject="tls"`` to test missing
  intermediates.
* Where OpenSSL cannot be reached through :mod:`ctypes` (not CPython, or Windows), the
  CertificateRequest's CA-names list stays empty and ``srv.ca_names_sent`` is ``False``.
"""

from __future__ import annotations

import contextlib
import itertools
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Optional, Union

from dockercerts.testing._http import (
    BadRequest,
    Reader,
    Request,
    nginx_error_page,
    nginx_response,
    read_request,
)
from dockercerts.testing._loopback import listen_on_loopback, readable
from dockercerts.testing._responder import Registry
from dockercerts.testing._tls import ClientCertInfo, RejectMode, judge_client_cert, server_context
from dockercerts.testing.pki import CA, Leaf, TLSVersion, client_ssl_context

__all__ = ["ClientCertInfo", "MTLSServer", "RejectMode", "RequestRecord", "nginx_error_page"]

# How long a worker waits for the next request on a kept-alive connection before handing it
# to the accept thread. Busy clients stay on the fast path (no thread hop per request), idle
# connections stop holding workers soon after.
_LINGER = 0.1


@dataclass(frozen=True)
class RequestRecord:
    """One request the server read in full, and the status it answered.

    ``headers`` has lower-cased names (repeated headers joined with ``", "``);
    ``connection_id`` numbers TCP connections from 1, so two records with the same id travelled
    on one kept-alive connection.
    """

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes = field(repr=False)
    client_subject: Optional[str]
    client_fingerprint: Optional[str]
    tls_version: str
    status: int
    connection_id: int
    client_cert: Optional[ClientCertInfo] = field(repr=False)


def _as_ca_list(value: Union[CA, Sequence[CA], None]) -> list[CA]:
    if value is None:
        return []
    if isinstance(value, CA):
        return [value]
    return list(value)


@dataclass
class _Conn:
    sock: socket.socket
    conn_id: int
    info: Optional[ClientCertInfo] = None
    tls_version: str = ""
    reader: Optional[Reader] = None
    idle_since: float = 0.0


class MTLSServer:
    """A registry-like HTTPS server on loopback with configurable client-certificate checks.

    Parameters (all keyword-only):

    ``server_cert``
        The server's :class:`~dockercerts.testing.Leaf`; by default one for ``localhost``,
        ``127.0.0.1`` and ``::1`` from a fresh CA. Clients trust ``srv.server_ca``.
    ``client_ca``
        The CA (or CAs) whose client certificates are accepted. With neither ``client_ca`` nor
        ``handshake_cas`` the server asks for no certificate at all (plain TLS).
    ``reject``
        ``"tls"``, ``"http"`` or ``"status"``: see the module docstring.
    ``status`` / ``accept`` / ``status_headers``
        For ``reject="status"``: the status refused requests get, a predicate on the
        :class:`ClientCertInfo` (``None`` when no certificate was sent; the default accepts
        exactly the trusted certificates), and extra headers for the refusal, e.g.
        ``[("WWW-Authenticate", 'Bearer realm="..."')]`` with ``status=401``.
    ``handshake_cas``
        Extra CAs the handshake accepts in ``"http"``/``"status"`` modes so their certificates
        reach the HTTP-level check (and get refused there).
    ``tls_version``
        ``"1.2"``, ``"1.3"`` or ``None`` (both allowed; 1.3 negotiated).
    ``send_ca_names``
        ``True``: the CertificateRequest lists the ``client_ca`` subjects (like Go and nginx);
        ``False``: an empty list; a sequence of CAs: exactly those. See ``ca_names_sent``.
    ``repositories``, ``auth_challenge``
        ``GET /v2/_catalog`` content; with ``auth_challenge`` every request without an
        ``Authorization`` header gets a registry ``401`` Bearer challenge (``/token`` answers).
    ``ipv6``
        Also listen on ``[::1]`` on the same port (``srv.url_v6``).
    ``max_workers``, ``handshake_timeout``, ``idle_timeout``
        Worker threads, which serve handshakes and requests in progress (an idle kept-alive
        connection waits in the accept thread's selector and holds no worker); seconds allowed
        for one handshake; seconds an idle connection is kept before the server closes it.

    Records, all thread-safe snapshots: ``requests`` (:class:`RequestRecord`), ``handshakes``,
    ``failed_handshakes``, ``handshake_errors``, ``connections``, ``open_connections`` and
    ``errors``. :meth:`wait_for` waits for one of them to reach a value, :meth:`reset_counters`
    clears them.

    Use it as a context manager or call :meth:`start` and :meth:`stop`. ``stop`` closes the
    listeners and every open connection and joins all threads.
    """

    def __init__(
        self,
        *,
        server_cert: Optional[Leaf] = None,
        client_ca: Union[CA, Sequence[CA], None] = None,
        reject: RejectMode = "tls",
        status: int = 403,
        accept: Optional[Callable[[Optional[ClientCertInfo]], bool]] = None,
        status_headers: Sequence[tuple[str, str]] = (),
        handshake_cas: Sequence[CA] = (),
        tls_version: TLSVersion = None,
        send_ca_names: Union[bool, Sequence[CA]] = True,
        repositories: Sequence[str] = ("team/app",),
        auth_challenge: bool = False,
        ipv6: bool = False,
        max_workers: int = 16,
        handshake_timeout: float = 5.0,
        idle_timeout: float = 10.0,
    ) -> None:
        # Built first: it checks reject, status and accept before any key is generated.
        self._registry = Registry(
            reject=reject,
            status=status,
            accept=accept,
            status_headers=status_headers,
            repositories=repositories,
            auth_challenge=auth_challenge,
        )
        if server_cert is None:
            server_cert = CA(name="dockercerts test server CA").issue_server()
        self.server_cert = server_cert
        self.server_ca: CA = server_cert.issuer.root
        """The root clients must trust to verify this server."""
        self.client_cas: list[CA] = _as_ca_list(client_ca)
        self.reject: RejectMode = reject
        self.status = status
        self.status_headers = self._registry.status_headers
        self.handshake_cas: list[CA] = list(handshake_cas)
        self.tls_version: TLSVersion = tls_version
        self.repositories = self._registry.repositories
        self.auth_challenge = auth_challenge
        self.ipv6 = ipv6
        self.max_workers = max_workers
        self.handshake_timeout = handshake_timeout
        self.idle_timeout = idle_timeout
        if send_ca_names is True:
            self._ca_names: list[CA] = list(self.client_cas)
        elif send_ca_names is False:
            self._ca_names = []
        else:
            self._ca_names = list(send_ca_names)
        self.ca_names_sent = False
        """Whether the CertificateRequest really carries the requested CA names."""
        self.port = 0
        self._ctx: Optional[ssl.SSLContext] = None
        # A Condition (over an RLock) so wait_for() can sleep until a record changes.
        self._lock = threading.Condition()
        self._requests: list[RequestRecord] = []
        self._handshake_errors: list[str] = []
        self._errors: list[str] = []
        self._handshakes = 0
        self._failed_handshakes = 0
        self._connections = 0
        self._live: dict[int, _Conn] = {}
        self._ids = itertools.count(1)
        self._parked: list[_Conn] = []
        self._listeners: list[socket.socket] = []
        self._wake_r: Optional[socket.socket] = None
        self._wake_w: Optional[socket.socket] = None
        self._thread: Optional[threading.Thread] = None
        self._pool: Optional[ThreadPoolExecutor] = None
        self._state = "new"

    def __repr__(self) -> str:
        where = f"{self.url}" if self.port else "not started"
        return f"MTLSServer({where}, reject={self.reject!r}, tls_version={self.tls_version!r})"

    # -- addresses -------------------------------------------------------------------------

    @property
    def host(self) -> str:
        """``"localhost:PORT"``: the certs.d host directory name for :attr:`url`."""
        return f"localhost:{self.port}"

    @property
    def url(self) -> str:
        """``"https://localhost:PORT"``."""
        return f"https://localhost:{self.port}"

    @property
    def url_ip(self) -> str:
        """``"https://127.0.0.1:PORT"``."""
        return f"https://127.0.0.1:{self.port}"

    @property
    def url_v6(self) -> str:
        """``"https://[::1]:PORT"`` (only served with ``ipv6=True``)."""
        return f"https://[::1]:{self.port}"

    # -- records ----------------------------------------------------------------------------

    @property
    def requests(self) -> list[RequestRecord]:
        """A snapshot of every request served so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def handshakes(self) -> int:
        """Completed server-side TLS handshakes."""
        with self._lock:
            return self._handshakes

    @property
    def failed_handshakes(self) -> int:
        """Handshakes that failed (rejected certificate, client gave up, ...)."""
        with self._lock:
            return self._failed_handshakes

    @property
    def connections(self) -> int:
        """TCP connections accepted."""
        with self._lock:
            return self._connections

    @property
    def handshake_errors(self) -> list[str]:
        """Why each failed handshake failed, e.g. ``"SSLError: ... certificate unknown"``."""
        with self._lock:
            return list(self._handshake_errors)

    @property
    def errors(self) -> list[str]:
        """Unexpected exceptions inside the server (bugs, a raising ``accept``); normally empty."""
        with self._lock:
            return list(self._errors)

    @property
    def open_connections(self) -> int:
        """Connections currently being served (handshaking, idle in keep-alive or busy)."""
        with self._lock:
            return len(self._live)

    def wait_for(self, condition: Callable[[], bool], timeout: float = 5.0) -> None:
        """Block until ``condition()`` is true; raise :class:`TimeoutError` after ``timeout``.

        A client can see a rejection a moment before the server thread records it (the alert
        leaves before the counter moves), so assert on failure counters through this::

            srv.wait_for(lambda: srv.failed_handshakes == 1)
        """
        with self._lock:
            if not self._lock.wait_for(condition, timeout):
                raise TimeoutError(f"condition still false after {timeout} s")

    def reset_counters(self) -> None:
        """Forget recorded requests, handshake counts and errors."""
        with self._lock:
            self._requests.clear()
            self._handshake_errors.clear()
            self._errors.clear()
            self._handshakes = self._failed_handshakes = self._connections = 0

    # -- client side helpers ----------------------------------------------------------------

    def client_context(
        self,
        leaf: Optional[Leaf] = None,
        *,
        password: Optional[bytes] = None,
        tls_version: TLSVersion = None,
    ) -> ssl.SSLContext:
        """A client context that trusts this server and presents ``leaf`` (if given).

        Example: ``httpx.Client(verify=srv.client_context(alice)).get(srv.url + "/v2/")``.
        """
        return client_ssl_context(
            trust=self.server_ca, leaf=leaf, password=password, tls_version=tls_version
        )

    # -- lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> MTLSServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> MTLSServer:
        """Bind, start the accept thread and return ``self``. A server starts only once."""
        if self._state != "new":
            raise RuntimeError(f"server already {self._state}")
        self._ctx, self.ca_names_sent = server_context(
            self.server_cert,
            tls_version=self.tls_version,
            reject=self.reject,
            client_cas=self.client_cas,
            handshake_cas=self.handshake_cas,
            ca_names=self._ca_names,
        )
        self._listeners = listen_on_loopback(ipv6=self.ipv6)
        self.port = self._listeners[0].getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._pool = ThreadPoolExecutor(
            max_workers=self.max_workers, thread_name_prefix=f"dockercerts-mtls-{self.port}"
        )
        self._thread = threading.Thread(
            target=self._accept_loop, name=f"dockercerts-mtls-accept-{self.port}", daemon=True
        )
        self._state = "running"
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the listeners and all connections, and join every thread. Idempotent."""
        with self._lock:
            if self._state == "new":
                self._state = "stopped"
            if self._state != "running":
                return
            self._state = "stopping"
        assert self._wake_w is not None
        assert self._thread is not None
        assert self._pool is not None
        with contextlib.suppress(BlockingIOError):
            self._wake_w.send(b"x")
        self._thread.join()
        for sock in (*self._listeners, self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        with self._lock:
            # Held while shutting down so a worker cannot swap its socket object meanwhile.
            for conn in self._live.values():
                with contextlib.suppress(OSError):
                    socket.socket.shutdown(conn.sock, socket.SHUT_RDWR)
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            # Connections whose task was cancelled before it ran are still open.
            leftovers = list(self._live.values())
            self._live.clear()
            self._state = "stopped"
        for conn in leftovers:
            conn.sock.close()

    # -- internals --------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        """Accept connections and watch idle kept-alive ones; workers only serve requests."""
        assert self._wake_r is not None
        assert self._pool is not None
        idle: dict[int, _Conn] = {}
        with selectors.DefaultSelector() as sel:
            for sock in self._listeners:
                sel.register(sock, selectors.EVENT_READ, "listen")
            sel.register(self._wake_r, selectors.EVENT_READ, "wake")
            while True:
                timeout = None
                if idle:
                    oldest = min(conn.idle_since for conn in idle.values())
                    timeout = max(0.0, oldest + self.idle_timeout - time.monotonic())
                for key, _events in sel.select(timeout):
                    if key.data == "wake":
                        with contextlib.suppress(BlockingIOError):
                            self._wake_r.recv(4096)
                        with self._lock:
                            if self._state != "running":
                                return
                            parked, self._parked = self._parked, []
                        for conn in parked:
                            conn.idle_since = time.monotonic()
                            idle[conn.conn_id] = conn
                            sel.register(conn.sock, selectors.EVENT_READ, conn)
                    elif key.data == "listen":
                        self._accept_one(key.fileobj)
                    else:
                        conn = key.data
                        sel.unregister(conn.sock)
                        del idle[conn.conn_id]
                        self._pool.submit(self._resume, conn)
                now = time.monotonic()
                for conn in [c for c in idle.values() if c.idle_since + self.idle_timeout <= now]:
                    sel.unregister(conn.sock)
                    del idle[conn.conn_id]
                    self._close(conn)

    def _accept_one(self, listener: object) -> None:
        assert isinstance(listener, socket.socket)
        assert self._pool is not None
        try:
            raw, _addr = listener.accept()
        except OSError:  # BlockingIOError when another wakeup took it, ECONNABORTED, ...
            return
        raw.setblocking(True)
        # Without it a TLS 1.3 response waits behind the unacknowledged session tickets
        # (Nagle + delayed ACK: ~40 ms on the first request of every connection).
        with contextlib.suppress(OSError):
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        raw.settimeout(self.handshake_timeout)
        with self._lock:
            self._connections += 1
            conn = _Conn(raw, next(self._ids))
            self._live[conn.conn_id] = conn
        self._pool.submit(self._serve, conn)

    def _park(self, conn: _Conn) -> bool:
        """Hand an idle kept-alive connection to the accept thread; False when stopping."""
        assert self._wake_w is not None
        with self._lock:
            if self._state != "running":
                return False
            self._parked.append(conn)
        with contextlib.suppress(BlockingIOError):
            self._wake_w.send(b"p")
        return True

    def _close(self, conn: _Conn) -> None:
        # Close before uncounting: a client told "no open connections" must already see the FIN.
        conn.sock.close()
        with self._lock:
            self._live.pop(conn.conn_id, None)
            self._lock.notify_all()

    def _serve(self, conn: _Conn) -> None:
        """Handshake a new connection, then serve it."""
        keep = False
        try:
            with self._lock:
                if self._state != "running":
                    return
                assert self._ctx is not None
                tls = self._ctx.wrap_socket(
                    conn.sock, server_side=True, do_handshake_on_connect=False
                )
                conn.sock = tls
            try:
                tls.do_handshake()
            except (ssl.SSLError, OSError) as exc:
                with self._lock:
                    self._failed_handshakes += 1
                    self._handshake_errors.append(f"{type(exc).__name__}: {exc}")
                    self._lock.notify_all()
                return
            with self._lock:
                self._handshakes += 1
                self._lock.notify_all()
            tls.settimeout(self.idle_timeout)
            der = tls.getpeercert(binary_form=True)
            conn.info = judge_client_cert(der, self.client_cas, self.handshake_cas) if der else None
            conn.tls_version = tls.version() or ""
            conn.reader = Reader(tls)
            keep = self._http_loop(conn)
        except (ssl.SSLError, OSError):
            pass  # The client went away or stop() shut the socket: nothing to answer.
        except Exception as exc:  # a server bug must surface in srv.errors
            self._record_error(exc)
        finally:
            if not keep:
                self._close(conn)

    def _resume(self, conn: _Conn) -> None:
        """Serve a parked connection that has become readable."""
        keep = False
        try:
            keep = self._http_loop(conn)
        except (ssl.SSLError, OSError):
            pass
        except Exception as exc:  # a server bug must surface in srv.errors
            self._record_error(exc)
        finally:
            if not keep:
                self._close(conn)

    def _record_error(self, exc: BaseException) -> None:
        self._record_error_text(f"{type(exc).__name__}: {exc}")

    def _record_error_text(self, text: str) -> None:
        with self._lock:
            self._errors.append(text)
            self._lock.notify_all()

    def _http_loop(self, conn: _Conn) -> bool:
        """Serve requests; return True when the connection was parked (kept alive, idle)."""
        reader = conn.reader
        assert reader is not None
        tls = conn.sock
        assert isinstance(tls, ssl.SSLSocket)
        info = conn.info
        while True:
            try:
                request = read_request(reader, tls)
            except BadRequest:
                tls.sendall(nginx_response(400, "Bad Request", close=True))
                return False
            if request is None:
                return False
            status, payload, close = self._respond(request, info)
            record = RequestRecord(
                method=request.method,
                path=request.target,
                headers=request.headers,
                body=request.body,
                client_subject=info.subject if info else None,
                client_fingerprint=info.fingerprint if info else None,
                tls_version=conn.tls_version,
                status=status,
                connection_id=conn.conn_id,
                client_cert=info,
            )
            with self._lock:
                self._requests.append(record)
                self._lock.notify_all()
            tls.sendall(payload)
            if close:
                return False
            if reader.idle and not readable(tls, _LINGER):
                # Free the worker: the accept thread resumes the connection when bytes arrive.
                return self._park(conn)

    def _respond(self, request: Request, info: Optional[ClientCertInfo]) -> tuple[int, bytes, bool]:
        """``(status, bytes, close)`` for one request; a subclass may rewrite the answer."""
        answer = self._registry.answer(request, info, self.port)
        if answer.error is not None:
            self._record_error_text(answer.error)
        return answer.status, answer.payload, answer.close
