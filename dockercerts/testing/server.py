"""A real mutual-TLS registry on loopback that rejects client certificates like real servers do.

:class:`MTLSServer` listens on ``127.0.0.1`` (and ``::1`` when asked) on a free port, accepts in a
background thread and serves each connection from a bounded thread pool, so sync and async
clients, and concurrent connections, all just work. It speaks enough of the registry API
(``/v2/``, ``/v2/_catalog``, a Bearer challenge) and HTTP/1.1 (keep-alive, chunked bodies) for
transport tests, and records every handshake and request.

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

Limitations of the standard-library ``ssl`` module, and what this server does about them:

* There is no verify callback, so a server cannot finish a handshake with a certificate its
  trust store does not know (nginx can: it records the error and answers 400 later). In
  ``"http"`` and ``"status"`` modes the handshake therefore trusts ``client_ca`` **plus**
  ``handshake_cas`` (and every intermediate below them), with time checks switched off
  (``X509_V_FLAG_NO_CHECK_TIME``), and the real decision is made per request against
  ``client_ca`` only, including the validity window. A certificate from a CA listed nowhere
  (e.g. self-signed) still fails the handshake with ``unknown_ca``: pass its CA in
  ``handshake_cas`` (the ``mtls_server`` fixture passes every CA ``mtls_ca_factory`` made).
* The peer's chain is not visible before Python 3.13, so in those two modes intermediates are
  found in the known CA tree: a leaf sent without its intermediates is accepted where nginx
  would answer 400. Use ``reject="tls"`` to test missing intermediates.
* Python never fills the CA-names list of the CertificateRequest. With ``send_ca_names`` the
  server installs it through OpenSSL's ``SSL_CTX_add_client_CA`` via :mod:`ctypes` (CPython
  on Linux/macOS, checked against the context before use); where that is not possible the list
  stays empty and ``srv.ca_names_sent`` is ``False``.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as _dt
import errno
import hashlib
import itertools
import platform
import select
import selectors
import socket
import ssl
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Literal, Optional, Union

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from dockercerts.testing._http import (
    BadRequest,
    Reader,
    Request,
    json_response,
    nginx_error_page,
    nginx_response,
    raw_response,
    read_request,
    reason_phrase,
)
from dockercerts.testing.pki import (
    CA,
    Leaf,
    TLSVersion,
    client_ssl_context,
    load_cert_chain,
    set_tls_version,
)

__all__ = ["ClientCertInfo", "MTLSServer", "RejectMode", "RequestRecord", "nginx_error_page"]

RejectMode = Literal["tls", "http", "status"]

# OpenSSL X509_V_FLAG_* values; Python names only some of them (PARTIAL_CHAIN from 3.10).
_X509_V_FLAG_PARTIAL_CHAIN = 0x80000
_X509_V_FLAG_NO_CHECK_TIME = 0x200000

_NO_CERT_REASON = "No required SSL certificate was sent"
_BAD_CERT_REASON = "The SSL certificate error"
# How long a worker waits for the next request on a kept-alive connection before handing it
# to the accept thread. Busy clients stay on the fast path (no thread hop per request), idle
# connections stop holding workers soon after.
_LINGER = 0.1


@dataclass(frozen=True)
class ClientCertInfo:
    """The client certificate a connection presented, as the server judged it.

    ``trusted`` is true when the certificate chains to one of the server's ``client_ca`` and is
    inside its validity window; otherwise ``problem`` says why (``"expired"``,
    ``"not yet valid"``, ``"not issued by an accepted CA"``).
    """

    subject: str
    issuer: str
    fingerprint: str
    serial_number: int
    not_before: _dt.datetime
    not_after: _dt.datetime
    trusted: bool
    problem: Optional[str]
    der: bytes = field(repr=False)

    @property
    def certificate(self) -> x509.Certificate:
        """The certificate parsed with :mod:`cryptography`."""
        return x509.load_der_x509_certificate(self.der)


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


def _utc(cert: x509.Certificate, attr: str) -> _dt.datetime:
    # cryptography >= 42 has aware ``*_utc`` properties; older releases only naive UTC ones.
    aware: Optional[_dt.datetime] = getattr(cert, attr + "_utc", None)
    if aware is not None:
        return aware
    naive: _dt.datetime = getattr(cert, attr)
    return naive.replace(tzinfo=_dt.timezone.utc)


def _readable(sock: socket.socket, timeout: float) -> bool:
    if hasattr(select, "poll"):  # not limited to descriptors below FD_SETSIZE like select()
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(timeout * 1000))
    ready, _, _ = select.select([sock], [], [], timeout)
    return bool(ready)


def _as_ca_list(value: Union[CA, Sequence[CA], None]) -> list[CA]:
    if value is None:
        return []
    if isinstance(value, CA):
        return [value]
    return list(value)


def _ca_tree(cas: Sequence[CA]) -> list[CA]:
    """Every CA in the trees ``cas`` belong to (their roots and all descendants), deduplicated."""
    seen: dict[str, CA] = {}
    for ca in cas:
        root = ca.root
        for member in (root, *root.descendants()):
            seen.setdefault(member.fingerprint, member)
    return list(seen.values())


def _install_ca_names(ctx: ssl.SSLContext, cas: Sequence[CA]) -> bool:
    """Fill the CertificateRequest's CA-names list of ``ctx``; return whether it worked."""
    if not cas:
        return True
    if platform.python_implementation() != "CPython" or sys.platform == "win32":
        # Elsewhere the OpenSSL that _ssl uses cannot be reached reliably through ctypes.
        return False
    try:
        import _ssl

        lib = ctypes.CDLL(_ssl.__file__)
        get_verify_mode = lib.SSL_CTX_get_verify_mode
        add_client_ca = lib.SSL_CTX_add_client_CA
        d2i_x509 = lib.d2i_X509
        x509_free = lib.X509_free
    except (OSError, AttributeError):
        return False
    get_verify_mode.restype = ctypes.c_int
    get_verify_mode.argtypes = [ctypes.c_void_p]
    add_client_ca.restype = ctypes.c_int
    add_client_ca.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    d2i_x509.restype = ctypes.c_void_p
    d2i_x509.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p), ctypes.c_long]
    x509_free.restype = None
    x509_free.argtypes = [ctypes.c_void_p]
    # CPython's PySSLContext starts with PyObject_HEAD followed by the SSL_CTX pointer.
    ssl_ctx = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
    if not ssl_ctx:
        return False
    # Cross-check the pointer: flip the verify mode and see OpenSSL report both values.
    # OpenSSL spells them SSL_VERIFY_PEER (1) and SSL_VERIFY_PEER|FAIL_IF_NO_PEER_CERT (3).
    original = ctx.verify_mode
    for probe, expected in ((ssl.CERT_OPTIONAL, 1), (ssl.CERT_REQUIRED, 3)):
        ctx.verify_mode = probe
        if get_verify_mode(ssl_ctx) & 3 != expected:
            ctx.verify_mode = original
            return False
    ctx.verify_mode = original
    for ca in cas:
        der = ca.certificate.public_bytes(serialization.Encoding.DER)
        buf = ctypes.create_string_buffer(der, len(der))
        cursor = ctypes.c_void_p(ctypes.addressof(buf))
        cert = d2i_x509(None, ctypes.byref(cursor), len(der))
        if not cert:
            return False
        try:
            if add_client_ca(ssl_ctx, cert) != 1:
                return False
        finally:
            x509_free(cert)
    return True


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
        if reject not in ("tls", "http", "status"):
            raise ValueError(f"reject must be 'tls', 'http' or 'status', not {reject!r}")
        if accept is not None and reject != "status":
            raise ValueError("accept= only applies to reject='status'")
        if not 100 <= status <= 599:
            raise ValueError(f"status must be an HTTP status code, not {status!r}")
        if server_cert is None:
            server_cert = CA(name="dockercerts test server CA").issue_server()
        self.server_cert = server_cert
        self.server_ca: CA = server_cert.issuer.root
        """The root clients must trust to verify this server."""
        self.client_cas: list[CA] = _as_ca_list(client_ca)
        self.reject: RejectMode = reject
        self.status = status
        self._accept = accept
        self.status_headers = list(status_headers)
        self.handshake_cas: list[CA] = list(handshake_cas)
        self.tls_version: TLSVersion = tls_version
        self.repositories = list(repositories)
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
        self._client_fps = {ca.fingerprint for ca in self.client_cas}
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
        self._ctx = self._make_context()
        self._listeners = self._bind()
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

    def _make_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        set_tls_version(ctx, self.tls_version)
        load_cert_chain(ctx, self.server_cert)
        if self.reject == "tls":
            trusted = self.client_cas
        else:
            trusted = _ca_tree([*self.client_cas, *self.handshake_cas])
        if trusted:
            ctx.load_verify_locations(cadata=b"".join(ca.cert_pem for ca in trusted).decode())
            flags = _X509_V_FLAG_PARTIAL_CHAIN
            if self.reject == "tls":
                ctx.verify_mode = ssl.CERT_REQUIRED
            else:
                ctx.verify_mode = ssl.CERT_OPTIONAL
                flags |= _X509_V_FLAG_NO_CHECK_TIME
            # Partial chains make any trusted CA an anchor, as Go's client CA pool does.
            ctx.verify_flags = ssl.VerifyFlags(int(ctx.verify_flags) | flags)
            self.ca_names_sent = _install_ca_names(ctx, self._ca_names)
        else:
            self.ca_names_sent = not self._ca_names
        return ctx

    def _bind(self) -> list[socket.socket]:
        for _attempt in range(20):
            v4 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            v4.bind(("127.0.0.1", 0))
            if not self.ipv6:
                v4.listen(128)
                v4.setblocking(False)
                return [v4]
            port = v4.getsockname()[1]
            try:
                v6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            except OSError:
                v4.close()
                raise
            v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                v6.bind(("::1", port))
            except OSError as exc:
                v4.close()
                v6.close()
                if exc.errno == errno.EADDRINUSE:
                    continue  # the port is free on IPv4 only: try another one
                raise
            for sock in (v4, v6):
                sock.listen(128)
                sock.setblocking(False)
            return [v4, v6]
        raise OSError("could not find a port free on both 127.0.0.1 and ::1")

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
            conn.info = self._judge(der) if der else None
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
        with self._lock:
            self._errors.append(f"{type(exc).__name__}: {exc}")
            self._lock.notify_all()

    def _judge(self, der: bytes) -> ClientCertInfo:
        cert = x509.load_der_x509_certificate(der)
        problem: Optional[str] = None
        issuer = self._find_issuer(cert)
        if issuer is None or not any(ca.fingerprint in self._client_fps for ca in issuer.lineage()):
            problem = "not issued by an accepted CA"
        now = _dt.datetime.now(_dt.timezone.utc)
        not_before, not_after = _utc(cert, "not_valid_before"), _utc(cert, "not_valid_after")
        if problem is None and now < not_before:
            problem = "not yet valid"
        elif problem is None and now > not_after:
            problem = "expired"
        return ClientCertInfo(
            subject=cert.subject.rfc4514_string(),
            issuer=cert.issuer.rfc4514_string(),
            fingerprint=hashlib.sha256(der).hexdigest(),
            serial_number=cert.serial_number,
            not_before=not_before,
            not_after=not_after,
            trusted=problem is None,
            problem=problem,
            der=der,
        )

    def _find_issuer(self, cert: x509.Certificate) -> Optional[CA]:
        for ca in _ca_tree([*self.client_cas, *self.handshake_cas]):
            if ca.certificate.subject != cert.issuer:
                continue
            try:
                cert.verify_directly_issued_by(ca.certificate)
            except Exception:  # noqa: S112 - any failure means "not this CA"
                continue
            return ca
        return None

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
            if reader.idle and not _readable(tls, _LINGER):
                # Free the worker: the accept thread resumes the connection when bytes arrive.
                return self._park(conn)

    def _respond(self, request: Request, info: Optional[ClientCertInfo]) -> tuple[int, bytes, bool]:
        wants_close = request.headers.get("connection", "").lower() == "close" or (
            request.version == "HTTP/1.0"
            and request.headers.get("connection", "").lower() != "keep-alive"
        )
        head = request.method == "HEAD"
        if self.reject == "http" and (info is None or not info.trusted):
            reason = _NO_CERT_REASON if info is None else _BAD_CERT_REASON
            page = nginx_error_page(400, reason, "400 Bad Request")
            return (
                400,
                raw_response(400, "Bad Request", page, nginx=True, close=True, head=head),
                True,
            )
        if self.reject == "status":
            try:
                allowed = self._accept(info) if self._accept else bool(info and info.trusted)
            except Exception as exc:  # reported through srv.errors
                with self._lock:
                    self._errors.append(f"accept() raised {type(exc).__name__}: {exc}")
                    self._lock.notify_all()
                return 500, nginx_response(500, reason_phrase(500), close=True, head=head), True
            if not allowed:
                reason = reason_phrase(self.status)
                return (
                    self.status,
                    nginx_response(
                        self.status,
                        reason,
                        close=wants_close,
                        head=head,
                        extra=self.status_headers,
                    ),
                    wants_close,
                )
        path = request.target.split("?", 1)[0]
        if path == "/token":
            token = {
                "token": "dockercerts-test-token",
                "access_token": "dockercerts-test-token",
                "expires_in": 300,
            }
            return 200, json_response(200, token, close=wants_close, head=head), wants_close
        if self.auth_challenge and "authorization" not in request.headers:
            challenge = (
                f'Bearer realm="https://127.0.0.1:{self.port}/token",service="dockercerts-test"'
            )
            body = {
                "errors": [
                    {"code": "UNAUTHORIZED", "message": "authentication required", "detail": None}
                ]
            }
            return (
                401,
                json_response(
                    401, body, close=wants_close, head=head, extra=[("WWW-Authenticate", challenge)]
                ),
                wants_close,
            )
        content: object
        if path == "/v2/" or path == "/v2":
            content = {}
        elif path == "/v2/_catalog":
            content = {"repositories": self.repositories}
        else:
            content = {
                "method": request.method,
                "path": request.target,
                "body_length": len(request.body),
                "client_subject": info.subject if info else None,
                "client_fingerprint": info.fingerprint if info else None,
            }
        return 200, json_response(200, content, close=wants_close, head=head), wants_close
