"""The async transport: the twins of ``test_transport.py``, awaited.

Same layouts, same servers, same assertions; the helpers come from ``test_transport``.
Every test runs on asyncio; the rejection kinds also run on trio (httpcore's other
backend, whose exceptions differ from anyio's).
"""

from __future__ import annotations

import os
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any, Callable

import anyio
import httpx
import pytest
import test_transport as shared
from test_transport import (
    BODY,
    OK_RESPONSE,
    POLICY_CASES,
    TLS_VERSIONS,
    ChallengeServer,
    ClientNames,
    LazyMock,
    Leaves,
    StubServer,
    Tracer,
    chain_text,
    check_kept_alive_records,
    client_sockets,
    closed_port,
    count_folder_reads,
    host_dir,
    ipv6_loopback,
    nginx_400_then_stall,
    no_key_material,
    open_a_connection,
    read_then_reset,
    rejections,
    reset_first_connection,
    reset_second_request,
    same_error_for_each,
    slot_users,
    stall,
    subject,
    warnings_logged,
)

from dockercerts import (
    AsyncTransport,
    CertsDirTransportError,
    ClientCertificateRejected,
    MissingKeyError,
    _watch,
)
from dockercerts import loader as loader_module
from dockercerts._hosts import HostState
from dockercerts._layouts import Layout
from dockercerts.testing import CA, CertsD, HostDir

# The fixtures of test_transport, registered here too.
_transport_env = shared._transport_env
leaves = shared.leaves
client_names = shared.client_names
wrong_ca = shared.wrong_ca

pytestmark = pytest.mark.anyio
BOTH_BACKENDS = pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def client(certs_d: CertsD, **options: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=AsyncTransport(root=certs_d.root, **options), timeout=5.0)


async def chunks(total: int = 3, size: int = 1000) -> AsyncIterator[bytes]:
    for index in range(total):
        yield bytes([ord("a") + index]) * size
        await anyio.sleep(0)


async def read_body(request: httpx.Request) -> bytes:
    return b"".join([chunk async for chunk in request.stream])  # type: ignore[union-attr]


# --- decision logic over mock inner transports (no sockets) ------------------------------------


class Scripted(AsyncTransport):
    """An AsyncTransport whose candidates answer through async handlers, by pair name: its
    ``inner=`` tells the candidates apart by the certificate in their context."""

    def __init__(
        self,
        handlers: dict[str, Callable[[httpx.Request], Awaitable[httpx.Response]]],
        names: ClientNames,
        **kw: Any,
    ) -> None:
        self.handlers = handlers
        self.names = names
        super().__init__(inner=self.make, **kw)

    def make(self, *, verify: ssl.SSLContext, **options: Any) -> LazyMock:
        handler = self.handlers[self.names[verify]]
        return LazyMock(handler)  # type: ignore[arg-type]


@pytest.fixture
def scripted_dir(certs_d: CertsD, leaves: Leaves) -> HostDir:
    directory = certs_d.host("reg.test:5000")
    for name, leaf in leaves.layout("wrong", "wrong", "right"):
        directory.pair(name, leaf)
    return directory


async def test_mock_stream_not_started_is_replayed(
    certs_d: CertsD, scripted_dir: HostDir, client_names: ClientNames
) -> None:
    seen: list[bytes] = []

    async def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[SSL: SSLV3_ALERT_BAD_CERTIFICATE] sslv3 alert bad certificate")

    async def accept(request: httpx.Request) -> httpx.Response:
        seen.append(await read_body(request))
        return httpx.Response(200)

    transport = Scripted(
        {"a-wrong": refuse, "b-wrong": refuse, "c-right": accept}, client_names, root=certs_d.root
    )
    async with httpx.AsyncClient(transport=transport) as http:
        assert (await http.post("https://reg.test:5000/x", content=chunks())).status_code == 200
        assert transport.winner("https://reg.test:5000/") == "c-right"
    assert seen == [BODY]


async def test_mock_stream_already_sent_is_not_replayed(
    certs_d: CertsD, scripted_dir: HostDir, client_names: ClientNames
) -> None:
    calls: list[bytes] = []

    async def read_then_refuse(request: httpx.Request) -> httpx.Response:
        calls.append(await read_body(request))
        raise httpx.ReadError("[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] alert")

    handlers = {
        "a-wrong": read_then_refuse,
        "b-wrong": read_then_refuse,
        "c-right": read_then_refuse,
    }
    transport = Scripted(handlers, client_names, root=certs_d.root)
    async with httpx.AsyncClient(transport=transport) as http:
        with pytest.raises(ClientCertificateRejected, match="could not be replayed"):
            await http.post("https://reg.test:5000/x", content=chunks())
    assert calls == [BODY]


async def test_mock_silent_close_needs_a_fresh_connection(
    certs_d: CertsD, scripted_dir: HostDir, client_names: ClientNames
) -> None:
    async def fresh_close(request: httpx.Request) -> httpx.Response:
        open_a_connection()
        raise httpx.ReadError("")

    async def reused_close(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadError("")

    async def accept(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200)

    transport = Scripted(
        {"a-wrong": fresh_close, "b-wrong": fresh_close, "c-right": accept},
        client_names,
        root=certs_d.root,
    )
    async with httpx.AsyncClient(transport=transport) as http:
        assert (await http.get("https://reg.test:5000/v2/")).status_code == 200
    transport = Scripted(
        {"a-wrong": reused_close, "b-wrong": fresh_close, "c-right": accept},
        client_names,
        root=certs_d.root,
    )
    async with httpx.AsyncClient(transport=transport) as http:
        with pytest.raises(httpx.ReadError):
            await http.get("https://reg.test:5000/v2/")


async def test_tasks_over_more_hosts_than_max_hosts(
    certs_d: CertsD, leaves: Leaves, client_names: ClientNames
) -> None:
    """Hosts evicted by one task while another awaits: every request still goes out."""
    hosts = ["a.test:5000", "b.test:5000", "c.test:5000"]
    for host in hosts:
        certs_d.host(host).pair("only", leaves.get("right", "only"))

    async def ok(request: httpx.Request) -> httpx.Response:
        await anyio.sleep(0)
        return httpx.Response(200)

    class Closing(Scripted):
        """Its inner transports yield while closing, as real ones with connections do."""

        def make(self, **options: Any) -> LazyMock:
            inner = super().make(**options)

            async def aclose() -> None:
                await anyio.sleep(0)

            inner.aclose = aclose
            return inner

    transport = Closing({"only": ok}, client_names, root=certs_d.root, max_hosts=1, refresh=0)
    failures: list[BaseException] = []

    async def work(http: httpx.AsyncClient, host: str) -> None:
        for _ in range(100):
            try:
                await http.get(f"https://{host}/v2/")
            except Exception as exc:  # collected for the assertion below
                failures.append(exc)

    async with httpx.AsyncClient(transport=transport) as http, anyio.create_task_group() as group:
        for host in hosts:
            group.start_soon(work, http, host)
    assert failures == []


def test_max_hosts_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_hosts"):
        AsyncTransport(root=tmp_path, max_hosts=0)


# --- every rejection kind, through real handshakes ---------------------------------------------


@BOTH_BACKENDS
@pytest.mark.parametrize("tls", TLS_VERSIONS)
async def test_kept_alive_requests_share_the_record_of_their_accepted_try(
    tls: str, mtls_server: Any, certs_d: CertsD, leaves: Leaves
) -> None:
    """The async twin of ``test_transport``'s test of the same name."""
    srv = mtls_server(reject="tls", tls_version=tls)
    host_dir(certs_d, srv, leaves.layout("right"))
    async with client(certs_d) as http:
        responses = [await http.get(srv.url + "/v2/") for _ in range(3)]
    check_kept_alive_records(responses, tls)
    assert srv.handshakes == 1


@pytest.mark.parametrize("tls", TLS_VERSIONS)
async def test_tls_alert_moves_on(
    tls: str, mtls_server: Any, certs_d: CertsD, leaves: Leaves, caplog: pytest.LogCaptureFixture
) -> None:
    """TLS 1.2: the alert in the handshake; TLS 1.3: an alert, a bare ``ssl.SSLError`` or
    just a connection closed before any response (anyio), on the first read."""
    srv = mtls_server(reject="tls", tls_version=tls)
    host_dir(certs_d, srv, leaves.layout("wrong", "right"))
    tracer = Tracer()
    async with client(certs_d) as http:
        response = await http.get(srv.url + "/v2/", extensions={"trace": tracer.trace_async})
    assert response.status_code == 200
    assert [r.client_subject for r in srv.requests] == [subject("b-right")]
    assert srv.failed_handshakes == 1
    [line] = rejections(caplog)
    # The same text as the sync transport's, whichever of alert and reset anyio saw first.
    assert f"a-wrong rejected ({shared.REFUSAL[tls]}" in line
    assert tracer.count("connection.start_tls.complete") == (1 if tls == "1.2" else 2)
    assert tracer.count("connection.connect_tcp.started") == 2


@BOTH_BACKENDS
@pytest.mark.parametrize("tls", TLS_VERSIONS)
async def test_nginx_400_wrong_certificate_moves_on(
    tls: str, mtls_server: Any, certs_d: CertsD, leaves: Leaves, caplog: pytest.LogCaptureFixture
) -> None:
    srv = mtls_server(reject="http", tls_version=tls)
    host_dir(certs_d, srv, leaves.layout("wrong", "right"))
    async with client(certs_d) as http:
        response = await http.get(srv.url + "/v2/")
    assert response.status_code == 200
    assert [(r.client_subject, r.status) for r in srv.requests] == [
        (subject("a-wrong"), 400),
        (subject("b-right"), 200),
    ]
    assert rejections(caplog) == [
        f"{srv.host}: client certificate a-wrong rejected "
        "(HTTP 400 The SSL certificate error); trying the next one"
    ]


@pytest.mark.parametrize("tls", TLS_VERSIONS)
async def test_nginx_400_without_certificate_is_returned(
    tls: str, mtls_server: Any, certs_d: CertsD, caplog: pytest.LogCaptureFixture
) -> None:
    srv = mtls_server(reject="http", tls_version=tls)
    host_dir(certs_d, srv, [])
    async with client(certs_d) as http:
        response = await http.get(srv.url + "/v2/")
    assert response.status_code == 400
    assert "<title>400 No required SSL certificate was sent</title>" in response.text
    assert rejections(caplog) == [
        f"{srv.host}: client certificate (none) rejected "
        "(HTTP 400 No required SSL certificate was sent)"
    ]


@pytest.mark.parametrize("tls", TLS_VERSIONS)
@pytest.mark.parametrize("status", [401, 403, 495, 496])
async def test_auth_status_moves_on(
    tls: str,
    status: int,
    mtls_server: Any,
    certs_d: CertsD,
    leaves: Leaves,
    caplog: pytest.LogCaptureFixture,
) -> None:
    srv = mtls_server(reject="status", status=status, tls_version=tls)
    host_dir(certs_d, srv, leaves.layout("wrong", "right"))
    async with client(certs_d) as http:
        assert (await http.get(srv.url + "/v2/")).status_code == 200
    assert [r.status for r in srv.requests] == [status, 200]
    assert [f"(HTTP {status})" in line for line in rejections(caplog)] == [True]


@pytest.mark.parametrize("tls", TLS_VERSIONS)
async def test_server_error_rotates_for_get_not_post(
    tls: str, mtls_server: Any, certs_d: CertsD, leaves: Leaves
) -> None:
    srv = mtls_server(reject="status", status=503, tls_version=tls)
    host_dir(certs_d, srv, leaves.layout("wrong", "right"))
    async with client(certs_d) as http:
        assert (await http.get(srv.url + "/v2/")).status_code == 200
        srv.reset_counters()
    async with client(certs_d) as http:
        response = await http.post(srv.url + "/v2/app/blobs/uploads/", content=b"data")
    assert response.status_code == 503
    assert [(r.method, r.client_subject) for r in srv.requests] == [("POST", subject("a-wrong"))]


@pytest.mark.parametrize("tls", TLS_VERSIONS)
async def test_token_challenge_passes_through(
    tls: str, mtls_ca: CA, wrong_ca: CA, certs_d: CertsD, leaves: Leaves
) -> None:
    with ChallengeServer(
        client_ca=mtls_ca, handshake_cas=[wrong_ca], reject="status", status=401, tls_version=tls
    ) as srv:
        host_dir(certs_d, srv, leaves.layout("wrong", "right"))
        async with client(certs_d) as http:
            response = await http.get(srv.url + "/v2/")
            assert response.status_code == 401
            assert response.headers["www-authenticate"].startswith("Bearer realm=")
            assert [r.client_subject for r in srv.requests] == [subject("a-wrong")]
            srv.reset_counters()
            # An expired or under-scoped token gets the same answer: the challenge is what
            # the client needs to get its next token, and says nothing about the certificate.
            again = await http.get(srv.url + "/v2/", headers={"Authorization": "Bearer t"})
            assert again.status_code == 401
            assert again.headers["www-authenticate"].startswith("Bearer realm=")
            assert [r.client_subject for r in srv.requests] == [subject("a-wrong")]


@pytest.mark.parametrize("tls", TLS_VERSIONS)
@pytest.mark.parametrize(*POLICY_CASES)
async def test_policies(
    tls: str,
    policy: Any,
    server: dict[str, Any],
    method: str,
    rotates: bool,
    mtls_server: Any,
    certs_d: CertsD,
    leaves: Leaves,
) -> None:
    srv = mtls_server(tls_version=tls, **server)
    host_dir(certs_d, srv, leaves.layout("wrong", "right"))
    async with client(certs_d, policy=policy) as http:
        response = await http.request(
            method, srv.url + "/v2/", content=b"x" if method == "POST" else None
        )
    if rotates:
        assert response.status_code == 200
        assert srv.requests[-1].client_subject == subject("b-right")
    else:
        assert response.status_code == server.get("status", 400)
        assert [r.client_subject for r in srv.requests] == [subject("a-wrong")]


# --- silent closes: fresh connection vs kept-alive one -----------------------------------------


@BOTH_BACKENDS
async def test_reset_on_fresh_tls13_connection_moves_on(
    mtls_ca: CA, certs_d: CertsD, leaves: Leaves, caplog: pytest.LogCaptureFixture
) -> None:
    with StubServer(mtls_ca.issue_server(), reset_first_connection, "1.3") as stub:
        host_dir(certs_d, stub, [("a", leaves.get("right", "a")), ("b", leaves.get("right", "b"))])
        async with client(certs_d) as http:
            assert (await http.get(stub.url + "/v2/")).status_code == 200
        assert stub.connections == 2
    [line] = rejections(caplog)
    assert f"a rejected ({shared.TLS13_REFUSAL})" in line


@BOTH_BACKENDS
async def test_reset_on_fresh_tls12_connection_is_raised(
    mtls_ca: CA, certs_d: CertsD, leaves: Leaves, caplog: pytest.LogCaptureFixture
) -> None:
    # TLS 1.2: a completed handshake means the certificate was accepted (see the sync twin).
    with StubServer(mtls_ca.issue_server(), reset_first_connection, "1.2") as stub:
        host_dir(certs_d, stub, [("a", leaves.get("right", "a")), ("b", leaves.get("right", "b"))])
        async with client(certs_d) as http:
            with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
                await http.get(stub.url + "/v2/")
        assert stub.connections == 1
    assert rejections(caplog) == []


@BOTH_BACKENDS
@pytest.mark.parametrize("tls", TLS_VERSIONS)
async def test_reset_on_reused_connection_is_raised(
    tls: str, mtls_ca: CA, certs_d: CertsD, leaves: Leaves, caplog: pytest.LogCaptureFixture
) -> None:
    with StubServer(mtls_ca.issue_server(), reset_second_request, tls) as stub:
        host_dir(certs_d, stub, [("a", leaves.get("right", "a")), ("b", leaves.get("right", "b"))])
        async with client(certs_d) as http:
            assert (await http.get(stub.url + "/v2/")).status_code == 200
            with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
                await http.get(stub.url + "/v2/")
        assert stub.connections == 1
    assert rejections(caplog) == []


# --- order of the pairs ------------------------------------------------------------------------


@pytest.mark.parametrize("tls", TLS_VERSIONS)
@pytest.mark.parametrize(
    "roles",
    [("right", "wrong", "wrong"), ("wrong", "right", "wrong"), ("wrong", "wrong", "right")],
    ids=["first", "middle", "last"],
)
async def test_right_pair_anywhere(
    tls: str, roles: tuple[str, ...], mtls_server: Any, certs_d: CertsD, leaves: Leaves
) -> None:
    srv = mtls_server(reject="tls", tls_version=tls)
    pairs = leaves.layout(*roles)
    host_dir(certs_d, srv, pairs)
    right = roles.index("right")
    async with client(certs_d) as http:
        assert (await http.get(srv.url + "/v2/")).status_code == 200
        assert http._transport.winner(srv.url) == pairs[right][0]  # type: ignore[attr-defined]
    assert srv.failed_handshakes == right
    assert [r.client_subject for r in srv.requests] == [subject(pairs[right][0])]


@pytest.mark.parametrize("tls", TLS_VERSIONS)
async def test_no_directory_uses_system_trust(
    tls: str, mtls_server: Any, certs_d: CertsD, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    srv = mtls_server(reject="http", tls_version=tls)
    async with client(certs_d) as http:
        with pytest.raises(httpx.ConnectError) as err:
            await http.get(srv.url + "/v2/")
    assert "CERTIFICATE_VERIFY_FAILED" in chain_text(err.value)
    assert srv.connections == 1
    assert srv.requests == []
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(srv.server_ca.cert_pem)
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    async with client(certs_d) as http:
        response = await http.get(srv.url + "/v2/")
    assert response.status_code == 400
    assert "No required SSL certificate was sent" in response.text
    assert [r.client_subject for r in srv.requests] == [None]


async def test_broken_directory_raises_the_loader_error(
    mtls_server: Any, certs_d: CertsD, leaves: Leaves
) -> None:
    srv = mtls_server(reject="tls")
    host_dir(certs_d, srv, leaves.layout("right")).cert_only("b-lonely", leaves.get("right", "x"))
    async with client(certs_d) as http:
        with pytest.raises(httpx.TransportError, match=r"missing key b-lonely\.key") as err:
            await http.get(srv.url + "/v2/")
    assert isinstance(err.value, CertsDirTransportError)
    assert isinstance(err.value.error, MissingKeyError)
    assert srv.connections == 0


# --- never rotate --------------------------------------------------------------------------------


@BOTH_BACKENDS
async def test_timeout_does_not_rotate(mtls_ca: CA, certs_d: CertsD, leaves: Leaves) -> None:
    with StubServer(mtls_ca.issue_server(), stall) as stub:
        host_dir(certs_d, stub, leaves.layout("wrong", "right"))
        tracer = Tracer()
        started = time.monotonic()
        async with client(certs_d) as http:
            with pytest.raises(httpx.ConnectTimeout):
                await http.get(
                    stub.url + "/v2/", timeout=0.3, extensions={"trace": tracer.trace_async}
                )
        assert time.monotonic() - started < 2 * 0.3
        assert stub.connections == 1
    assert tracer.count("connection.connect_tcp.started") == 1


@BOTH_BACKENDS
async def test_refused_connection_does_not_rotate(
    certs_d: CertsD, leaves: Leaves, caplog: pytest.LogCaptureFixture
) -> None:
    port = closed_port()
    directory = certs_d.host(f"localhost:{port}")
    for name, leaf in leaves.layout("wrong", "right"):
        directory.pair(name, leaf)
    tracer = Tracer()
    async with client(certs_d) as http:
        with pytest.raises(httpx.ConnectError) as err:
            await http.get(
                f"https://localhost:{port}/v2/", extensions={"trace": tracer.trace_async}
            )
    assert not isinstance(err.value, ClientCertificateRejected)
    assert tracer.count("connection.connect_tcp.started") == 1
    assert rejections(caplog) == []


@BOTH_BACKENDS
async def test_dns_failure_does_not_rotate(
    certs_d: CertsD, leaves: Leaves, caplog: pytest.LogCaptureFixture
) -> None:
    directory = certs_d.host("registry.invalid:5000")
    for name, leaf in leaves.layout("wrong", "right"):
        directory.pair(name, leaf)
    tracer = Tracer()
    async with client(certs_d) as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(
                "https://registry.invalid:5000/v2/", extensions={"trace": tracer.trace_async}
            )
    assert tracer.count("connection.connect_tcp.started") == 1
    assert rejections(caplog) == []


@BOTH_BACKENDS
@pytest.mark.parametrize("tls", TLS_VERSIONS)
async def test_untrusted_server_certificate_does_not_rotate(
    tls: str,
    mtls_server: Any,
    certs_d: CertsD,
    leaves: Leaves,
    mtls_ca: CA,
    caplog: pytest.LogCaptureFixture,
) -> None:
    srv = mtls_server(reject="tls", tls_version=tls)
    directory = certs_d.host(srv.host).ca(mtls_ca)
    for name, leaf in leaves.layout("wrong", "right"):
        directory.pair(name, leaf)
    async with client(certs_d) as http:
        with pytest.raises(httpx.ConnectError) as err:
            await http.get(srv.url + "/v2/")
    assert "CERTIFICATE_VERIFY_FAILED" in chain_text(err.value)
    assert srv.connections == 1
    assert rejections(caplog) == []


# --- all rejected --------------------------------------------------------------------------------


@BOTH_BACKENDS
@pytest.mark.parametrize("tls", TLS_VERSIONS)
async def test_all_rejected_in_tls_raises(
    tls: str, mtls_server: Any, certs_d: CertsD, leaves: Leaves
) -> None:
    srv = mtls_server(reject="tls", tls_version=tls)
    pairs = leaves.layout("wrong", "wrong")
    host_dir(certs_d, srv, pairs)
    async with client(certs_d) as http:
        with pytest.raises(ClientCertificateRejected) as err:
            await http.get(srv.url + "/v2/")
    exc = err.value
    assert isinstance(exc, httpx.TransportError)
    assert [a.candidate for a in exc.attempts] == ["a-wrong", "b-wrong"]
    message = str(exc)
    assert str(certs_d.root / srv.host) in message
    assert "a-wrong: " in message
    assert "b-wrong: " in message
    assert message.count(shared.REFUSAL[tls]) == 2
    no_key_material(message + repr(exc), *(leaf for _, leaf in pairs))
    assert srv.connections == 2
    assert srv.requests == []


@pytest.mark.parametrize("tls", TLS_VERSIONS)
async def test_all_rejected_over_http_returns_the_last_response(
    tls: str, mtls_server: Any, certs_d: CertsD, leaves: Leaves
) -> None:
    srv = mtls_server(reject="status", status=403, tls_version=tls)
    host_dir(certs_d, srv, leaves.layout("wrong", "wrong"))
    async with client(certs_d) as http:
        response = await http.get(srv.url + "/v2/")
        assert response.status_code == 403
        assert "403 Forbidden" in response.text
        assert http._transport.winner(srv.url) is None  # type: ignore[attr-defined]
    assert [r.client_subject for r in srv.requests] == [subject("a-wrong"), subject("b-wrong")]


# --- sticky winner ----------------------------------------------------------------------------


@pytest.mark.parametrize("tls", TLS_VERSIONS)
async def test_sticky_winner_costs_no_handshake(
    tls: str, mtls_server: Any, certs_d: CertsD, leaves: Leaves
) -> None:
    srv = mtls_server(reject="tls", tls_version=tls)
    host_dir(certs_d, srv, leaves.layout("wrong", "wrong", "right"))
    async with client(certs_d) as http:
        assert (await http.get(srv.url + "/v2/")).status_code == 200
        assert (srv.handshakes, srv.failed_handshakes) == (1, 2)
        for _ in range(20):
            assert (await http.get(srv.url + "/v2/")).status_code == 200
        assert (srv.handshakes, srv.failed_handshakes, srv.connections) == (1, 2, 3)
    assert len({r.connection_id for r in srv.requests}) == 1


async def test_rejected_winner_tries_the_others_in_order(
    mtls_server: Any, certs_d: CertsD, leaves: Leaves
) -> None:
    allowed = {subject("b-right")}
    srv = mtls_server(
        reject="status", accept=lambda info: info is not None and info.subject in allowed
    )
    host_dir(certs_d, srv, leaves.layout("right", "right", "right"))
    async with client(certs_d) as http:
        await http.get(srv.url + "/v2/")
        assert http._transport.winner(srv.url) == "b-right"  # type: ignore[attr-defined]
        srv.reset_counters()
        allowed.clear()
        allowed.add(subject("c-right"))
        assert (await http.get(srv.url + "/v2/")).status_code == 200
        assert http._transport.winner(srv.url) == "c-right"  # type: ignore[attr-defined]
    assert [(r.client_subject, r.status) for r in srv.requests] == [
        (subject("b-right"), 403),
        (subject("a-right"), 403),
        (subject("c-right"), 200),
    ]


# --- request bodies ------------------------------------------------------------------------------


@BOTH_BACKENDS
async def test_stream_replayed_when_rejected_in_the_handshake(
    mtls_server: Any, certs_d: CertsD, leaves: Leaves
) -> None:
    srv = mtls_server(reject="tls", tls_version="1.2")
    host_dir(certs_d, srv, leaves.layout("wrong", "right"))
    async with client(certs_d) as http:
        response = await http.post(srv.url + "/upload", content=chunks())
    assert response.status_code == 200
    assert response.json()["body_length"] == len(BODY)
    assert [(r.client_subject, r.body) for r in srv.requests] == [(subject("b-right"), BODY)]


@BOTH_BACKENDS
async def test_stream_with_tls_13_alert_is_replayed_only_if_unsent(
    mtls_server: Any, certs_d: CertsD, leaves: Leaves
) -> None:
    srv = mtls_server(reject="tls", tls_version="1.3")
    host_dir(certs_d, srv, leaves.layout("wrong", "right"))
    async with client(certs_d) as http:
        outcome: Any
        try:
            outcome = await http.post(srv.url + "/upload", content=chunks())
        except ClientCertificateRejected as exc:
            outcome = exc
    if isinstance(outcome, ClientCertificateRejected):
        assert "could not be replayed" in str(outcome)
        assert srv.requests == []
    else:
        assert outcome.status_code == 200
        assert [(r.client_subject, r.body) for r in srv.requests] == [(subject("b-right"), BODY)]


@BOTH_BACKENDS
async def test_stream_sent_then_rejected_raises(
    mtls_ca: CA, certs_d: CertsD, leaves: Leaves, caplog: pytest.LogCaptureFixture
) -> None:
    with StubServer(mtls_ca.issue_server(), read_then_reset) as stub:
        host_dir(certs_d, stub, leaves.layout("wrong", "right"))
        async with client(certs_d) as http:
            with pytest.raises(ClientCertificateRejected) as err:
                await http.post(stub.url + "/upload", content=chunks())
        assert stub.connections == 1
        assert stub.bodies == [BODY]
    assert "could not be replayed" in str(err.value)
    assert [a.candidate for a in err.value.attempts] == ["a-wrong"]
    assert any("could not be replayed" in line for line in warnings_logged(caplog))


@pytest.mark.parametrize("tls", TLS_VERSIONS)
async def test_stream_sent_then_rejected_over_http_returns_the_response(
    tls: str, mtls_server: Any, certs_d: CertsD, leaves: Leaves
) -> None:
    srv = mtls_server(reject="http", tls_version=tls)
    host_dir(certs_d, srv, leaves.layout("wrong", "right"))
    async with client(certs_d) as http:
        response = await http.post(srv.url + "/upload", content=chunks())
    assert response.status_code == 400
    assert [(r.client_subject, r.body) for r in srv.requests] == [(subject("a-wrong"), BODY)]


@pytest.mark.parametrize("tls", TLS_VERSIONS)
async def test_bytes_body_is_replayed(
    tls: str, mtls_server: Any, certs_d: CertsD, leaves: Leaves
) -> None:
    srv = mtls_server(reject="http", tls_version=tls)
    host_dir(certs_d, srv, leaves.layout("wrong", "right"))
    async with client(certs_d) as http:
        response = await http.put(srv.url + "/upload", content=BODY)
    assert response.status_code == 200
    assert [(r.client_subject, r.body) for r in srv.requests] == [
        (subject("a-wrong"), BODY),
        (subject("b-right"), BODY),
    ]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes (os.mkfifo)")
async def test_a_folder_that_failed_to_load_is_read_again_only_at_the_next_refresh(
    mtls_server: Any, certs_d: CertsD, leaves: Leaves, monkeypatch: pytest.MonkeyPatch
) -> None:
    srv = mtls_server(reject="tls")
    directory = host_dir(certs_d, srv, leaves.layout("right"))
    os.mkfifo(directory / "z-pipe.crt")
    reads = count_folder_reads(monkeypatch)
    refresh = 0.3
    async with client(certs_d, refresh=refresh) as http:
        errors = []
        for _ in range(3):
            with pytest.raises(CertsDirTransportError) as err:
                await http.get(srv.url + "/v2/")
            errors.append(err.value)
        loaded = time.monotonic()
        assert len(reads) == 1
        same_error_for_each(errors, "z-pipe.crt", "named pipe (FIFO)")
        directory.remove("z-pipe.crt")
        if time.monotonic() - loaded < refresh:
            with pytest.raises(CertsDirTransportError):
                await http.get(srv.url + "/v2/")
            assert len(reads) == 1
        await anyio.sleep(refresh + 0.05)
        assert (await http.get(srv.url + "/v2/")).status_code == 200
    assert len(reads) == 2
    assert srv.connections == 1


@BOTH_BACKENDS
async def test_a_due_look_at_the_folder_is_taken_by_one_of_the_concurrent_requests(
    mtls_server: Any, certs_d: CertsD, leaves: Leaves, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the folder is due for a look, one request looks (in a worker thread) and the
    others use the last good load meanwhile, instead of each waiting for a worker thread and
    the host's lock: with 16 tasks that cost a 64-task steady state 3-5% of its throughput."""
    srv = mtls_server(reject="tls")
    host_dir(certs_d, srv, leaves.layout("right"))
    looks: list[float] = []
    refresh = HostState.refresh

    def counted(state: HostState[Any], now: float) -> None:
        looks.append(now)
        refresh(state, now)

    monkeypatch.setattr(HostState, "refresh", counted)
    async with client(certs_d, refresh=0.2) as http:
        assert (await http.get(srv.url + "/v2/")).status_code == 200
        await anyio.sleep(0.25)
        looks.clear()
        answers: list[int] = []

        async def get() -> None:
            answers.append((await http.get(srv.url + "/v2/")).status_code)

        async with anyio.create_task_group() as group:
            for _ in range(16):
                group.start_soon(get)
    assert answers == [200] * 16
    assert len(looks) == 1


# --- changes on disk ---------------------------------------------------------------------------


@BOTH_BACKENDS
async def test_folder_reads_and_context_builds_happen_off_the_event_loop(
    mtls_server: Any, certs_d: CertsD, leaves: Leaves, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading a host folder and building a candidate's context block: tens of milliseconds
    for a large bundle (issue 15: 40 ms to read 4,000 anchors, 80 ms to prepare them), which
    would stall every task of the loop. None of it may run on the loop's thread: not the
    first load, not the check for changes, not a reload, not a context build."""
    srv = mtls_server(reject="tls")
    directory = host_dir(certs_d, srv, leaves.layout("wrong", "right"))
    loop_thread = threading.get_ident()
    on_loop: dict[str, list[bool]] = {}

    def spy(owner: Any, name: str) -> None:
        original = getattr(owner, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            on_loop.setdefault(name, []).append(threading.get_ident() == loop_thread)
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, call)

    spy(Layout, "read")
    spy(Layout, "unchanged")
    spy(loader_module._ContextMaker, "_build")
    async with client(certs_d, refresh=0) as http:
        assert (await http.get(srv.url + "/v2/")).status_code == 200
        directory.pair("c-extra", leaves.get("wrong", "c-extra"))  # the next request reloads
        assert (await http.get(srv.url + "/v2/")).status_code == 200
    # Two loads, one check that found the change, two contexts (a-wrong's, b-right's).
    assert {name: (len(calls), any(calls)) for name, calls in on_loop.items()} == {
        "read": (2, False),
        "unchanged": (1, False),
        "_build": (2, False),
    }


async def test_rotation_on_disk_is_seen_at_once_with_refresh_0(
    mtls_server: Any, certs_d: CertsD, leaves: Leaves
) -> None:
    srv = mtls_server(reject="tls")
    directory = host_dir(certs_d, srv, [("a-old", leaves.get("right", "a-old"))])
    async with client(certs_d, refresh=0) as http:
        await http.get(srv.url + "/v2/")
        directory.pair("b-new", leaves.get("right", "b-new")).remove("a-old.cert").remove(
            "a-old.key"
        )
        await http.get(srv.url + "/v2/")
        assert http._transport.winner(srv.url) == "b-new"  # type: ignore[attr-defined]
    assert [r.client_subject for r in srv.requests] == [subject("a-old"), subject("b-new")]


async def test_rotation_on_disk_is_seen_within_refresh(
    mtls_server: Any, certs_d: CertsD, leaves: Leaves
) -> None:
    refresh = 0.3
    srv = mtls_server(reject="tls")
    directory = host_dir(certs_d, srv, [("a-old", leaves.get("right", "a-old"))])
    async with client(certs_d, refresh=refresh) as http:
        await http.get(srv.url + "/v2/")
        loaded = time.monotonic()
        directory.pair("b-new", leaves.get("right", "b-new")).remove("a-old.cert").remove(
            "a-old.key"
        )
        await http.get(srv.url + "/v2/")
        within = time.monotonic() - loaded < refresh
        await anyio.sleep(refresh + 0.05)
        await http.get(srv.url + "/v2/")
    seen = [r.client_subject for r in srv.requests]
    if within:
        assert seen == [subject("a-old"), subject("a-old"), subject("b-new")]
    assert seen[-1] == subject("b-new")


async def test_broken_change_keeps_the_last_good_load_and_warns_once(
    mtls_server: Any, certs_d: CertsD, leaves: Leaves, caplog: pytest.LogCaptureFixture
) -> None:
    srv = mtls_server(reject="tls")
    directory = host_dir(certs_d, srv, leaves.layout("wrong", "right"))
    async with client(certs_d, refresh=0) as http:
        await http.get(srv.url + "/v2/")
        directory.key_only("z-orphan", leaves.get("right", "z"))
        for _ in range(3):
            assert (await http.get(srv.url + "/v2/")).status_code == 200
        broken = [line for line in warnings_logged(caplog) if "broken" in line]
        assert len(broken) == 1
        assert "missing client certificate z-orphan.cert for key z-orphan.key" in broken[0]
        directory.remove("z-orphan.key")
        await http.get(srv.url + "/v2/")
        directory.key_only("z-orphan", leaves.get("right", "z"))
        await http.get(srv.url + "/v2/")
        assert len([line for line in warnings_logged(caplog) if "broken" in line]) == 2
    assert srv.failed_handshakes == 1
    assert {r.client_subject for r in srv.requests} == {subject("b-right")}


@pytest.mark.parametrize(("recheck", "tried_again"), [(0, 1), (60, 0)])
async def test_winner_is_forgotten_when_its_files_change(
    recheck: float, tried_again: int, mtls_server: Any, certs_d: CertsD, leaves: Leaves
) -> None:
    srv = mtls_server(reject="tls")
    directory = host_dir(certs_d, srv, leaves.layout("wrong", "right"))
    async with client(certs_d, refresh=0, recheck=recheck) as http:
        transport: AsyncTransport = http._transport  # type: ignore[assignment]
        await http.get(srv.url + "/v2/")
        assert (transport.winner(srv.url), srv.failed_handshakes) == ("b-right", 1)
        directory.pair("c-extra", leaves.get("wrong", "c-extra"))
        await http.get(srv.url + "/v2/")
        assert (transport.winner(srv.url), srv.failed_handshakes) == ("b-right", 1)
        directory.pair("b-right", leaves.get("right", "b-right-renewed"))
        await http.get(srv.url + "/v2/")
        assert (transport.winner(srv.url), srv.failed_handshakes) == ("b-right", 1 + tried_again)
    assert srv.requests[-1].client_subject == subject("b-right-renewed")


# --- names, IPv6 -------------------------------------------------------------------------------


async def test_ip_and_ipv6_folders(mtls_server: Any, certs_d: CertsD, leaves: Leaves) -> None:
    if not ipv6_loopback():
        pytest.skip("IPv6 loopback (::1) is not available here")
    srv = mtls_server(reject="tls", ipv6=True)
    host_dir(certs_d, srv, leaves.layout("wrong", "right"), name=f"[::1]:{srv.port}")
    host_dir(certs_d, srv, leaves.layout("right"), name=f"127.0.0.1:{srv.port}")
    async with client(certs_d) as http:
        assert (await http.get(srv.url_v6 + "/v2/")).status_code == 200
        assert (await http.get(srv.url_ip + "/v2/")).status_code == 200
    assert [r.client_subject for r in srv.requests] == [subject("b-right"), subject("a-right")]


# --- concurrency, close, options ------------------------------------------------------------------


async def test_tasks_share_one_transport(mtls_server: Any, certs_d: CertsD, leaves: Leaves) -> None:
    tasks, per_task = 32, 50
    srv = mtls_server(reject="tls", max_workers=2 * tasks)
    host_dir(certs_d, srv, leaves.layout("wrong", "right"))
    statuses: list[int] = []

    # Enough keep-alive room for every task: otherwise connections past the pool's default
    # (20) are closed after use and reopened, each with a handshake.
    # A long keep-alive expiry: with one process hosting the server threads and the tasks,
    # a connection can idle past httpx's 5 s default on a busy machine.
    limits = httpx.Limits(
        max_connections=tasks, max_keepalive_connections=tasks, keepalive_expiry=60
    )
    async with client(certs_d, limits=limits) as http:

        async def work() -> None:
            for _ in range(per_task):
                statuses.append((await http.get(srv.url + "/v2/")).status_code)

        async with anyio.create_task_group() as group:
            for _ in range(tasks):
                group.start_soon(work)
    assert statuses == [200] * tasks * per_task
    assert srv.failed_handshakes <= tasks
    assert srv.handshakes <= tasks


async def test_aclose_closes_every_pool(mtls_server: Any, certs_d: CertsD, leaves: Leaves) -> None:
    first = mtls_server(reject="http")
    second = mtls_server(reject="tls")
    host_dir(certs_d, first, leaves.layout("wrong", "right"))
    host_dir(certs_d, second, leaves.layout("right", "wrong"))
    http = httpx.AsyncClient(transport=AsyncTransport(root=certs_d.root))
    for _ in range(3):
        await http.get(first.url + "/v2/")
        await http.get(second.url + "/v2/")
    assert client_sockets(first.port, second.port) >= 2
    await http.aclose()
    assert client_sockets(first.port, second.port) == 0


class Interrupt(BaseException):
    """Stands for a cancellation or KeyboardInterrupt: not an ``Exception``."""


async def interrupt_on_send(name: str, info: dict[str, Any]) -> None:
    if name == "http11.send_request_headers.started":
        raise Interrupt


async def test_aclose_after_an_interrupted_request(
    mtls_server: Any, certs_d: CertsD, leaves: Leaves
) -> None:
    srv = mtls_server(reject="tls")
    host_dir(certs_d, srv, leaves.layout("right"))
    http = client(certs_d)
    await http.get(srv.url + "/v2/")
    with pytest.raises(Interrupt):
        await http.get(srv.url + "/v2/", extensions={"trace": interrupt_on_send})
    assert (await http.get(srv.url + "/v2/")).status_code == 200
    assert client_sockets(srv.port) == 1
    await http.aclose()
    assert client_sockets(srv.port) == 0


def stall_on_path(stalled: threading.Event) -> Callable[[StubServer, int, socket.socket], None]:
    """A script: answer 200 (keep-alive), except ``/stall``, which is never answered;
    ``stalled`` is set once a ``/stall`` request has been read."""

    def script(server: StubServer, number: int, raw: socket.socket) -> None:
        tls = server.handshake(raw)
        with tls.makefile("rb") as reader:
            while True:
                line = reader.readline()
                if not line:
                    return
                stall = b"/stall" in line
                while line not in (b"\r\n", b""):
                    line = reader.readline()
                if stall:
                    stalled.set()
                    server.stopping.wait(30)
                    return
                tls.sendall(OK_RESPONSE)

    return script


@BOTH_BACKENDS
async def test_aclose_after_a_cancelled_request(
    mtls_ca: CA, certs_d: CertsD, leaves: Leaves
) -> None:
    """A request cancelled by its scope while another one completes: ``aclose()`` still
    closes every connection.

    The scope is cancelled only once the server holds the stalled request, never on a
    timer: a cancel that lands during the TLS handshake leaves that connection's socket
    open until garbage collection (httpcore's anyio backend closes it only on ``Exception``,
    and cancellation is not one), which made this test count 2 sockets on a busy machine
    when a 0.3 s timer ran out before the handshake was done.
    """
    stalled = threading.Event()
    with StubServer(mtls_ca.issue_server(), stall_on_path(stalled)) as stub:
        host_dir(certs_d, stub, leaves.layout("right"))
        http = client(certs_d)
        scope = anyio.CancelScope()
        # A known winner first: on a cold host the stalled request would hold the search
        # for the winner and the other request would wait for it (up to its pool timeout).
        assert (await http.get(stub.url + "/v2/")).status_code == 200

        async def cancelled() -> None:
            with scope:
                await http.get(stub.url + "/stall")

        async with anyio.create_task_group() as group:
            group.start_soon(cancelled)
            assert await anyio.to_thread.run_sync(stalled.wait, 10.0)
            assert (await http.get(stub.url + "/v2/")).status_code == 200
            scope.cancel()
        assert client_sockets(stub.port) == 1
        await http.aclose()
        assert client_sockets(stub.port) == 0


async def test_aclose_while_a_response_is_open(
    mtls_server: Any, certs_d: CertsD, leaves: Leaves
) -> None:
    srv = mtls_server(reject="tls")
    host_dir(certs_d, srv, leaves.layout("wrong", "right"))
    http = client(certs_d)
    async with http.stream("GET", srv.url + "/v2/_catalog") as response:
        await http.aclose()
        assert client_sockets(srv.port) == 1  # still open: the response uses it
        assert await response.aread() == b'{"repositories":["team/app"]}'
    assert client_sockets(srv.port) == 0  # read to the end: closed by its last user


async def test_transport_options_reach_the_inner_transports(
    mtls_server: Any, certs_d: CertsD, leaves: Leaves
) -> None:
    srv = mtls_server(reject="tls")
    host_dir(certs_d, srv, leaves.layout("wrong", "right"))
    tracer = Tracer()
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with client(
        certs_d, local_address="127.0.0.2", http2=False, limits=limits, retries=0
    ) as http:
        response = await http.get(srv.url + "/v2/", extensions={"trace": tracer.trace_async})
        assert response.status_code == 200
    assert tracer.client_addr[0] == "127.0.0.2"


async def test_retries_reach_the_inner_transports(certs_d: CertsD, leaves: Leaves) -> None:
    port = closed_port()
    directory = certs_d.host(f"localhost:{port}")
    for name, leaf in leaves.layout("wrong", "right"):
        directory.pair(name, leaf)
    tracer = Tracer()
    async with client(certs_d, retries=2) as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(
                f"https://localhost:{port}/v2/", extensions={"trace": tracer.trace_async}
            )
    assert tracer.count("connection.connect_tcp.started") == 3


@_watch.sends
async def _marked_get(sent: _watch.Watch, http: httpx.AsyncClient, url: str) -> httpx.Response:
    return await http.get(url)


@BOTH_BACKENDS
@pytest.mark.parametrize("tls", TLS_VERSIONS)
@pytest.mark.parametrize("registration", ["sends", "Watch"])
async def test_watch_follows_the_task_that_opens_the_connection(
    tls: str, registration: str, mtls_server: Any, leaves: Leaves
) -> None:
    """Two tasks, two connections: each attempt sees its own handshake, not the other's,
    found up the task's own awaits (a marked coroutine) or in its context (a ``Watch``)."""
    srv = mtls_server(reject="tls", tls_version=tls)
    context = _watch.watched(srv.client_context(leaves.get("right", "b-right")))
    watches: list[_watch.Watch] = []

    async with httpx.AsyncClient(verify=context) as http:

        async def attempt() -> None:
            if registration == "sends":
                watch = _watch.Watch()
                response = await _marked_get(watch, http, srv.url + "/v2/")
            else:
                with _watch.Watch() as watch:
                    response = await http.get(srv.url + "/v2/")
            assert response.status_code == 200
            watches.append(watch)

        async with anyio.create_task_group() as group:
            group.start_soon(attempt)
            group.start_soon(attempt)
    assert srv.handshakes == 2
    assert [(w.fresh, w.tls_version, w.responded) for w in watches] == [
        (True, f"TLSv{tls}", True)
    ] * 2


@BOTH_BACKENDS
async def test_cancelled_while_reading_a_rejection_page_gives_the_candidate_back(
    mtls_ca: CA, certs_d: CertsD, leaves: Leaves
) -> None:
    with StubServer(mtls_ca.issue_server(), nginx_400_then_stall) as stub:
        host_dir(certs_d, stub, leaves.layout("wrong", "right"))
        async with client(certs_d) as http:
            with anyio.move_on_after(0.3) as scope:
                await http.get(stub.url + "/v2/")
            assert scope.cancelled_caught
            assert slot_users(http) == [0, 0]
            assert client_sockets(stub.port) == 0
