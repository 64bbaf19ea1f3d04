"""Faults: servers that misbehave in every way that is *not* a client-certificate rejection.

Each test starts a small raw socket server on 127.0.0.1 (a thread per connection, stopped and
joined at teardown) that resets during the handshake, stalls, sends garbage, presents an
expired or wrong-host certificate, or closes in the middle of its response. The host
directory holds two client pairs, so a wrong verdict would show as a second attempt. For
each fault, with the sync and the async transport:

* the request fails at once with the httpx exception that fault means;
* no other certificate is tried: the server saw exactly one connection and the
  ``dockercerts`` logger said nothing about a rejected certificate;
* the same transport instance then succeeds against a good ``MTLSServer`` (another host
  directory, the same ``Transport``).
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import logging
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import anyio
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import dockercerts
from dockercerts.testing import CA, CertsD, Leaf, load_cert_chain

pytestmark = pytest.mark.reliability

TIMEOUT = 0.5  # seconds: the client's timeout for the stalling servers
AT_ONCE = 3.0  # seconds: a generous bound for "immediately" on a loaded CI machine
MAX_HOLD = 10.0  # seconds: no handler ever keeps a connection longer than this


# --------------------------------------------------------------------------- the servers

Handler = Callable[[socket.socket, "FaultServer"], None]


class FaultServer:
    """A loopback TCP server whose ``handler`` misbehaves on every connection it accepts."""

    def __init__(self, handler: Handler, tls: Optional[ssl.SSLContext] = None) -> None:
        self.handler = handler
        self.tls = tls
        self.connections = 0
        self.errors: list[str] = []
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self._listener.settimeout(0.05)
        self.port = self._listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept, name=f"fault-{self.port}")
        self._acceptor.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/v2/"

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                raw, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            raw.settimeout(MAX_HOLD)
            worker = threading.Thread(target=self._run, args=(raw,), daemon=True)
            with self._lock:
                self.connections += 1
                self._sockets.append(raw)
                self._threads.append(worker)
            worker.start()

    def _run(self, raw: socket.socket) -> None:
        try:
            self.handler(raw, self)
        except (OSError, ssl.SSLError):
            pass  # the client gave up, or stop() closed the socket
        except Exception as exc:  # pragma: no cover - a bug in the test's own server
            self.errors.append(repr(exc))
        finally:
            raw.close()

    def wrap(self, raw: socket.socket) -> ssl.SSLSocket:
        assert self.tls is not None
        return self.tls.wrap_socket(raw, server_side=True)

    def stop(self) -> None:
        self.stopping.set()
        self._acceptor.join(MAX_HOLD)
        self._listener.close()
        with self._lock:
            sockets, threads = list(self._sockets), list(self._threads)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in threads:
            thread.join(MAX_HOLD)
        assert not self._acceptor.is_alive()
        assert not any(t.is_alive() for t in threads)
        assert not self.errors, self.errors


def read_request(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def drain(sock: socket.socket, server: FaultServer) -> None:
    """Read until the client closes (or the server stops), so no unread byte causes a RST."""
    sock.settimeout(0.1)
    deadline = time.monotonic() + MAX_HOLD
    while not server.stopping.is_set() and time.monotonic() < deadline:
        try:
            if not sock.recv(65536):
                return
        except socket.timeout:
            continue


def reset_in_handshake(raw: socket.socket, server: FaultServer) -> None:
    raw.recv(65536)  # the ClientHello: the handshake has started
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    raw.close()  # SO_LINGER 0: the kernel answers with a TCP reset


def stall(raw: socket.socket, server: FaultServer) -> None:
    server.stopping.wait(MAX_HOLD)  # accept and never answer: not even the handshake


def garbage(raw: socket.socket, server: FaultServer) -> None:
    raw.recv(65536)
    raw.sendall(b"SSH-2.0-OpenSSH_9.6\r\n" + bytes(range(256)))
    drain(raw, server)


def handshake_only(raw: socket.socket, server: FaultServer) -> None:
    """Expired or wrong-host certificate: the client refuses it in the handshake."""
    tls = server.wrap(raw)
    drain(tls, server)


def stall_after_request(raw: socket.socket, server: FaultServer) -> None:
    tls = server.wrap(raw)
    read_request(tls)
    server.stopping.wait(MAX_HOLD)


def respond_then_close(payload: bytes) -> Handler:
    def handler(raw: socket.socket, server: FaultServer) -> None:
        tls = server.wrap(raw)
        read_request(tls)
        tls.sendall(payload)
        tls.close()

    return handler


PARTIAL_HEADERS = b"HTTP/1.1 200 OK\r\nContent-Type: application/js"
PARTIAL_BODY = b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"repositories":'


# --------------------------------------------------------------------------- material


def expired_server(ca: CA) -> Leaf:
    """A server certificate for 127.0.0.1/localhost that expired yesterday, signed by ``ca``."""
    key = ec.generate_private_key(ec.SECP256R1())
    signer = serialization.load_pem_private_key(ca.key_pem(), password=None)
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    start, end = now - datetime.timedelta(days=30), now - datetime.timedelta(days=1)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .sign(signer, hashes.SHA256())
    )
    return Leaf(cert, key, issuer=ca, key_type="ec", not_before=start, not_after=end)


def server_context(leaf: Leaf, tls_version: Optional[str] = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    load_cert_chain(ctx, leaf)
    if tls_version == "1.2":
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    elif tls_version == "1.3":
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


@pytest.fixture(scope="module")
def server_ca() -> CA:
    return CA(name="fault server CA")


@pytest.fixture(scope="module")
def pairs(mtls_ca: CA) -> tuple[Leaf, Leaf]:
    return mtls_ca.issue_client("first"), mtls_ca.issue_client("second")


@dataclass(frozen=True)
class Fault:
    handler: Handler
    tls: Optional[str]  # None: raw TCP; "good", "expired", "wrong-host": the certificate shown
    expected: type[httpx.TransportError]
    tls_version: Optional[str] = None


FAULTS = {
    "reset-in-handshake": Fault(reset_in_handshake, None, httpx.ConnectError),
    "stall-before-handshake": Fault(stall, None, httpx.ConnectTimeout),
    "stall-after-request": Fault(stall_after_request, "good", httpx.ReadTimeout),
    "garbage": Fault(garbage, None, httpx.ConnectError),
    "expired-server-cert": Fault(handshake_only, "expired", httpx.ConnectError),
    "wrong-host-server-cert": Fault(handshake_only, "wrong-host", httpx.ConnectError),
    "close-mid-body": Fault(respond_then_close(PARTIAL_BODY), "good", httpx.RemoteProtocolError),
    "close-before-response-tls12": Fault(
        respond_then_close(b""), "good", httpx.RemoteProtocolError, "1.2"
    ),
    "close-mid-headers-tls12": Fault(
        respond_then_close(PARTIAL_HEADERS), "good", httpx.RemoteProtocolError, "1.2"
    ),
    "close-mid-headers-tls13": Fault(
        respond_then_close(PARTIAL_HEADERS), "good", httpx.RemoteProtocolError, "1.3"
    ),
}


# Both bugs are described in full in docs/reliability.md ("Bugs found").
def fault_params() -> list[Any]:
    params = []
    for name in FAULTS:
        params.append(pytest.param(name, id=name))
    return params


@pytest.fixture
def start_fault(server_ca: CA) -> Iterator[Callable[[Fault], FaultServer]]:
    started: list[FaultServer] = []

    def start(fault: Fault) -> FaultServer:
        ctx = None
        if fault.tls == "good":
            ctx = server_context(server_ca.issue_server(), fault.tls_version)
        elif fault.tls == "expired":
            ctx = server_context(expired_server(server_ca))
        elif fault.tls == "wrong-host":
            ctx = server_context(server_ca.issue_server("other.example"))
        server = FaultServer(fault.handler, ctx)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


# --------------------------------------------------------------------------- the tests


@dataclass
class Outcome:
    error: Optional[BaseException] = None
    elapsed: float = 0.0
    good_status: int = 0
    good_winner: Optional[str] = None
    fault_winner: Optional[str] = "unset"


def run_sync(root: Path, fault_url: str, good_url: str) -> Outcome:
    outcome = Outcome()
    transport = dockercerts.Transport(root=root, refresh=0)
    with httpx.Client(transport=transport, timeout=TIMEOUT) as client:
        started = time.monotonic()
        try:
            client.get(fault_url)
        except httpx.TransportError as exc:
            outcome.error = exc
        outcome.elapsed = time.monotonic() - started
        outcome.fault_winner = transport.winner(fault_url)
        client.timeout = httpx.Timeout(10.0)
        outcome.good_status = client.get(good_url).status_code
        outcome.good_winner = transport.winner(good_url)
    return outcome


def run_async(root: Path, fault_url: str, good_url: str) -> Outcome:
    outcome = Outcome()

    async def main() -> None:
        transport = dockercerts.AsyncTransport(root=root, refresh=0)
        async with httpx.AsyncClient(transport=transport, timeout=TIMEOUT) as client:
            started = time.monotonic()
            try:
                await client.get(fault_url)
            except httpx.TransportError as exc:
                outcome.error = exc
            outcome.elapsed = time.monotonic() - started
            outcome.fault_winner = transport.winner(fault_url)
            client.timeout = httpx.Timeout(10.0)
            outcome.good_status = (await client.get(good_url)).status_code
            outcome.good_winner = transport.winner(good_url)

    anyio.run(main)
    return outcome


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("name", fault_params())
def test_fault_is_raised_at_once_without_rotation(
    name: str,
    mode: str,
    server_ca: CA,
    pairs: tuple[Leaf, Leaf],
    certs_d: CertsD,
    start_fault: Callable[[Fault], FaultServer],
    mtls_server: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fault = FAULTS[name]
    first, second = pairs
    server = start_fault(fault)
    certs_d.host(server.host).ca(server_ca).pair("first", first).pair("second", second)
    good = mtls_server(reject="tls")
    certs_d.host(good.host).ca(good.server_ca).pair("first", first).pair("second", second)
    caplog.set_level(logging.DEBUG, logger="dockercerts")

    run = run_sync if mode == "sync" else run_async
    outcome = run(certs_d.root, server.url, good.url + "/v2/")

    rejected = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
    assert type(outcome.error) is fault.expected, repr(outcome.error)
    assert not isinstance(outcome.error, dockercerts.ClientCertificateRejected)
    assert outcome.elapsed < AT_ONCE
    assert rejected == []
    assert server.connections == 1
    assert outcome.fault_winner is None or name == "close-mid-body"
    # The same transport instance goes on working with another host.
    assert outcome.good_status == 200
    assert outcome.good_winner == "first"
    assert [r.client_subject for r in good.requests] == ["CN=first"]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_tls13_close_before_any_byte_counts_as_a_rejection(
    mode: str,
    server_ca: CA,
    pairs: tuple[Leaf, Leaf],
    certs_d: CertsD,
    start_fault: Callable[[Fault], FaultServer],
    mtls_server: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """By design (the README's verdict layers): with TLS 1.3 a server that rejects the
    certificate may only close the connection, so an empty close on a fresh 1.3 connection
    moves on. This documents the one fault that does rotate, and that the transport
    survives it."""
    fault = Fault(respond_then_close(b""), "good", httpx.RemoteProtocolError, "1.3")
    first, second = pairs
    server = start_fault(fault)
    certs_d.host(server.host).ca(server_ca).pair("first", first).pair("second", second)
    good = mtls_server(reject="tls")
    certs_d.host(good.host).ca(good.server_ca).pair("first", first)
    caplog.set_level(logging.INFO, logger="dockercerts")

    run = run_sync if mode == "sync" else run_async
    outcome = run(certs_d.root, server.url, good.url + "/v2/")

    assert isinstance(outcome.error, dockercerts.ClientCertificateRejected)
    assert [a.candidate for a in outcome.error.attempts] == ["first", "second"]
    assert server.connections == 2
    assert sum("rejected" in r.getMessage() for r in caplog.records) == 2
    assert outcome.good_status == 200
