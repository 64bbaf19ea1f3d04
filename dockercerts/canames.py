"""Read the CA names a server asks client certificates from (needs ``dockercerts[probe]``).

A server that wants a client certificate sends a CertificateRequest listing the names of the
CAs it accepts (TLS 1.2: its ``certificate_authorities`` field; TLS 1.3: the extension of
that name, inside the encrypted handshake). Go picks the certificate it sends from that list
(:mod:`dockercerts.gochoice`), so the list explains why Docker fails where another client
succeeds. Python's ``ssl`` module does not expose it; pyOpenSSL's
``Connection.get_client_ca_list()`` does, for both versions. pyOpenSSL is an optional
dependency, imported only when a name is read: :func:`available` says whether it is there.

:func:`read_ca_names` opens one TLS connection that sends no certificate and no request
and closes it once the handshake is over. The server's certificate is not verified: the
names are only a hint (they order the candidates, each of which verifies the server on its
own connection), and nothing private crosses this connection. An ``http://`` proxy is
crossed with ``CONNECT``, as httpx does; other proxies are refused.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import logging
import select
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import httpx

from .errors import CANamesError, MissingExtraError
from .gochoice import name_text

if TYPE_CHECKING:
    from OpenSSL import SSL

__all__ = ["ServerCANames", "available", "learn", "read_ca_names", "require"]

log = logging.getLogger("dockercerts")

#: The bound on :func:`learn` when the request has no connect timeout: it runs before the
#: request's first try, and a silent server must not hold it forever.
LEARN_TIMEOUT = 10.0

#: The most a proxy's answer to CONNECT may take, headers included.
_MAX_PROXY_ANSWER = 64 * 1024


@dataclass(frozen=True)
class ServerCANames:
    """What a server asked for in its handshake.

    ``requested``: it sent a CertificateRequest (``False``: it wants no client certificate,
    and Go sends none). ``names``: the CA names listed there, DER, in the server's order
    (empty: it accepts any CA, and Go sends the first pair); ``texts``: the same as RFC 4514
    strings. ``tls_version``: what the handshake negotiated (``"TLSv1.3"``).
    """

    requested: bool
    names: tuple[bytes, ...] = ()
    texts: tuple[str, ...] = ()
    tls_version: Optional[str] = None


def available() -> bool:
    """Whether pyOpenSSL can be imported (``pip install 'dockercerts[probe]'``)."""
    try:
        require("reading a server's CA names")
    except MissingExtraError:
        return False
    return True


def require(feature: str) -> None:
    """Raise :class:`~dockercerts.errors.MissingExtraError` naming ``feature`` when pyOpenSSL
    is missing."""
    try:
        from OpenSSL import SSL  # noqa: F401
    except ImportError:
        raise MissingExtraError(feature, "probe", "pyOpenSSL") from None


def read_ca_names(
    host: str,
    port: int,
    *,
    timeout: Optional[float] = 5.0,
    proxy: Optional[httpx.Proxy] = None,
) -> ServerCANames:
    """Connect to ``host:port`` and return the CA names its CertificateRequest lists.

    Blocking; ``timeout`` bounds the whole exchange (``None``: no bound). Raises
    :class:`~dockercerts.errors.CANamesError` when no handshake gets as far as the
    server's certificate request, and :class:`~dockercerts.errors.MissingExtraError`
    without pyOpenSSL.

        >>> names = read_ca_names("registry.example.com", 5000)  # doctest: +SKIP
        >>> names.texts  # doctest: +SKIP
        ('CN=registry clients CA',)
    """
    require("reading a server's CA names")
    from OpenSSL import SSL

    deadline = None if timeout is None else time.monotonic() + timeout
    seen: list[Any] = []

    def watch(conn: SSL.Connection, where: int, ret: int) -> None:
        # Read as soon as the request is parsed: a server that then refuses the empty
        # certificate ends the handshake with an alert, and the list must not depend on it.
        if not seen and b"certificate request" in conn.get_state_string():
            seen.append(conn.get_client_ca_list())

    context = SSL.Context(SSL.TLS_METHOD)
    context.set_min_proto_version(SSL.TLS1_2_VERSION)  # as Docker
    context.set_info_callback(watch)
    failure: Optional[str] = None
    version: Optional[str] = None
    try:
        sock = _connect(host, port, proxy, deadline)
        try:
            conn = SSL.Connection(context, sock)
            if not _is_ip(host):
                conn.set_tlsext_host_name(host.encode("idna"))
            conn.set_connect_state()
            failure = _handshake(conn, sock, deadline)
            version = conn.get_protocol_version_name() or None
            if failure is None:
                with contextlib.suppress(Exception):  # the names are read already
                    conn.shutdown()
        finally:
            sock.close()
    except TimeoutError:
        failure = f"no answer within {timeout:g} s"
    if not seen:
        if failure is not None:
            raise CANamesError(host, port, failure)
        return ServerCANames(requested=False, tls_version=version)
    names = tuple(_der(name) for name in seen[0])
    return ServerCANames(
        requested=True, names=names, texts=tuple(name_text(n) for n in names), tls_version=version
    )


def learn(
    url: httpx.URL, proxy: Optional[httpx.Proxy], timeout: Optional[float]
) -> tuple[bytes, ...]:
    """The CA names ``url``'s server lists, for the transports' ``order="ca-names"``.

    ``()`` when it lists none or they cannot be read (logged): the order is then Docker's,
    and the request goes on as it would have; the names are a hint, never a condition.
    """
    host, port = url.host, url.port or 443
    try:
        found = read_ca_names(
            host, port, timeout=LEARN_TIMEOUT if timeout is None else timeout, proxy=proxy
        )
    except (CANamesError, OSError) as exc:
        log.info("%s; trying client certificates in Docker's order", exc)
        return ()
    return found.names


def _handshake(
    conn: SSL.Connection, sock: socket.socket, deadline: Optional[float]
) -> Optional[str]:
    """Run the handshake on the non-blocking ``sock``; what failed, or ``None``."""
    from OpenSSL import SSL

    while True:
        try:
            conn.do_handshake()
            return None
        except SSL.WantReadError:
            ready = select.select([sock], [], [], _left(deadline))[0]
        except SSL.WantWriteError:
            ready = select.select([], [sock], [], _left(deadline))[1]
        except SSL.SysCallError as exc:
            return f"the connection closed during the handshake ({exc.args[-1]})"
        except SSL.Error as exc:
            return f"the handshake failed: {_ssl_reason(exc)}"
        if not ready:
            raise TimeoutError


def _connect(
    host: str, port: int, proxy: Optional[httpx.Proxy], deadline: Optional[float]
) -> socket.socket:
    """A non-blocking socket to ``host:port``, through ``proxy``'s tunnel if one is given."""
    target = (host, port)
    if proxy is not None:
        if proxy.url.scheme != "http":
            raise CANamesError(
                host, port, f"a {proxy.url.scheme}:// proxy is in the way (only http:// is crossed)"
            )
        target = (proxy.url.host, proxy.url.port or 80)
    try:
        sock = socket.create_connection(target, timeout=_left(deadline))
    except TimeoutError:
        raise
    except OSError as exc:
        via = f" (proxy {target[0]}:{target[1]})" if proxy is not None else ""
        raise CANamesError(host, port, f"cannot connect{via}: {exc}") from None
    try:
        if proxy is not None:
            _tunnel(sock, host, port, proxy, deadline)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _tunnel(
    sock: socket.socket, host: str, port: int, proxy: httpx.Proxy, deadline: Optional[float]
) -> None:
    """``CONNECT host:port`` on a connection to an HTTP proxy, with its credentials."""
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    headers = {"Host": authority}
    if proxy.raw_auth is not None:
        user, password = proxy.raw_auth
        token = base64.b64encode(user + b":" + password).decode("ascii")
        headers["Proxy-Authorization"] = f"Basic {token}"
    headers.update((k.decode("latin-1"), v.decode("latin-1")) for k, v in proxy.headers.raw)
    lines = [f"CONNECT {authority} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items())]
    answer = b""
    try:
        sock.settimeout(_left(deadline))
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        while b"\r\n\r\n" not in answer and len(answer) < _MAX_PROXY_ANSWER:
            sock.settimeout(_left(deadline))
            # One byte at a time past the headers would be wasteful; the proxy sends nothing
            # after its answer until the client speaks, so reading chunks is safe.
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    except TimeoutError:
        raise
    except OSError as exc:
        raise CANamesError(host, port, f"the proxy did not answer CONNECT: {exc}") from None
    status = answer.split(b"\r\n", 1)[0].decode("latin-1", "replace")
    parts = status.split(" ", 2)
    if len(parts) < 2 or parts[1] != "200":
        raise CANamesError(host, port, f"the proxy refused CONNECT: {status or 'no answer'}")


def _left(deadline: Optional[float]) -> Optional[float]:
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _der(name: Any) -> bytes:
    # pyOpenSSL's X509Name keeps the bytes the server sent; newer releases may drop it for
    # cryptography's Name, which can only re-encode.
    der = getattr(name, "der", None)
    return bytes(der()) if der is not None else bytes(name.public_bytes())


def _ssl_reason(exc: Exception) -> str:
    errors = exc.args[0] if exc.args else None
    if isinstance(errors, list) and errors and isinstance(errors[-1], tuple):
        return str(errors[-1][-1])
    return str(exc) or type(exc).__name__
