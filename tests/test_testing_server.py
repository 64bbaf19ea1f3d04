"""dockercerts.testing.server: real sockets, real handshakes, TLS 1.2 and 1.3.

Expected pages and headers are written out literally here (copied from nginx 1.22 and
docker-registry 2.8 behaviour, pinned by ``test_peers.py``), not taken from the server module.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any, Optional

import httpx
import pytest
from cryptography import x509

from dockercerts.pytest_plugin import ServerFactory
from dockercerts.testing import (
    CA,
    ClientCertInfo,
    Leaf,
    MTLSServer,
    RejectMode,
    client_ssl_context,
)

TLS = ["1.2", "1.3"]

NO_CERT_PAGE = (
    b"<html>\r\n<head><title>400 No required SSL certificate was sent</title></head>\r\n"
    b"<body>\r\n<center><h1>400 Bad Request</h1></center>\r\n"
    b"<center>No required SSL certificate was sent</center>\r\n"
    b"<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
BAD_CERT_PAGE = (
    b"<html>\r\n<head><title>400 The SSL certificate error</title></head>\r\n"
    b"<body>\r\n<center><h1>400 Bad Request</h1></center>\r\n"
    b"<center>The SSL certificate error</center>\r\n"
    b"<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
FORBIDDEN_PAGE = (
    b"<html>\r\n<head><title>403 Forbidden</title></head>\r\n<body>\r\n"
    b"<center><h1>403 Forbidden</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n"
)


@pytest.fixture(scope="module")
def ca() -> CA:
    return CA(name="server test clients")


@pytest.fixture(scope="module")
def other() -> CA:
    return CA(name="server test strangers")


@pytest.fixture(scope="module")
def alice(ca: CA) -> Leaf:
    return ca.issue_client("alice")


@pytest.fixture(scope="module")
def eve(other: CA) -> Leaf:
    return other.issue_client("eve")


@pytest.fixture
def servers() -> Iterator[list[MTLSServer]]:
    """Servers appended here are stopped after the test even when it fails."""
    started: list[MTLSServer] = []
    yield started
    for srv in started:
        srv.stop()


@pytest.fixture
def serve(servers: list[MTLSServer], ca: CA, other: CA) -> ServerFactory:
    """Like the plugin's ``mtls_server``, with this module's CAs."""

    def start(**options: Any) -> MTLSServer:
        options.setdefault("client_ca", ca)
        options.setdefault("handshake_cas", [other])
        srv = MTLSServer(**options).start()
        servers.append(srv)
        return srv

    return start


@contextlib.contextmanager
def tls_socket(srv: MTLSServer, leaf: Optional[Leaf]) -> Iterator[ssl.SSLSocket]:
    """A raw client TLS socket to ``srv`` (handshake done by the time it is yielded)."""
    ctx = srv.client_context(leaf)
    raw = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    with raw, ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        yield tls


def get(srv: MTLSServer, leaf: Optional[Leaf], path: str = "/v2/") -> httpx.Response:
    """One request on a fresh client that trusts ``srv`` and presents ``leaf``."""
    with httpx.Client(verify=srv.client_context(leaf)) as client:
        response = client.get(srv.url + path)
        response.read()
        return response


# --------------------------------------------------------------------------- reject="tls"


@pytest.mark.parametrize("tls", TLS)
def test_tls_mode_accepts_the_right_certificate(
    serve: ServerFactory, alice: Leaf, tls: str
) -> None:
    srv = serve(reject="tls", tls_version=tls)
    response = get(srv, alice)
    assert response.status_code == 200
    assert response.content == b"{}"
    assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    (record,) = srv.requests
    assert record.client_fingerprint == alice.fingerprint
    assert record.client_subject == "CN=alice"
    assert record.tls_version == f"TLSv{tls}"
    assert record.status == 200
    assert (srv.handshakes, srv.failed_handshakes) == (1, 0)


@pytest.mark.parametrize("tls", TLS)
@pytest.mark.parametrize("who", ["none", "wrong", "expired"])
def test_tls_mode_rejects_in_the_handshake(
    serve: ServerFactory, ca: CA, eve: Leaf, tls: str, who: str
) -> None:
    leaf = {"none": None, "wrong": eve, "expired": ca.issue_client("old", expired=True)}[who]
    srv = serve(reject="tls", tls_version=tls)
    expected = httpx.ConnectError if tls == "1.2" else (httpx.ReadError, httpx.ConnectError)
    with pytest.raises(expected):
        get(srv, leaf)
    srv.wait_for(lambda: srv.failed_handshakes == 1)
    assert srv.requests == []
    assert srv.handshakes == 0
    assert len(srv.handshake_errors) == 1


def test_tls13_client_sees_the_alert_only_at_first_read(serve: ServerFactory, eve: Leaf) -> None:
    srv = serve(reject="tls", tls_version="1.3")
    with tls_socket(srv, eve) as tls:
        assert tls.version() == "TLSv1.3"  # the client believes it is done
        # Sending may still succeed or already fail (the RST can win the race); reading fails.
        with contextlib.suppress(ssl.SSLError, ConnectionResetError):
            tls.sendall(b"GET /v2/ HTTP/1.1\r\nHost: localhost\r\n\r\n")
        with pytest.raises((ssl.SSLError, ConnectionResetError)) as info:
            tls.recv(1024)
    if isinstance(info.value, ssl.SSLError):
        assert "UNKNOWN_CA" in str(info.value).upper()


def test_tls12_raw_socket_fails_in_the_handshake(serve: ServerFactory) -> None:
    srv = serve(reject="tls", tls_version="1.2")
    with pytest.raises(ssl.SSLError, match="HANDSHAKE_FAILURE"), tls_socket(srv, None):
        pass


# --------------------------------------------------------------------------- reject="http"


@pytest.mark.parametrize("tls", TLS)
def test_http_mode_answers_nginx_400_pages(
    serve: ServerFactory, ca: CA, alice: Leaf, eve: Leaf, tls: str
) -> None:
    srv = serve(reject="http", tls_version=tls)
    none = get(srv, None)
    assert none.status_code == 400
    assert none.content == NO_CERT_PAGE
    assert none.headers["server"] == "nginx"
    assert none.headers["content-type"] == "text/html"
    assert none.headers["connection"] == "close"
    assert list(none.headers)[:2] == ["server", "date"]

    wrong = get(srv, eve)
    assert wrong.status_code == 400
    assert wrong.content == BAD_CERT_PAGE

    expired = get(srv, ca.issue_client("old", expired=True))
    assert expired.content == BAD_CERT_PAGE

    assert get(srv, alice).status_code == 200
    assert [r.status for r in srv.requests] == [400, 400, 400, 200]
    assert [r.client_subject for r in srv.requests] == [None, "CN=eve", "CN=old", "CN=alice"]
    assert srv.requests[1].client_fingerprint == eve.fingerprint
    assert all(r.tls_version == f"TLSv{tls}" for r in srv.requests)
    assert (srv.handshakes, srv.failed_handshakes) == (4, 0)
    assert srv.requests[1].client_cert is not None
    assert srv.requests[1].client_cert.problem == "not issued by an accepted CA"
    assert srv.requests[2].client_cert is not None
    assert srv.requests[2].client_cert.problem == "expired"


def test_http_mode_closes_after_the_400(serve: ServerFactory) -> None:
    srv = serve(reject="http")
    with httpx.Client(verify=srv.client_context(None)) as client:
        assert client.get(srv.url + "/v2/").status_code == 400
        assert client.get(srv.url + "/v2/").status_code == 400
    assert srv.handshakes == 2
    assert len({r.connection_id for r in srv.requests}) == 2


def test_certificate_from_a_ca_nobody_knows_fails_even_in_http_mode(serve: ServerFactory) -> None:
    """The documented limit: without a verify callback the handshake needs to know the CA."""
    srv = serve(reject="http", tls_version="1.2", handshake_cas=[])
    with pytest.raises(httpx.ConnectError, match="UNKNOWN_CA"):
        get(srv, CA(name="unheard of").issue_client("x"))


# --------------------------------------------------------------------------- reject="status"


@pytest.mark.parametrize("tls", TLS)
def test_status_mode_default_is_403_for_untrusted(
    serve: ServerFactory, alice: Leaf, eve: Leaf, tls: str
) -> None:
    srv = serve(reject="status", tls_version=tls)
    assert get(srv, alice).status_code == 200
    for leaf in (None, eve):
        response = get(srv, leaf)
        assert response.status_code == 403
        assert response.content == FORBIDDEN_PAGE


@pytest.mark.parametrize("status", [401, 495, 496, 500, 502])
def test_status_mode_uses_the_chosen_status(serve: ServerFactory, eve: Leaf, status: int) -> None:
    srv = serve(reject="status", status=status)
    response = get(srv, eve)
    assert response.status_code == status
    assert f"<title>{status} ".encode() in response.content


def test_status_mode_extra_headers(serve: ServerFactory, eve: Leaf) -> None:
    challenge = 'Bearer realm="https://127.0.0.1/token"'
    srv = serve(reject="status", status=401, status_headers=[("WWW-Authenticate", challenge)])
    response = get(srv, eve)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == challenge


def test_status_mode_predicate_sees_the_certificate(
    serve: ServerFactory, ca: CA, alice: Leaf
) -> None:
    seen: list[Optional[ClientCertInfo]] = []

    def only_alice(info: Optional[ClientCertInfo]) -> bool:
        seen.append(info)
        return info is not None and info.subject == "CN=alice"

    srv = serve(reject="status", accept=only_alice)
    assert get(srv, alice).status_code == 200
    assert get(srv, ca.issue_client("bob")).status_code == 403
    assert get(srv, None).status_code == 403
    assert seen[0] is not None
    assert seen[0].fingerprint == alice.fingerprint
    assert seen[0].trusted
    assert seen[0].certificate.subject == alice.certificate.subject
    assert seen[1] is not None
    assert seen[1].subject == "CN=bob"
    assert seen[2] is None


def test_status_mode_keeps_the_connection_open(serve: ServerFactory, eve: Leaf) -> None:
    srv = serve(reject="status")
    with httpx.Client(verify=srv.client_context(eve)) as client:
        assert [client.get(srv.url + "/v2/").status_code for _ in range(2)] == [403, 403]
    assert srv.handshakes == 1


def test_a_raising_predicate_is_reported_as_500(serve: ServerFactory, alice: Leaf) -> None:
    def broken(info: Optional[ClientCertInfo]) -> bool:
        raise RuntimeError("boom")

    srv = serve(reject="status", accept=broken)
    assert get(srv, alice).status_code == 500
    assert srv.errors == ["accept() raised RuntimeError: boom"]


# --------------------------------------------------------------------------- HTTP behaviour


def test_keep_alive_reuses_one_handshake(serve: ServerFactory, alice: Leaf) -> None:
    srv = serve()
    with httpx.Client(verify=srv.client_context(alice)) as client:
        assert client.get(srv.url + "/v2/").status_code == 200
        assert client.get(srv.url + "/v2/_catalog").status_code == 200
    assert srv.handshakes == 1
    assert srv.connections == 1
    assert len({r.connection_id for r in srv.requests}) == 1


@pytest.mark.parametrize("mode", ["tls", "http"])
def test_large_body_is_read_fully_before_answering(
    serve: ServerFactory, alice: Leaf, mode: RejectMode
) -> None:
    srv = serve(reject=mode)
    body = os.urandom(1024 * 1024)
    with httpx.Client(verify=srv.client_context(alice)) as client:
        response = client.post(srv.url + "/v2/team/app/blobs/uploads/", content=body)
    assert response.status_code == 200
    assert response.json()["body_length"] == len(body)
    assert srv.requests[0].body == body


def test_rejected_large_body_gets_the_400_not_a_reset(serve: ServerFactory) -> None:
    srv = serve(reject="http")
    with httpx.Client(verify=srv.client_context(None)) as client:
        response = client.put(srv.url + "/v2/x", content=b"z" * (1024 * 1024))
    assert response.status_code == 400
    assert response.content == NO_CERT_PAGE
    assert len(srv.requests[0].body) == 1024 * 1024


def test_chunked_body(serve: ServerFactory, alice: Leaf) -> None:
    srv = serve()
    parts = [b"a" * 10, b"b" * 70000, b"c"]
    with httpx.Client(verify=srv.client_context(alice)) as client:
        response = client.post(srv.url + "/echo", content=iter(parts))
        follow_up = client.get(srv.url + "/v2/")
    assert response.status_code == 200
    record = srv.requests[0]
    assert record.headers["transfer-encoding"] == "chunked"
    assert record.body == b"".join(parts)
    assert follow_up.status_code == 200  # the connection stayed in sync
    assert srv.handshakes == 1


def test_registry_routes_and_echo(serve: ServerFactory, alice: Leaf) -> None:
    srv = serve(repositories=["a/b", "c"])
    with httpx.Client(verify=srv.client_context(alice)) as client:
        catalog = client.get(srv.url + "/v2/_catalog?n=10")
        echo = client.request("DELETE", srv.url + "/v2/a/b/manifests/x?q=1", content=b"xyz")
        head = client.head(srv.url + "/v2/")
    assert catalog.json() == {"repositories": ["a/b", "c"]}
    assert echo.json() == {
        "method": "DELETE",
        "path": "/v2/a/b/manifests/x?q=1",
        "body_length": 3,
        "client_subject": "CN=alice",
        "client_fingerprint": alice.fingerprint,
    }
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == "2"
    assert srv.requests[1].headers["content-length"] == "3"


def test_auth_challenge(serve: ServerFactory, alice: Leaf) -> None:
    srv = serve(auth_challenge=True)
    with httpx.Client(verify=srv.client_context(alice)) as client:
        challenged = client.get(srv.url + "/v2/")
        token = client.get(srv.url + "/token?service=dockercerts-test")
        authed = client.get(srv.url + "/v2/", headers={"Authorization": "Bearer t"})
    assert challenged.status_code == 401
    assert challenged.headers["www-authenticate"] == (
        f'Bearer realm="https://127.0.0.1:{srv.port}/token",service="dockercerts-test"'
    )
    assert challenged.json()["errors"][0]["code"] == "UNAUTHORIZED"
    assert token.status_code == 200
    assert "token" in token.json()
    assert authed.status_code == 200


def test_expect_continue_and_malformed_requests(serve: ServerFactory, alice: Leaf) -> None:
    srv = serve()
    with tls_socket(srv, alice) as tls:
        tls.sendall(
            b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
        )
        assert tls.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n")
        tls.sendall(b"data")
        reply = tls.recv(4096)
        assert reply.startswith(b"HTTP/1.1 200 OK\r\n")
        tls.sendall(b"NONSENSE\r\n\r\n")
        assert tls.recv(4096).startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert srv.requests[0].body == b"data"
    assert srv.errors == []


def test_concurrent_connections(serve: ServerFactory, alice: Leaf) -> None:
    srv = serve(max_workers=8)
    ctx = srv.client_context(alice)

    def one(i: int) -> int:
        with httpx.Client(verify=ctx) as client:
            return client.get(f"{srv.url}/v2/r{i}").status_code

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        statuses = list(pool.map(one, range(24)))
    assert statuses == [200] * 24
    assert srv.handshakes == 24
    assert sorted(r.path for r in srv.requests) == sorted(f"/v2/r{i}" for i in range(24))


def test_idle_keep_alive_connections_do_not_hold_workers(serve: ServerFactory, alice: Leaf) -> None:
    srv = serve(max_workers=2)
    ctx = srv.client_context(alice)
    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(httpx.Client(verify=ctx, timeout=3)) for _ in range(5)]
        for client in clients:  # each leaves one idle kept-alive connection behind
            assert client.get(srv.url + "/v2/").status_code == 200
        assert srv.open_connections == 5
        assert [c.get(srv.url + "/v2/_catalog").status_code for c in clients] == [200] * 5
    assert srv.handshakes == 5


def test_a_connection_is_counted_open_until_its_socket_is_closed(
    serve: ServerFactory, alice: Leaf, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A client that sees open_connections == 0 may reuse its kept-alive connection at once;
    # if the count dropped before the close, that reuse races the server's FIN (a CI flake).
    srv = serve(idle_timeout=0.2)
    seen_at_close: list[int] = []
    close = ssl.SSLSocket.close

    def spying_close(sock: ssl.SSLSocket) -> None:
        if threading.current_thread() is not threading.main_thread():
            seen_at_close.append(srv.open_connections)
        close(sock)

    monkeypatch.setattr(ssl.SSLSocket, "close", spying_close)
    with httpx.Client(verify=srv.client_context(alice)) as client:
        assert client.get(srv.url + "/v2/").status_code == 200
        srv.wait_for(lambda: srv.open_connections == 0, timeout=3)
    assert seen_at_close == [1]


def test_idle_connections_are_closed_after_idle_timeout(serve: ServerFactory, alice: Leaf) -> None:
    srv = serve(idle_timeout=0.2)
    with httpx.Client(verify=srv.client_context(alice)) as client:
        assert client.get(srv.url + "/v2/").status_code == 200
        srv.wait_for(lambda: srv.open_connections == 0, timeout=3)
        assert client.get(srv.url + "/v2/").status_code == 200  # httpx reconnects
    assert srv.handshakes == 2


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("tls", TLS)
async def test_async_client(serve: ServerFactory, alice: Leaf, eve: Leaf, tls: str) -> None:
    srv = serve(reject="http", tls_version=tls)
    async with httpx.AsyncClient(verify=srv.client_context(alice)) as client:
        first = await client.get(srv.url + "/v2/")
        second = await client.get(srv.url + "/v2/_catalog")
    async with httpx.AsyncClient(verify=srv.client_context(eve)) as client:
        rejected = await client.get(srv.url + "/v2/")
    assert (first.status_code, second.status_code) == (200, 200)
    assert rejected.status_code == 400
    assert rejected.content == BAD_CERT_PAGE
    assert srv.handshakes == 2


# --------------------------------------------------------------------------- options


def test_plain_tls_without_client_ca(servers: list[MTLSServer]) -> None:
    srv = MTLSServer().start()
    servers.append(srv)
    assert get(srv, None).status_code == 200
    assert srv.requests[0].client_subject is None


def test_intermediates(servers: list[MTLSServer], ca: CA) -> None:
    issuing = ca.intermediate(name="issuing A")
    sibling = ca.intermediate(name="issuing B")
    by_root = MTLSServer(client_ca=ca, reject="tls", tls_version="1.2").start()
    by_issuing = MTLSServer(client_ca=issuing, handshake_cas=[ca], reject="http").start()
    servers += [by_root, by_issuing]
    assert get(by_root, issuing.issue_client("chain")).status_code == 200
    with pytest.raises(httpx.ConnectError):
        get(by_root, issuing.issue_client("leaf-only", include_chain=False))
    assert get(by_issuing, issuing.issue_client("a")).status_code == 200
    assert get(by_issuing, sibling.issue_client("b")).content == BAD_CERT_PAGE


def test_server_cert_and_addresses(servers: list[MTLSServer], ca: CA, alice: Leaf) -> None:
    server_root = CA(name="my server root")
    leaf = server_root.intermediate(name="my server issuing").issue_server()
    srv = MTLSServer(server_cert=leaf, client_ca=ca).start()
    servers.append(srv)
    assert srv.server_ca is server_root
    assert srv.host == f"localhost:{srv.port}"
    assert srv.url == f"https://localhost:{srv.port}"
    ctx = client_ssl_context(trust=server_root, leaf=alice)
    assert httpx.get(srv.url_ip + "/v2/", verify=ctx).status_code == 200


def test_ipv6_listener(servers: list[MTLSServer], alice: Leaf, ca: CA) -> None:
    try:
        socket.socket(socket.AF_INET6).close()
        srv = MTLSServer(client_ca=ca, ipv6=True).start()
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback: {exc}")
    servers.append(srv)
    ctx = srv.client_context(alice)
    assert httpx.get(srv.url_v6 + "/v2/", verify=ctx).status_code == 200
    assert httpx.get(srv.url_ip + "/v2/", verify=ctx).status_code == 200


def test_invalid_options() -> None:
    with pytest.raises(ValueError, match="reject"):
        MTLSServer(reject="nginx")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="accept"):
        MTLSServer(reject="http", accept=lambda info: True)
    with pytest.raises(ValueError, match="status"):
        MTLSServer(reject="status", status=99)


def test_reset_counters_and_lifecycle(ca: CA, alice: Leaf) -> None:
    srv = MTLSServer(client_ca=ca)
    assert "not started" in repr(srv)
    with srv:
        get(srv, alice)
        assert srv.requests
        srv.reset_counters()
        assert (srv.requests, srv.handshakes, srv.connections) == ([], 0, 0)
        with pytest.raises(RuntimeError):
            srv.start()
        with pytest.raises(TimeoutError):
            srv.wait_for(lambda: srv.failed_handshakes > 0, timeout=0.05)
    srv.stop()  # idempotent
    with pytest.raises(httpx.ConnectError):
        get(srv, alice)


# --------------------------------------------------------------------------- CA names


def certificate_request_ca_names(port: int) -> Optional[list[bytes]]:
    """DER names in a TLS 1.2 CertificateRequest (plaintext in 1.2); None when none is sent."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    messages: dict[int, bytes] = {}
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(outgoing.read())
        records = handshake = b""
        while 14 not in messages:  # ServerHelloDone
            data = sock.recv(65536)
            assert data, "server closed before ServerHelloDone"
            records += data
            while len(records) >= 5 and len(records) >= 5 + int.from_bytes(records[3:5], "big"):
                length = int.from_bytes(records[3:5], "big")
                if records[0] == 22:
                    handshake += records[5 : 5 + length]
                records = records[5 + length :]
            while len(handshake) >= 4 and len(handshake) >= 4 + int.from_bytes(
                handshake[1:4], "big"
            ):
                length = int.from_bytes(handshake[1:4], "big")
                messages[handshake[0]] = handshake[4 : 4 + length]
                handshake = handshake[4 + length :]
    if 13 not in messages:
        return None
    body = messages[13]
    pos = 1 + body[0]  # certificate_types
    pos += 2 + int.from_bytes(body[pos : pos + 2], "big")  # signature algorithms
    end = pos + 2 + int.from_bytes(body[pos : pos + 2], "big")
    pos += 2
    names = []
    while pos < end:
        length = int.from_bytes(body[pos : pos + 2], "big")
        names.append(body[pos + 2 : pos + 2 + length])
        pos += 2 + length
    return names


def der_name(ca: CA) -> bytes:
    return ca.certificate.subject.public_bytes()


@pytest.mark.parametrize("mode", ["tls", "http"])
def test_send_ca_names(servers: list[MTLSServer], ca: CA, other: CA, mode: RejectMode) -> None:
    def names(send: object) -> Optional[list[bytes]]:
        srv = MTLSServer(
            client_ca=ca,
            handshake_cas=[other],
            reject=mode,
            send_ca_names=send,  # type: ignore[arg-type]
        ).start()
        servers.append(srv)
        if not srv.ca_names_sent:
            pytest.skip("this Python's OpenSSL cannot be reached to set the CA names")
        return certificate_request_ca_names(srv.port)

    assert names(True) == [der_name(ca)]
    assert names(False) == []
    assert names([other, ca]) == [der_name(other), der_name(ca)]
    assert x509.Name.from_rfc4514_string("CN=server test clients").public_bytes() == der_name(ca)


def test_no_certificate_request_without_client_cas(servers: list[MTLSServer]) -> None:
    srv = MTLSServer().start()
    servers.append(srv)
    assert certificate_request_ca_names(srv.port) is None


# --------------------------------------------------------------------------- cleanup


def _open_fds() -> Optional[int]:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


def test_stop_closes_everything_and_joins_threads(ca: CA, alice: Leaf) -> None:
    threads_before = set(threading.enumerate())
    fds_before = _open_fds()
    srv = MTLSServer(client_ca=ca, idle_timeout=30).start()
    ctx = srv.client_context(alice)
    # An idle keep-alive connection and a half-open one (no handshake) are both in flight.
    client = httpx.Client(verify=ctx)
    assert client.get(srv.url + "/v2/").status_code == 200
    half_open = socket.create_connection(("127.0.0.1", srv.port))
    time.sleep(0.05)
    started = time.monotonic()
    srv.stop()
    assert time.monotonic() - started < 2
    leftovers = [t for t in threading.enumerate() if t not in threads_before]
    assert leftovers == []
    client.close()
    half_open.close()
    if fds_before is not None:
        assert _open_fds() == fds_before
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", srv.port), timeout=1).close()
