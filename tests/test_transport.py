"""The sync transport, through real handshakes with ``MTLSServer`` (and a few scripted stubs).

Every test names its certs.d layout by the role of each pair, in Docker's try order:
``a-wrong``, ``b-right`` ... (CN = the pair's name), so "the right pair sorts second" reads
as it is. ``right`` pairs come from ``mtls_ca`` (the server's client CA), ``wrong`` ones from
another CA the handshake lets through in ``"http"``/``"status"`` modes (the plugin's
``mtls_ca_factory``), so ``reject=`` alone decides how a wrong pair is refused.

The async twins live in ``test_transport_async.py`` and reuse the helpers defined here.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib.util
import logging
import os
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Optional

import httpx
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from dockercerts import (
    DOCKER,
    AsyncTransport,
    Attempt,
    CertsDirError,
    CertsDirReadError,
    CertsDirTransportError,
    ClientCertificateRejected,
    InvalidHostError,
    KeyPairError,
    MissingKeyError,
    Transport,
    _watch,
    docker_host_names,
)
from dockercerts._hosts import HostState as _HostState
from dockercerts._options import options as _options
from dockercerts._slots import Slot
from dockercerts.loader import Candidate
from dockercerts.rejection import TLS13_REFUSAL
from dockercerts.testing import CA, CertsD, HostDir, Leaf, MTLSServer, set_tls_version
from dockercerts.testing.pki import load_cert_chain

TLS_VERSIONS = ("1.2", "1.3")
# How a certificate refused in TLS reads, by version (the alert is in the attempt record).
REFUSAL = {"1.2": "TLS alert unknown_ca", "1.3": TLS13_REFUSAL}
REPO = Path(__file__).resolve().parent.parent

# --- helpers shared with test_transport_async.py ----------------------------------------------


class Leaves:
    """Client certificates by pair name, made once per session: ``right`` from the server's
    client CA, ``wrong`` from a CA it refuses."""

    def __init__(self, right_ca: CA, wrong_ca: CA) -> None:
        self.right_ca, self.wrong_ca = right_ca, wrong_ca
        self._made: dict[tuple[str, str], Leaf] = {}
        self._lock = threading.Lock()

    def get(self, role: str, name: str) -> Leaf:
        with self._lock:
            key = (role, name)
            if key not in self._made:
                ca = self.right_ca if role == "right" else self.wrong_ca
                self._made[key] = ca.issue_client(name)
            return self._made[key]

    def layout(self, *roles: str) -> list[tuple[str, Leaf]]:
        """``layout("wrong", "right")`` -> ``[("a-wrong", ...), ("b-right", ...)]``."""
        pairs = []
        for index, role in enumerate(roles):
            name = f"{chr(ord('a') + index)}-{role}"
            pairs.append((name, self.get(role if role == "right" else "wrong", name)))
        return pairs


@pytest.fixture(scope="session")
def wrong_ca(mtls_ca_factory: Any) -> CA:
    return mtls_ca_factory(name="refused client CA")  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def leaves(mtls_ca: CA, wrong_ca: CA) -> Leaves:
    return Leaves(mtls_ca, wrong_ca)


def host_dir(certs_d: CertsD, srv: Any, pairs: list[tuple[str, Leaf]], name: str = "") -> HostDir:
    """``certs_d/<srv.host>/``: the server's CA as ``ca.crt`` and ``pairs``."""
    directory = certs_d.host(name or srv.host).ca(srv.server_ca)
    for pair_name, leaf in pairs:
        directory.pair(pair_name, leaf)
    return directory


def subject(name: str) -> str:
    return f"CN={name}"


def rejections(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The transport's "candidate rejected" log lines, in order."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "dockercerts" and " rejected (" in r.getMessage()
    ]


def warnings_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "dockercerts" and r.levelno == logging.WARNING
    ]


class Tracer:
    """An httpx ``trace`` callback that keeps the event names (the transport forwards them)."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def __call__(self, name: str, info: dict[str, Any]) -> None:
        self.events.append(name)
        if name == "connection.connect_tcp.complete":
            stream = info.get("return_value")
            if stream is not None:
                self.client_addr = stream.get_extra_info("client_addr")

    async def trace_async(self, name: str, info: dict[str, Any]) -> None:
        self(name, info)

    def count(self, name: str) -> int:
        return self.events.count(name)


def chain_text(exc: BaseException) -> str:
    """The messages along ``exc``'s cause/context chain (trio leaves the outer one empty)."""
    texts = []
    current: Optional[BaseException] = exc
    while current is not None:
        texts.append(f"{type(current).__name__}: {current}")
        current = current.__cause__ or current.__context__
    return "\n".join(texts)


def no_key_material(text: str, *leaf_list: Leaf) -> None:
    assert "PRIVATE KEY" not in text
    for leaf in leaf_list:
        for line in leaf.key_pem().decode().splitlines()[1:-1]:
            assert line not in text


def chunks(total: int = 3, size: int = 1000) -> Iterator[bytes]:
    for index in range(total):
        yield bytes([ord("a") + index]) * size


BODY = b"".join(chunks())


class ChallengeServer(MTLSServer):
    """``MTLSServer`` whose every 401 carries a Bearer challenge, as a registry's does."""

    def _respond(self, request: Any, info: Any) -> tuple[int, bytes, bool]:
        status, payload, close = super()._respond(request, info)  # type: ignore[misc]
        if status == 401 and b"WWW-Authenticate" not in payload:
            first, sep, rest = payload.partition(b"\r\n")
            challenge = b'WWW-Authenticate: Bearer realm="https://127.0.0.1/token"'
            payload = first + sep + challenge + sep + rest
        return status, payload, close


class StubServer:
    """A scripted TLS server on 127.0.0.1 that asks for no client certificate.

    ``script(server, number, raw_socket)`` serves connection ``number`` (from 1); it may call
    :meth:`handshake`, :func:`read_request`, :func:`reset` ... ``stop()`` closes everything.
    """

    def __init__(
        self,
        leaf: Leaf,
        script: Callable[[StubServer, int, socket.socket], None],
        tls_version: Optional[str] = None,
    ) -> None:
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        set_tls_version(self.ctx, tls_version)  # type: ignore[arg-type]
        load_cert_chain(self.ctx, leaf)
        self.server_ca = leaf.issuer.root
        self.script = script
        self.stopping = threading.Event()
        self.connections = 0
        self.bodies: list[bytes] = []
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept, daemon=True)

    @property
    def host(self) -> str:
        return f"localhost:{self.port}"

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    def __enter__(self) -> StubServer:
        self._acceptor.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self._acceptor.join(5)
        with self._lock:
            socks = list(self._socks)
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in self._threads:
            thread.join(5)

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                number = self.connections
                self._socks.append(raw)
            thread = threading.Thread(target=self._run, args=(number, raw), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _run(self, number: int, raw: socket.socket) -> None:
        with contextlib.suppress(OSError):
            self.script(self, number, raw)

    def handshake(self, raw: socket.socket) -> ssl.SSLSocket:
        tls = self.ctx.wrap_socket(raw, server_side=True)
        with self._lock:
            self._socks.append(tls)
        return tls


def read_request(reader: Any) -> bool:
    """Read one request (head and Content-Length body); False at end of stream."""
    length = 0
    line = reader.readline()
    if not line:
        return False
    while line not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
        line = reader.readline()
    reader.read(length)
    return True


OK_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


def reset(sock: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0), no TLS close_notify."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def serve_ok(tls: ssl.SSLSocket) -> None:
    with tls.makefile("rb") as reader:
        while read_request(reader):
            tls.sendall(OK_RESPONSE)


def reset_first_connection(server: StubServer, number: int, raw: socket.socket) -> None:
    """Connection 1 reads the request and resets; later ones answer 200 (keep-alive)."""
    tls = server.handshake(raw)
    if number == 1:
        with tls.makefile("rb") as reader:
            read_request(reader)
        reset(tls)
        return
    serve_ok(tls)


def reset_second_request(server: StubServer, number: int, raw: socket.socket) -> None:
    """Every connection answers its first request (keep-alive) and resets on the second."""
    tls = server.handshake(raw)
    with tls.makefile("rb") as reader:
        if read_request(reader):
            tls.sendall(OK_RESPONSE)
        if read_request(reader):
            reset(tls)


def stall(server: StubServer, number: int, raw: socket.socket) -> None:
    """Accept the TCP connection and never start TLS."""
    server.stopping.wait(30)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def client_sockets(*ports: int) -> int:
    """How many of this process's sockets are connected to one of ``ports`` on loopback.

    The servers run in this process too; their accepted sockets have ``ports`` as their
    local port, not their remote one, so only the client's ends are counted."""
    if not os.path.isdir("/proc/self/fd") or not os.path.exists("/proc/net/tcp"):
        pytest.skip("needs /proc (Linux) to list open sockets")
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as handle:
            for line in handle.read().splitlines()[1:]:
                fields = line.split()
                remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                if fields[9] in inodes and remote_port in ports:
                    count += 1
    return count


def client(certs_d: CertsD, **options: Any) -> httpx.Client:
    return httpx.Client(transport=Transport(root=certs_d.root, **options), timeout=5.0)


@pytest.fixture(autouse=True)
def _transport_env(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """INFO logs from dockercerts, and the platform's own system roots.

    With ``SSL_CERT_FILE`` set (common on CI images) every context parses the whole bundle
    (~50 ms); without it the hashed folder is searched lazily. The tests are
    about rotation, not about the bundle, so they run with the platform default."""
    caplog.set_level(logging.INFO, logger="dockercerts")
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)


# --- host names (no sockets) -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "names"),
    [
        ("https://localhost:5443/v2/", ("localhost:5443",)),
        ("https://LocalHost:5443/v2/", ("localhost:5443",)),
        ("https://127.0.0.1:5000/v2/", ("127.0.0.1:5000",)),
        ("https://[::1]:5000/v2/", ("[::1]:5000",)),
        ("https://[::1]/v2/", ("[::1]", "[::1]:443")),
        ("https://reg.example.com/v2/", ("reg.example.com", "reg.example.com:443")),
        ("https://reg.example.com:443/v2/", ("reg.example.com", "reg.example.com:443")),
        ("https://Reg.Example.com:8443/", ("reg.example.com:8443",)),
        ("https://bücher.example/v2/", ("xn--bcher-kva.example", "xn--bcher-kva.example:443")),
    ],
)
def test_docker_host_names(url: str, names: tuple[str, ...]) -> None:
    assert docker_host_names(httpx.URL(url)) == names


def state_for(root: Path, url: str) -> _HostState[Any]:
    options = _options(root, "linux", None, None, "docker", 0.0)
    return _HostState(docker_host_names(httpx.URL(url)), options, lambda c: None)  # type: ignore[arg-type,return-value]


@pytest.mark.parametrize(
    ("present", "expected"),
    [
        ((), "reg.example.com"),
        (("reg.example.com:443",), "reg.example.com:443"),
        (("reg.example.com",), "reg.example.com"),
        (("reg.example.com", "reg.example.com:443"), "reg.example.com"),
    ],
)
def test_port_443_directory(tmp_path: Path, present: tuple[str, ...], expected: str) -> None:
    """Port 443: the bare host first, then ``host:443`` (as nerdctl); missing -> the first."""
    for name in present:
        (tmp_path / name).mkdir()
    assert state_for(tmp_path, "https://reg.example.com/v2/")._directory() == tmp_path / expected
    assert state_for(tmp_path, "https://reg.example.com:443/")._directory() == tmp_path / expected


def test_other_port_has_one_directory(tmp_path: Path) -> None:
    (tmp_path / "reg.example.com").mkdir()
    state = state_for(tmp_path, "https://reg.example.com:5000/v2/")
    assert state._directory() == tmp_path / "reg.example.com:5000"


def test_windows_names_drop_colons(tmp_path: Path) -> None:
    options = _options(tmp_path, "windows", None, None, "docker", 0.0)
    state = _HostState(("reg:5000",), options, lambda c: None)  # type: ignore[arg-type,return-value]
    assert state._directory().name.endswith("reg5000")


def test_bad_refresh_and_policy_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="refresh"):
        Transport(root=tmp_path, refresh=-1)
    with pytest.raises(ValueError, match="unknown rejection policy"):
        Transport(root=tmp_path, policy="nope")


@pytest.mark.parametrize("cls", [Transport, AsyncTransport])
def test_options_the_folder_decides_are_refused_at_once(cls: Any, tmp_path: Path) -> None:
    """Not at the first request, as a TypeError from deep inside: verify and cert come from
    the certs.d folder."""
    with pytest.raises(TypeError, match=r"verify=.*certs\.d"):
        cls(root=tmp_path, verify=False)
    with pytest.raises(TypeError, match=r"cert=.*\.cert"):
        cls(root=tmp_path, cert=("client.pem", "client.key"))


@pytest.mark.parametrize("cls", [Transport, AsyncTransport])
def test_unknown_options_are_refused_at_once(cls: Any, tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="htpp2"):
        cls(root=tmp_path, htpp2=True)
    cls(root=tmp_path, http2=False, retries=1, trust_env=False)  # builds nothing yet


# --- Slot: who closes a retired candidate's transport ------------------------------------------


class FakeInner:
    """Stands in for an inner transport: knows whether it was closed and who used it after."""

    def __init__(self) -> None:
        self.closed = False
        self.used_after_close = 0

    def use(self) -> None:
        if self.closed:
            self.used_after_close += 1


def a_slot(make: Callable[[Candidate], Any] = lambda c: FakeInner()) -> Slot[Any]:
    return Slot(SimpleNamespace(name="pair"), (), make)  # type: ignore[arg-type]


def test_a_retired_slot_is_handed_over_by_its_last_user() -> None:
    slot = a_slot()
    first, second = slot.acquire(), slot.acquire()
    assert first is second
    assert slot.retire() is None  # two users: nobody may close it yet
    assert slot.release() is None
    assert slot.release() is first  # the last user leaves: it closes the transport


def test_a_live_slot_is_never_handed_over() -> None:
    slot = a_slot()
    inner = slot.acquire()
    assert slot.release() is None
    assert slot.acquire() is inner


def test_a_failing_build_leaves_no_user_behind() -> None:
    calls = []

    def make(candidate: Candidate) -> FakeInner:
        calls.append(candidate)
        if len(calls) == 1:
            raise OSError("no memory for the pool")
        return FakeInner()

    slot = a_slot(make)
    with pytest.raises(OSError):
        slot.acquire()
    inner = slot.acquire()
    assert slot.release() is None
    assert slot.retire() is inner  # a leaked user from the failed build would keep it open


class Users(list):  # type: ignore[type-arg]
    """A slot's user tokens with a hook: runs another "thread's" step at a chosen moment."""

    on_append: Callable[[], None] = staticmethod(lambda: None)
    on_check: Callable[[], None] = staticmethod(lambda: None)

    def append(self, token: Any) -> None:
        self.on_append()
        super().append(token)

    def __len__(self) -> int:
        length = super().__len__()
        self.on_check()  # after the count was taken: the worst moment for a newcomer
        return length


def test_a_user_arriving_as_the_last_one_leaves_never_gets_the_closed_transport() -> None:
    """The interleaving: B starts acquiring a retired slot; before B is counted, the last
    user A releases it and closes the transport. B must not be handed that transport."""
    slot = a_slot()
    a_inner = slot.acquire()
    assert slot.retire() is None
    users = slot._users = Users(slot._users)

    def a_leaves() -> None:
        users.on_append = lambda: None
        closing = slot.release()
        assert closing is a_inner
        closing.closed = True

    users.on_append = a_leaves
    b_inner = slot.acquire()
    assert a_inner.closed
    assert b_inner is not a_inner  # B got a fresh transport
    assert not b_inner.closed
    assert slot.release() is b_inner  # ...which B, the last user, closes


def test_a_transport_is_not_closed_under_a_user_who_arrives_during_the_check() -> None:
    """The interleaving: the last user A releases a retired slot; while A checks whether
    anyone still uses it, B acquires (in another thread). Whatever the order, the transport
    B gets is not the one handed back to be closed."""
    slot = a_slot()
    inner = slot.acquire()
    assert slot.retire() is None
    users = slot._users = Users(slot._users)
    got: list[Any] = []
    b = threading.Thread(target=lambda: got.append(slot.acquire()))

    def b_arrives() -> None:
        users.on_check = lambda: None
        b.start()
        b.join(0.2)  # B finishes at once if it can: it must not, or it must get a live one

    users.on_check = b_arrives
    closing = slot.release()
    b.join(5)
    assert got, "B never got a transport"
    assert got[0] is not closing  # B has a live transport: the old one kept, or a new one
    if closing is None:
        assert got[0] is inner


# --- decision logic over mock inner transports (no sockets) ------------------------------------


class LazyMock(httpx.MockTransport):
    """``httpx.MockTransport`` without its up-front ``request.read()``: the handler decides
    whether the body is sent, as a real connection that fails in the handshake does not."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self.handler(request)  # type: ignore[return-value]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = self.handler(request)
        if not isinstance(response, httpx.Response):
            response = await response
        return response


class ClientNames:
    """The pair each ``ssl`` context sends: the CN of the client certificate
    :meth:`ssl.SSLContext.load_cert_chain` loaded into it (this suite's leaves are named after
    their pair). An ``inner=`` factory is given a candidate's context, not the candidate; this
    tells it which pair that context presents."""

    def __init__(self) -> None:
        self._names: weakref.WeakKeyDictionary[ssl.SSLContext, str] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def __getitem__(self, context: ssl.SSLContext) -> str:
        with self._lock:
            return self._names[context]

    def record(self, context: ssl.SSLContext, certfile: str) -> None:
        with open(certfile, "rb") as fh:  # /dev/fd/N too: the pair's file, still open
            leaf = x509.load_pem_x509_certificate(fh.read())
        [cn] = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        with self._lock:
            self._names[context] = str(cn.value)


@pytest.fixture
def client_names(monkeypatch: pytest.MonkeyPatch) -> ClientNames:
    """Records, from now on, the pair of every context given a client certificate."""
    names = ClientNames()
    load = ssl.SSLContext.load_cert_chain

    def recorded(
        self: ssl.SSLContext, certfile: Any, keyfile: Any = None, password: Any = None
    ) -> None:
        load(self, certfile, keyfile, password)
        names.record(self, certfile)

    monkeypatch.setattr(ssl.SSLContext, "load_cert_chain", recorded)
    return names


class Scripted(Transport):
    """A Transport whose candidates answer through ``httpx.MockTransport`` handlers, by pair
    name: its ``inner=`` tells the candidates apart by the certificate in their context."""

    def __init__(
        self,
        handlers: dict[str, Callable[[httpx.Request], httpx.Response]],
        names: ClientNames,
        **kw: Any,
    ):
        self.handlers = handlers
        self.names = names
        self.calls: list[tuple[str, bytes]] = []
        super().__init__(inner=self.make, **kw)

    def make(self, *, verify: ssl.SSLContext, **options: Any) -> LazyMock:
        name = self.names[verify]

        def handle(request: httpx.Request) -> httpx.Response:
            return self.handlers[name](request)

        return LazyMock(handle)


def open_a_connection() -> None:
    """In a scripted candidate: what httpcore does on a new connection, a completed handshake
    on the candidate's (watched) context, reported to the attempt."""
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).wrap_bio(
        ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname="reg.test"
    )
    _watch.opened(tls)


def alert_error(message: str = "[SSL: SSLV3_ALERT_BAD_CERTIFICATE] sslv3 alert bad certificate"):  # type: ignore[no-untyped-def]
    return httpx.ConnectError(message)


@pytest.fixture
def scripted_dir(certs_d: CertsD, leaves: Leaves) -> HostDir:
    directory = certs_d.host("reg.test:5000")
    for name, leaf in leaves.layout("wrong", "wrong", "right"):
        directory.pair(name, leaf)
    return directory


def test_mock_bytes_body_is_replayed(
    certs_d: CertsD, scripted_dir: HostDir, client_names: ClientNames
) -> None:
    seen: list[tuple[str, bytes]] = []

    def refuse(name: str) -> Callable[[httpx.Request], httpx.Response]:
        def handle(request: httpx.Request) -> httpx.Response:
            seen.append((name, b"".join(request.stream)))  # type: ignore[arg-type]
            raise alert_error()

        return handle

    def accept(request: httpx.Request) -> httpx.Response:
        seen.append(("c-right", b"".join(request.stream)))  # type: ignore[arg-type]
        return httpx.Response(201)

    transport = Scripted(
        {"a-wrong": refuse("a-wrong"), "b-wrong": refuse("b-wrong"), "c-right": accept},
        client_names,
        root=certs_d.root,
    )
    with httpx.Client(transport=transport) as http:
        assert http.post("https://reg.test:5000/x", content=BODY).status_code == 201
        assert transport.winner("https://reg.test:5000/") == "c-right"
    assert seen == [("a-wrong", BODY), ("b-wrong", BODY), ("c-right", BODY)]


def test_mock_stream_not_started_is_replayed(
    certs_d: CertsD, scripted_dir: HostDir, client_names: ClientNames
) -> None:
    """A handshake failure (TLS 1.2) happens before the body is read: replay it."""
    seen: list[bytes] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        raise alert_error()

    def accept(request: httpx.Request) -> httpx.Response:
        seen.append(b"".join(request.stream))  # type: ignore[arg-type]
        return httpx.Response(200)

    transport = Scripted(
        {"a-wrong": refuse, "b-wrong": refuse, "c-right": accept}, client_names, root=certs_d.root
    )
    with httpx.Client(transport=transport) as http:
        assert http.post("https://reg.test:5000/x", content=chunks()).status_code == 200
    assert seen == [BODY]


def test_mock_stream_already_sent_is_not_replayed(
    certs_d: CertsD, scripted_dir: HostDir, client_names: ClientNames
) -> None:
    """The body went out with the first candidate (TLS 1.3): raise, naming the reason."""
    calls: list[bytes] = []

    def read_then_refuse(request: httpx.Request) -> httpx.Response:
        calls.append(b"".join(request.stream))  # type: ignore[arg-type]
        raise httpx.ReadError("[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] alert")

    handlers = {
        "a-wrong": read_then_refuse,
        "b-wrong": read_then_refuse,
        "c-right": read_then_refuse,
    }
    transport = Scripted(handlers, client_names, root=certs_d.root)
    with httpx.Client(transport=transport) as http, pytest.raises(ClientCertificateRejected) as err:
        http.post("https://reg.test:5000/x", content=chunks())
    assert calls == [BODY]
    assert "could not be replayed" in str(err.value)
    assert [a.candidate for a in err.value.attempts] == ["a-wrong"]


def test_mock_stream_http_rejection_returns_response(
    certs_d: CertsD, scripted_dir: HostDir, client_names: ClientNames
) -> None:
    calls: list[bytes] = []

    def forbid(request: httpx.Request) -> httpx.Response:
        calls.append(b"".join(request.stream))  # type: ignore[arg-type]
        return httpx.Response(403, content=b"no")

    transport = Scripted(
        {"a-wrong": forbid, "b-wrong": forbid, "c-right": forbid}, client_names, root=certs_d.root
    )
    with httpx.Client(transport=transport) as http:
        response = http.post("https://reg.test:5000/x", content=chunks())
    assert response.status_code == 403
    assert response.content == b"no"
    assert calls == [BODY]


def test_mock_rejected_responses_are_closed(
    certs_d: CertsD, scripted_dir: HostDir, client_names: ClientNames
) -> None:
    closed: list[str] = []

    class Body(httpx.SyncByteStream):
        def __init__(self, name: str) -> None:
            self.name = name

        def __iter__(self) -> Iterator[bytes]:
            yield b"denied"

        def close(self) -> None:
            closed.append(self.name)

    def forbid(name: str) -> Callable[[httpx.Request], httpx.Response]:
        return lambda request: httpx.Response(403, stream=Body(name))

    def accept(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"ok")

    transport = Scripted(
        {"a-wrong": forbid("a-wrong"), "b-wrong": forbid("b-wrong"), "c-right": accept},
        client_names,
        root=certs_d.root,
    )
    with httpx.Client(transport=transport) as http:
        assert http.get("https://reg.test:5000/v2/").content == b"ok"
    # b-wrong's answer is no better than a-wrong's (kept as the best so far): closed at once;
    # a-wrong's once c-right has answered.
    assert closed == ["b-wrong", "a-wrong"]


def test_mock_silent_close_needs_a_fresh_connection(
    certs_d: CertsD, scripted_dir: HostDir, client_names: ClientNames
) -> None:
    """An empty ReadError counts only when the attempt opened its connection."""

    def fresh_close(request: httpx.Request) -> httpx.Response:
        open_a_connection()
        raise httpx.ReadError("")

    def reused_close(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadError("")

    def accept(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200)

    transport = Scripted(
        {"a-wrong": fresh_close, "b-wrong": fresh_close, "c-right": accept},
        client_names,
        root=certs_d.root,
    )
    with httpx.Client(transport=transport) as http:
        assert http.get("https://reg.test:5000/v2/").status_code == 200
    transport = Scripted(
        {"a-wrong": reused_close, "b-wrong": fresh_close, "c-right": accept},
        client_names,
        root=certs_d.root,
    )
    with httpx.Client(transport=transport) as http, pytest.raises(httpx.ReadError):
        http.get("https://reg.test:5000/v2/")


def test_an_invalid_host_evicts_no_cached_host(
    certs_d: CertsD, scripted_dir: HostDir, client_names: ClientNames
) -> None:
    def accept(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200)

    transport = Scripted(
        {"a-wrong": accept, "b-wrong": accept, "c-right": accept},
        client_names,
        root=certs_d.root,
        max_hosts=1,
    )
    with httpx.Client(transport=transport) as http:
        http.get("https://reg.test:5000/v2/")
        assert transport.winner("https://reg.test:5000/") == "a-wrong"
        with pytest.raises(CertsDirTransportError) as err:
            http.get("https://a..b/v2/")
        assert isinstance(err.value.error, InvalidHostError)
        assert transport.winner("https://reg.test:5000/") == "a-wrong"  # still cached


def test_mock_user_trace_still_called(
    certs_d: CertsD, scripted_dir: HostDir, client_names: ClientNames
) -> None:
    def accept(request: httpx.Request) -> httpx.Response:
        request.extensions["trace"]("connection.start_tls.complete", {})
        return httpx.Response(200)

    tracer = Tracer()
    transport = Scripted(
        {"a-wrong": accept, "b-wrong": accept, "c-right": accept}, client_names, root=certs_d.root
    )
    with httpx.Client(transport=transport) as http:
        http.get("https://reg.test:5000/v2/", extensions={"trace": tracer})
    assert tracer.events == ["connection.start_tls.complete"]


def test_an_evicted_hosts_transports_are_closed_by_the_request_that_made_room(
    certs_d: CertsD, leaves: Leaves
) -> None:
    """``max_hosts=1``: the request to a second host evicts the first and closes its idle
    inner transport itself; one still answering is closed when its response is."""
    for host in ("a.test:5000", "b.test:5000", "c.test:5000"):
        certs_d.host(host).pair("only", leaves.get("right", "only"))
    made: list[Closing] = []

    class Closing(httpx.MockTransport):
        closed = 0

        def close(self) -> None:
            self.closed += 1

    def inner(**options: Any) -> Closing:
        # A streamed body, as a network's: httpx closes it once read (content= it would not).
        made.append(Closing(lambda request: httpx.Response(200, stream=httpx.ByteStream(b"{}"))))
        return made[-1]

    with httpx.Client(transport=Transport(root=certs_d.root, inner=inner, max_hosts=1)) as http:
        http.get("https://a.test:5000/v2/")
        (a,) = made
        http.get("https://b.test:5000/v2/")
        assert a.closed == 1  # idle: closed by the request to b
        b = made[1]
        with http.stream("GET", "https://b.test:5000/v2/") as response:
            http.get("https://c.test:5000/v2/")  # evicts b while its answer is open
            assert b.closed == 0
            response.read()
        assert b.closed == 1  # closed with the answer
    assert [t.closed for t in made] == [1, 1, 1]


def test_an_evicted_host_is_freed_at_once(certs_d: CertsD, leaves: Leaves) -> None:
    """An evicted host's state, with its candidates' contexts (a system bundle each: ~0.9 MB),
    is freed when it is dropped, not at the next full collection: a host that made its
    steady lane must not keep itself alive through it."""
    for host in ("a.test:5000", "b.test:5000"):
        certs_d.host(host).pair("only", leaves.get("right", "only"))
    transport = Transport(
        root=certs_d.root,
        inner=lambda **options: httpx.MockTransport(lambda request: httpx.Response(200)),
        max_hosts=1,
    )
    with httpx.Client(transport=transport) as http:
        http.get("https://a.test:5000/v2/")
        http.get("https://a.test:5000/v2/")  # the steady lane
        (a,) = transport._hosts._states.values()
        assert a.lane is not None
        gone = weakref.ref(a)
        del a
        enabled = gc.isenabled()
        gc.disable()
        try:
            http.get("https://b.test:5000/v2/")  # evicts a
            assert gone() is None
        finally:
            if enabled:
                gc.enable()


def test_threads_over_more_hosts_than_max_hosts(
    certs_d: CertsD, leaves: Leaves, client_names: ClientNames
) -> None:
    """Hosts evicted by one thread while another is sending to them: every request still
    goes out (no "unreachable" AssertionError, no request without a candidate)."""
    hosts = ["a.test:5000", "b.test:5000", "c.test:5000"]
    for host in hosts:
        certs_d.host(host).pair("only", leaves.get("right", "only"))
    ok = Scripted(
        {"only": lambda request: httpx.Response(200)},
        client_names,
        root=certs_d.root,
        max_hosts=1,
        refresh=0,
    )
    failures: list[BaseException] = []

    def work(host: str) -> None:
        with httpx.Client(transport=ok) as http:
            for _ in range(300):
                try:
                    http.get(f"https://{host}/v2/")
                except Exception as exc:  # collected for the assertion below
                    failures.append(exc)

    workers = [threading.Thread(target=work, args=(host,)) for host in hosts]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert failures == []


def test_max_hosts_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_hosts"):
        Transport(root=tmp_path, max_hosts=0)


# --- the attempt watch: which attempt opened a connection, did bytes arrive -------------------


@pytest.mark.parametrize("tls", TLS_VERSIONS)
def test_watch_tells_a_fresh_connection_from_a_reused_one(
    tls: str, mtls_server: Any, leaves: Leaves
) -> None:
    srv = mtls_server(reject="tls", tls_version=tls)
    context = _watch.watched(srv.client_context(leaves.get("right", "b-right")))
    with httpx.Client(verify=context) as http:
        with _watch.Watch() as first:
            assert http.get(srv.url + "/v2/").status_code == 200
        with _watch.Watch() as second:
            assert http.get(srv.url + "/v2/").status_code == 200
        assert http.get(srv.url + "/v2/").status_code == 200  # no attempt: nothing to tell
    assert (first.fresh, first.tls_version, first.responded) == (True, f"TLSv{tls}", True)
    assert (second.fresh, second.tls_version) == (False, None)
    assert srv.handshakes == 1


@pytest.mark.parametrize("tls", TLS_VERSIONS)
def test_kept_alive_requests_share_the_record_of_their_accepted_try(
    tls: str, mtls_server: Any, certs_d: CertsD, leaves: Leaves
) -> None:
    """The first request's records tell its new connection (TLS version, time taken); the
    next ones, on that connection kept alive, carry one shared record without ``elapsed``."""
    srv = mtls_server(reject="tls", tls_version=tls)
    host_dir(certs_d, srv, leaves.layout("right"))
    with client(certs_d) as http:
        responses = [http.get(srv.url + "/v2/") for _ in range(3)]
    check_kept_alive_records(responses, tls)
    assert srv.handshakes == 1


def check_kept_alive_records(responses: list[httpx.Response], tls: str) -> None:
    """One request on a new connection, then two on it kept alive (the records' shapes)."""
    (opened,), (kept,), (again,) = (r.extensions["dockercerts.attempts"] for r in responses)
    assert (opened.candidate, opened.verdict, opened.fresh) == ("a-right", "accepted", True)
    assert opened.tls_version == f"TLSv{tls}"
    assert opened.elapsed is not None
    assert opened.elapsed > 0
    assert kept == Attempt("a-right", "HTTP 200", "accepted", None, 200, False, None, None)
    assert again is kept


def test_watch_leaves_a_failed_handshake_unreported(mtls_server: Any, leaves: Leaves) -> None:
    """TLS 1.2 judges the certificate inside the handshake: no completed connection."""
    srv = mtls_server(reject="tls", tls_version="1.2")
    context = _watch.watched(srv.client_context(leaves.get("wrong", "a-wrong")))
    refused = pytest.raises(httpx.ConnectError)
    with httpx.Client(verify=context) as http, _watch.Watch() as watch, refused:
        http.get(srv.url + "/v2/")
    assert (watch.fresh, watch.responded) == (False, False)


# --- every rejection kind, through real handshakes ---------------------------------------------


@pytest.mark.parametrize("tls", TLS_VERSIONS)
def test_tls_alert_moves_on(
    tls: str, mtls_server: Any, certs_d: CertsD, leaves: Leaves, caplog: pytest.LogCaptureFixture
) -> None:
    """docker-registry style: TLS 1.2 fails in the handshake, TLS 1.3 on the first read."""
    srv = mtls_server(reject="tls", tls_version=tls)
    host_dir(certs_d, srv, leaves.layout("wrong", "right"))
    tracer = Tracer()
    with client(certs_d) as http:
        response = http.get(srv.url + "/v2/", extensions={"trace": tracer})
    assert response.status_code == 200
    assert [r.client_subject for r in srv.requests] == [subject("b-right")]
    assert srv.failed_handshakes == 1
    [line] = rejections(caplog)
    # TLS 1.2: the wrong pair never completed a handshake; TLS 1.3: it did, then the alert came,
    # which reads the same whether the alert or the reset was seen first.
    assert f"a-wrong rejected ({REFUSAL[tls]}" in line
    [first, _] = response.extensions["dockercerts.attempts"]
    assert (first.layer, first.fresh, first.alert) == ("certificate", tls == "1.3", "unknown_ca")
    assert tracer.count("connection.start_tls.complete") == (1 if tls == "1.2" else 2)
    assert tracer.count("connection.connect_tcp.started") == 2


@pytest.mark.parametrize("tls", TLS_VERSIONS)
def test_nginx_400_wrong_certificate_moves_on(
    tls: str, mtls_server: Any, certs_d: CertsD, leaves: Leaves, caplog: pytest.LogCaptureFixture
) -> None:
    srv = mtls_server(reject="http", tls_version=tls)
    host_dir(certs_d, srv, leaves.layout("wrong", "right"))
    with client(certs_d) as http:
        response = http.get(srv.url + "/v2/")
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
def test_nginx_400_without_certificate_is_returned(
    tls: str, mtls_server: Any, certs_d: CertsD, caplog: pytest.LogCaptureFixture
) -> None:
    """No pair at all: nginx's "No required SSL certificate" 400 comes back as it is."""
    srv = mtls_server(reject="http", tls_version=tls)
    host_dir(certs_d, srv, [])
    with client(certs_d) as http:
        response = http.get(srv.url + "/v2/")
    assert response.status_code == 400
    assert "<title>400 No required SSL certificate was sent</title>" in response.text
    assert rejections(caplog) == [
        f"{srv.host}: client certificate (none) rejected "
        "(HTTP 400 No required SSL certificate was sent)"
    ]


@pytest.mark.parametrize("tls", TLS_VERSIONS)
@pytest.mark.parametrize("reject", ["http", "tls"])
def test_client_certificates_false_sends_the_folders_trust_alone(
    tls: str, reject: str, mtls_server: Any, certs_d: CertsD, leaves: Leaves
) -> None:
    """``client_certificates=False``: the folder's CA trust, no client certificate although
    the folder holds the right pair, and the server's refusal judged by the flow (what the
    probe asks when Go finds no pair to send). The same folder with its pairs gets in."""
    srv = mtls_server(reject=reject, tls_version=tls)
    host_dir(certs_d, srv, leaves.layout("right"))
    with client(certs_d) as http:
        assert http.get(srv.url + "/v2/").status_code == 200
    with Transport(root=certs_d.root, client_certificates=False) as transport:
        request = httpx.Request("GET", srv.url + "/v2/")
        decision = transport.decide(request, every_candidate=True)
        if decision.response is not None:
            decision.response.close()
    [only] = decision.attempts
    assert (only.candidate, only.layer, decision.rejected) == (None, "certificate", reject == "tls")
    if reject == "http":  # nginx's page for "none sent", given back as the answer
        assert only.outcome == "HTTP 400 No required SSL certificate was sent"
        assert [(r.client_subject, r.status) for r in srv.requests] == [
            ("CN=a-right", 200),
            (None, 400),
        ]
    else:  # refused in TLS, after this client verified the server with the folder's CA
        assert only.alert == ("certificate_required" if tls == "1.3" else "handshake_failure")
        assert [r.client_subject for r in srv.requests] == ["CN=a-right"]
    with pytest.raises(TypeError, match="client_certificates must be True or False"):
        Transport(root=certs_d.root, client_certificates="no")  # type: ignore[arg-type]


@pytest.mark.parametrize("tls", TLS_VERSIONS)
@pytest.mark.parametrize("status", [401, 403, 495, 496])
def test_auth_status_moves_on(
    tls: str,
    status: int,
    mtls_server: Any,
    certs_d: CertsD,
    leaves: Leaves,
    caplog: pytest.LogCaptureFixture,
) -> None:
    srv = mtls_server(reject="status", status=status, tls_version=tls)
    host_dir(certs_d, srv, leaves.layout("wrong", "right"))
    with client(certs_d) as http:
        assert http.get(srv.url + "/v2/").status_code == 200
    assert [r.status for r in srv.requests] == [status, 200]
    assert [f"(HTTP {status})" in line for line in rejections(caplog)] == [True]


@pytest.mark.parametrize("tls", TLS_VERSIONS)
def test_server_error_rotates_for_get_not_post(
    tls: str, mtls_server: Any, certs_d: CertsD, leaves: Leaves
) -> None:
    srv = mtls_server(reject="status", status=503, tls_version=tls)
    host_dir(certs_d, srv, leaves.layout("wrong", "right"))
    with client(certs_d) as http:
        assert http.get(srv.url + "/v2/").status_code == 200
        srv.reset_counters()
        # A fresh transport: the winner of the GET would otherwise go first.
    with client(certs_d) as http:
        response = http.post(srv.url + "/v2/app/blobs/uploads/", content=b"data")
    assert response.status_code == 503
    assert [(r.method, r.client_subject) for r in srv.requests] == [("POST", subject("a-wrong"))]


@pytest.mark.parametrize("tls", TLS_VERSIONS)
def test_token_challenge_passes_through(
    tls: str, mtls_ca: CA, wrong_ca: CA, certs_d: CertsD, leaves: Leaves
) -> None:
    """A 401 with a challenge is the token handshake, with or without Authorization."""
    with ChallengeServer(
        client_ca=mtls_ca, handshake_cas=[wrong_ca], reject="status", status=401, tls_version=tls
    ) as srv:
        host_dir(certs_d, srv, leaves.layout("wrong", "right"))
        with client(certs_d) as http:
            response = http.get(srv.url + "/v2/")
            assert response.status_code == 401
            assert response.headers["www-authenticate"].startswith("Bearer realm=")
            assert [r.client_subject for r in srv.requests] == [subject("a-wrong")]
            srv.reset_counters()
            # An expired or under-scoped token gets the same answer: the challenge is what
            # the client needs to get its next token, and says nothing about the certificate.
            again = http.get(srv.url + "/v2/", headers={"Authorization": "Bearer t"})
            assert again.status_code == 401
            assert again.headers["www-authenticate"].startswith("Bearer realm=")
            assert [r.client_subject for r in srv.requests] == [subject("a-wrong")]


# Which rejections rotate under which policy: sync and async run the same table.
POLICY_CASES = (
    ("policy", "server", "method", "rotates"),
    [
        ("docker-legacy", {"reject": "status", "status": 403}, "GET", True),
        ("docker-legacy", {"reject": "status", "status": 401}, "GET", False),
        ("docker-legacy", {"reject": "status", "status": 500}, "POST", True),
        ("docker-legacy", {"reject": "http"}, "GET", False),
        ("docker-legacy", {"reject": "tls"}, "GET", True),
        ("tls-only", {"reject": "status", "status": 403}, "GET", False),
        ("tls-only", {"reject": "http"}, "GET", False),
        ("tls-only", {"reject": "tls"}, "GET", True),
        ("docker", {"reject": "status", "status": 500}, "POST", False),
        (DOCKER.with_statuses(418), {"reject": "status", "status": 418}, "GET", True),
        (DOCKER.with_statuses(418), {"reject": "status", "status": 403}, "GET", False),
    ],
)


@pytest.mark.parametrize("tls", TLS_VERSIONS)
@pytest.mark.parametrize(*POLICY_CASES)
def test_policies(
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
    with client(certs_d, policy=policy) as http:
        response = http.request(
            method, srv.url + "/v2/", content=b"x" if method == "POST" else None
        )
    if rotates:
        assert response.status_code == 200
        assert srv.requests[-1].client_subject == subject("b-right")
    else:
        assert response.status_code == server.get("status", 400)
        assert [r.client_subject for r in srv.requests] == [subject("a-wrong")]


# --- silent closes: fresh connection vs kept-alive one -----------------------------------------


def test_reset_on_fresh_tls13_connection_moves_on(
    mtls_ca: CA, certs_d: CertsD, leaves: Leaves, caplog: pytest.LogCaptureFixture
) -> None:
    with StubServer(mtls_ca.issue_server(), reset_first_connection, "1.3") as stub:
        host_dir(certs_d, stub, [("a", leaves.get("right", "a")), ("b", leaves.get("right", "b"))])
        with client(certs_d) as http:
            assert http.get(stub.url + "/v2/").status_code == 200
        assert stub.connections == 2
    [line] = rejections(caplog)
    assert f"a rejected ({TLS13_REFUSAL})" in line


def test_reset_on_fresh_tls12_connection_is_raised(
    mtls_ca: CA, certs_d: CertsD, leaves: Leaves, caplog: pytest.LogCaptureFixture
) -> None:
    # In TLS 1.2 the server judges the certificate inside the handshake: once it completed,
    # a close says nothing about the certificate, and another one cannot help.
    with StubServer(mtls_ca.issue_server(), reset_first_connection, "1.2") as stub:
        host_dir(certs_d, stub, [("a", leaves.get("right", "a")), ("b", leaves.get("right", "b"))])
        with client(certs_d) as http, pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            http.get(stub.url + "/v2/")
        assert stub.connections == 1
    assert rejections(caplog) == []


@pytest.mark.parametrize("tls", TLS_VERSIONS)
def test_reset_on_reused_connection_is_raised(
    tls: str, mtls_ca: CA, certs_d: CertsD, leaves: Leaves, caplog: pytest.LogCaptureFixture
) -> None:
    with StubServer(mtls_ca.issue_server(), reset_second_request, tls) as stub:
        host_dir(certs_d, stub, [("a", leaves.get("right", "a")), ("b", leaves.get("right", "b"))])
        with client(certs_d) as http:
            assert http.get(stub.url + "/v2/").status_code == 200
            with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
                http.get(stub.url + "/v2/")
        assert stub.connections == 1
    assert rejections(caplog) == []


# --- order of the pairs ------------------------------------------------------------------------


@pytest.mark.parametrize("tls", TLS_VERSIONS)
@pytest.mark.parametrize(
    "roles",
    [("right", "wrong", "wrong"), ("wrong", "right", "wrong"), ("wrong", "wrong", "right")],
    ids=["first", "middle", "last"],
)
def test_right_pair_anywhere(
    tls: str, roles: tuple[str, ...], mtls_server: Any, certs_d: CertsD, leaves: Leaves
) -> None:
    srv = mtls_server(reject="tls", tls_version=tls)
    pairs = leaves.layout(*roles)
    host_dir(certs_d, srv, pairs)
    right = roles.index("right")
    with client(certs_d) as http:
        assert http.get(srv.url + "/v2/").status_code == 200
        assert http._transport.winner(srv.url) == pairs[right][0]  # type: ignore[attr-defined]
    assert srv.failed_handshakes == right
    assert [r.client_subject for r in srv.requests] == [subject(pairs[right][0])]


@pytest.mark.parametrize("tls", TLS_VERSIONS)
def test_no_directory_uses_system_trust(
    tls: str, mtls_server: Any, certs_d: CertsD, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No host directory: system roots, no client certificate. The test CA is not a system
    root, so verification fails at once; made one through SSL_CERT_FILE, it works."""
    srv = mtls_server(reject="http", tls_version=tls)
    with client(certs_d) as http, pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY"):
        http.get(srv.url + "/v2/")
    assert srv.connections == 1
    assert srv.requests == []
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(srv.server_ca.cert_pem)
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    with client(certs_d) as http:
        response = http.get(srv.url + "/v2/")
    assert response.status_code == 400
    assert "No required SSL certificate was sent" in response.text
    assert [r.client_subject for r in srv.requests] == [None]


def test_broken_directory_raises_the_loader_error(
    mtls_server: Any, certs_d: CertsD, leaves: Leaves
) -> None:
    srv = mtls_server(reject="tls")
    host_dir(certs_d, srv, leaves.layout("right")).cert_only("b-lonely", leaves.get("right", "x"))
    with client(certs_d) as http, pytest.raises(CertsDirTransportError) as err:
        http.get(srv.url + "/v2/")
    # httpx's contract (a TransportError) and the loader's error, with its message.
    assert isinstance(err.value, httpx.TransportError)
    assert isinstance(err.value, CertsDirError)
    assert isinstance(err.value.error, MissingKeyError)
    assert isinstance(err.value.__cause__, MissingKeyError)
    assert str(err.value) == (
        "missing key b-lonely.key for client certificate b-lonely.cert. "
        "CA certificates must use the extension .crt"
    )
    assert srv.connections == 0


def count_folder_reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The folders the transports read from now on, one entry per read."""
    from dockercerts._layouts import Layout

    reads: list[Path] = []
    original = Layout.read

    def counted(self: Layout, folder: Path, *args: Any) -> Any:
        reads.append(Path(folder))
        return original(self, folder, *args)

    monkeypatch.setattr(Layout, "read", counted)
    return reads


def same_error_for_each(errors: list[CertsDirTransportError], *words: str) -> None:
    """The requests raised the same folder error, each its own copy."""
    assert {type(e.error) for e in errors} == {CertsDirReadError}
    assert {str(e) for e in errors} == {str(errors[0])}
    assert all(word in str(errors[0]) for word in words), str(errors[0])
    assert len({id(e.error) for e in errors}) == len(errors)  # no object shared by requests


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes (os.mkfifo)")
def test_a_folder_that_failed_to_load_is_read_again_only_at_the_next_refresh(
    mtls_server: Any, certs_d: CertsD, leaves: Leaves, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 15: a folder whose first load failed was read again, in full, by every request.
    Its error is kept until the next refresh (each request gets a copy of its own); then the
    folder is read again, and a repaired one is used."""
    srv = mtls_server(reject="tls")
    directory = host_dir(certs_d, srv, leaves.layout("right"))
    os.mkfifo(directory / "z-pipe.crt")
    reads = count_folder_reads(monkeypatch)
    refresh = 0.3
    with client(certs_d, refresh=refresh) as http:
        errors = []
        for _ in range(3):
            with pytest.raises(CertsDirTransportError) as err:
                http.get(srv.url + "/v2/")
            errors.append(err.value)
        loaded = time.monotonic()
        assert len(reads) == 1
        same_error_for_each(errors, "z-pipe.crt", "named pipe (FIFO)")
        directory.remove("z-pipe.crt")
        if time.monotonic() - loaded < refresh:  # a slow machine may be past it already
            with pytest.raises(CertsDirTransportError):
                http.get(srv.url + "/v2/")
            assert len(reads) == 1
        time.sleep(refresh + 0.05)
        assert http.get(srv.url + "/v2/").status_code == 200
    assert len(reads) == 2
    assert srv.connections == 1


# --- never rotate --------------------------------------------------------------------------------


def test_timeout_does_not_rotate(mtls_ca: CA, certs_d: CertsD, leaves: Leaves) -> None:
    with StubServer(mtls_ca.issue_server(), stall) as stub:
        host_dir(certs_d, stub, leaves.layout("wrong", "right"))
        tracer = Tracer()
        started = time.monotonic()
        with client(certs_d) as http, pytest.raises(httpx.ConnectTimeout):
            http.get(stub.url + "/v2/", timeout=0.3, extensions={"trace": tracer})
        assert time.monotonic() - started < 2 * 0.3
        assert stub.connections == 1
    assert tracer.count("connection.connect_tcp.started") == 1


def test_refused_connection_does_not_rotate(
    certs_d: CertsD, leaves: Leaves, caplog: pytest.LogCaptureFixture
) -> None:
    port = closed_port()
    directory = certs_d.host(f"localhost:{port}")
    for name, leaf in leaves.layout("wrong", "right"):
        directory.pair(name, leaf)
    tracer = Tracer()
    with client(certs_d) as http, pytest.raises(httpx.ConnectError) as err:
        http.get(f"https://localhost:{port}/v2/", extensions={"trace": tracer})
    assert not isinstance(err.value, ClientCertificateRejected)
    assert tracer.count("connection.connect_tcp.started") == 1
    assert rejections(caplog) == []


def test_dns_failure_does_not_rotate(
    certs_d: CertsD, leaves: Leaves, caplog: pytest.LogCaptureFixture
) -> None:
    directory = certs_d.host("registry.invalid:5000")
    for name, leaf in leaves.layout("wrong", "right"):
        directory.pair(name, leaf)
    tracer = Tracer()
    with client(certs_d) as http, pytest.raises(httpx.ConnectError):
        http.get("https://registry.invalid:5000/v2/", extensions={"trace": tracer})
    assert tracer.count("connection.connect_tcp.started") == 1
    assert rejections(caplog) == []


@pytest.mark.parametrize("tls", TLS_VERSIONS)
def test_untrusted_server_certificate_does_not_rotate(
    tls: str,
    mtls_server: Any,
    certs_d: CertsD,
    leaves: Leaves,
    mtls_ca: CA,
    caplog: pytest.LogCaptureFixture,
) -> None:
    srv = mtls_server(reject="tls", tls_version=tls)
    # ca.crt is the client CA, not the one that issued the server's certificate.
    directory = certs_d.host(srv.host).ca(mtls_ca)
    for name, leaf in leaves.layout("wrong", "right"):
        directory.pair(name, leaf)
    with client(certs_d) as http, pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY"):
        http.get(srv.url + "/v2/")
    assert srv.connections == 1
    assert rejections(caplog) == []


# --- all rejected --------------------------------------------------------------------------------


@pytest.mark.parametrize("tls", TLS_VERSIONS)
def test_all_rejected_in_tls_raises(
    tls: str, mtls_server: Any, certs_d: CertsD, leaves: Leaves
) -> None:
    srv = mtls_server(reject="tls", tls_version=tls)
    pairs = leaves.layout("wrong", "wrong")
    host_dir(certs_d, srv, pairs)
    with client(certs_d) as http, pytest.raises(ClientCertificateRejected) as err:
        http.get(srv.url + "/v2/")
    exc = err.value
    assert isinstance(exc, httpx.TransportError)
    assert [a.candidate for a in exc.attempts] == ["a-wrong", "b-wrong"]
    message = str(exc)
    assert str(certs_d.root / srv.host) in message
    assert "a-wrong: " in message
    assert "b-wrong: " in message
    assert message.count(REFUSAL[tls]) == 2
    no_key_material(message + repr(exc), *(leaf for _, leaf in pairs))
    assert srv.connections == 2
    assert srv.requests == []


@pytest.mark.parametrize("tls", TLS_VERSIONS)
def test_all_rejected_over_http_returns_the_last_response(
    tls: str, mtls_server: Any, certs_d: CertsD, leaves: Leaves
) -> None:
    srv = mtls_server(reject="status", status=403, tls_version=tls)
    host_dir(certs_d, srv, leaves.layout("wrong", "wrong"))
    with client(certs_d) as http:
        response = http.get(srv.url + "/v2/")
        assert response.status_code == 403
        assert "403 Forbidden" in response.text
        assert http._transport.winner(srv.url) is None  # type: ignore[attr-defined]
    assert [r.client_subject for r in srv.requests] == [subject("a-wrong"), subject("b-wrong")]


# --- sticky winner ----------------------------------------------------------------------------


@pytest.mark.parametrize("tls", TLS_VERSIONS)
def test_sticky_winner_costs_no_handshake(
    tls: str, mtls_server: Any, certs_d: CertsD, leaves: Leaves
) -> None:
    srv = mtls_server(reject="tls", tls_version=tls)
    host_dir(certs_d, srv, leaves.layout("wrong", "wrong", "right"))
    with client(certs_d) as http:
        assert http.get(srv.url + "/v2/").status_code == 200
        assert (srv.handshakes, srv.failed_handshakes) == (1, 2)
        for _ in range(20):
            assert http.get(srv.url + "/v2/").status_code == 200
        assert (srv.handshakes, srv.failed_handshakes, srv.connections) == (1, 2, 3)
    assert len({r.connection_id for r in srv.requests}) == 1


def test_rejected_winner_tries_the_others_in_order(
    mtls_server: Any, certs_d: CertsD, leaves: Leaves
) -> None:
    allowed = {subject("b-right")}
    srv = mtls_server(
        reject="status", accept=lambda info: info is not None and info.subject in allowed
    )
    host_dir(certs_d, srv, leaves.layout("right", "right", "right"))
    with client(certs_d) as http:
        http.get(srv.url + "/v2/")
        assert http._transport.winner(srv.url) == "b-right"  # type: ignore[attr-defined]
        srv.reset_counters()
        allowed.clear()
        allowed.add(subject("c-right"))  # the server's rule changed: b is refused now
        assert http.get(srv.url + "/v2/").status_code == 200
        assert http._transport.winner(srv.url) == "c-right"  # type: ignore[attr-defined]
    assert [(r.client_subject, r.status) for r in srv.requests] == [
        (subject("b-right"), 403),
        (subject("a-right"), 403),
        (subject("c-right"), 200),
    ]


# --- request bodies ------------------------------------------------------------------------------


def test_stream_replayed_when_rejected_in_the_handshake(
    mtls_server: Any, certs_d: CertsD, leaves: Leaves
) -> None:
    """TLS 1.2: the handshake fails before any body byte is read, so the stream is replayed."""
    srv = mtls_server(reject="tls", tls_version="1.2")
    host_dir(certs_d, srv, leaves.layout("wrong", "right"))
    with client(certs_d) as http:
        response = http.post(srv.url + "/upload", content=chunks())
    assert response.status_code == 200
    assert response.json()["body_length"] == len(BODY)
    assert [(r.client_subject, r.body) for r in srv.requests] == [(subject("b-right"), BODY)]


def test_stream_with_tls_13_alert_is_replayed_only_if_unsent(
    mtls_server: Any, certs_d: CertsD, leaves: Leaves
) -> None:
    """TLS 1.3: the alert comes after the handshake. With OpenSSL it usually fails the write
    of the request head, before any body byte (then the stream is replayed); if the body did
    start, the request must not be sent again. Either way the server never sees a partial
    body."""
    srv = mtls_server(reject="tls", tls_version="1.3")
    host_dir(certs_d, srv, leaves.layout("wrong", "right"))
    with client(certs_d) as http:
        outcome: Any
        try:
            outcome = http.post(srv.url + "/upload", content=chunks())
        except ClientCertificateRejected as exc:
            outcome = exc
    if isinstance(outcome, ClientCertificateRejected):
        assert "could not be replayed" in str(outcome)
        assert srv.requests == []
    else:
        assert outcome.status_code == 200
        assert [(r.client_subject, r.body) for r in srv.requests] == [(subject("b-right"), BODY)]


def read_then_reset(server: StubServer, number: int, raw: socket.socket) -> None:
    """Read the whole request (body included), record it, then reset: a rejection that
    arrives after the body went out."""
    tls = server.handshake(raw)
    with tls.makefile("rb") as reader:
        head = []
        line = reader.readline()
        while line not in (b"\r\n", b""):
            head.append(line)
            line = reader.readline()
        body = b""
        if any(h.lower().startswith(b"transfer-encoding: chunked") for h in head):
            while True:
                size = int(reader.readline().split(b";")[0], 16)
                body += reader.read(size)
                reader.readline()
                if size == 0:
                    break
        server.bodies.append(body)
    reset(tls)


def test_stream_sent_then_rejected_raises(
    mtls_ca: CA, certs_d: CertsD, leaves: Leaves, caplog: pytest.LogCaptureFixture
) -> None:
    """The body went out, then the connection died before any response (a TLS 1.3 verdict
    as anyio shows it): the stream cannot be sent again, so the transport raises."""
    with StubServer(mtls_ca.issue_server(), read_then_reset) as stub:
        host_dir(certs_d, stub, leaves.layout("wrong", "right"))
        with client(certs_d) as http, pytest.raises(ClientCertificateRejected) as err:
            http.post(stub.url + "/upload", content=chunks())
        assert stub.connections == 1
        assert stub.bodies == [BODY]  # sent once, complete
    assert "could not be replayed" in str(err.value)
    assert [a.candidate for a in err.value.attempts] == ["a-wrong"]
    assert any("could not be replayed" in line for line in warnings_logged(caplog))


@pytest.mark.parametrize("tls", TLS_VERSIONS)
def test_stream_sent_then_rejected_over_http_returns_the_response(
    tls: str, mtls_server: Any, certs_d: CertsD, leaves: Leaves
) -> None:
    srv = mtls_server(reject="http", tls_version=tls)
    host_dir(certs_d, srv, leaves.layout("wrong", "right"))
    with client(certs_d) as http:
        response = http.post(srv.url + "/upload", content=chunks())
    assert response.status_code == 400
    assert [(r.client_subject, r.body) for r in srv.requests] == [(subject("a-wrong"), BODY)]


@pytest.mark.parametrize("tls", TLS_VERSIONS)
def test_bytes_body_is_replayed(
    tls: str, mtls_server: Any, certs_d: CertsD, leaves: Leaves
) -> None:
    srv = mtls_server(reject="http", tls_version=tls)
    host_dir(certs_d, srv, leaves.layout("wrong", "right"))
    with client(certs_d) as http:
        response = http.put(srv.url + "/upload", content=BODY)
    assert response.status_code == 200
    assert [(r.client_subject, r.body) for r in srv.requests] == [
        (subject("a-wrong"), BODY),
        (subject("b-right"), BODY),
    ]


# --- changes on disk ---------------------------------------------------------------------------


def test_rotation_on_disk_is_seen_at_once_with_refresh_0(
    mtls_server: Any, certs_d: CertsD, leaves: Leaves
) -> None:
    srv = mtls_server(reject="tls")
    directory = host_dir(certs_d, srv, [("a-old", leaves.get("right", "a-old"))])
    with client(certs_d, refresh=0) as http:
        http.get(srv.url + "/v2/")
        directory.pair("b-new", leaves.get("right", "b-new")).remove("a-old.cert").remove(
            "a-old.key"
        )
        http.get(srv.url + "/v2/")
        assert http._transport.winner(srv.url) == "b-new"  # type: ignore[attr-defined]
    assert [r.client_subject for r in srv.requests] == [subject("a-old"), subject("b-new")]


def test_rotation_on_disk_is_seen_within_refresh(
    mtls_server: Any, certs_d: CertsD, leaves: Leaves
) -> None:
    refresh = 0.3
    srv = mtls_server(reject="tls")
    directory = host_dir(certs_d, srv, [("a-old", leaves.get("right", "a-old"))])
    with client(certs_d, refresh=refresh) as http:
        http.get(srv.url + "/v2/")
        loaded = time.monotonic()
        directory.pair("b-new", leaves.get("right", "b-new")).remove("a-old.cert").remove(
            "a-old.key"
        )
        http.get(srv.url + "/v2/")
        within = time.monotonic() - loaded < refresh
        time.sleep(refresh + 0.05)
        http.get(srv.url + "/v2/")
    seen = [r.client_subject for r in srv.requests]
    if within:  # the second request came before the next check: still the old pair
        assert seen == [subject("a-old"), subject("a-old"), subject("b-new")]
    assert seen[-1] == subject("b-new")


def test_kubernetes_data_swap_is_seen(mtls_server: Any, certs_d: CertsD, leaves: Leaves) -> None:
    srv = mtls_server(reject="tls")
    old, new = leaves.get("right", "k8s-old"), leaves.get("right", "k8s-new")
    directory = certs_d.host(srv.host).kubernetes(
        {"ca.crt": srv.server_ca.cert_pem, "client.cert": old.cert_pem, "client.key": old.key_pem()}
    )
    with client(certs_d, refresh=0) as http:
        http.get(srv.url + "/v2/")
        directory.rotate_kubernetes(
            {
                "ca.crt": srv.server_ca.cert_pem,
                "client.cert": new.cert_pem,
                "client.key": new.key_pem(),
            }
        )
        http.get(srv.url + "/v2/")
    assert [r.client_subject for r in srv.requests] == [subject("k8s-old"), subject("k8s-new")]


def test_broken_change_keeps_the_last_good_load_and_warns_once(
    mtls_server: Any, certs_d: CertsD, leaves: Leaves, caplog: pytest.LogCaptureFixture
) -> None:
    srv = mtls_server(reject="tls")
    directory = host_dir(certs_d, srv, leaves.layout("wrong", "right"))
    with client(certs_d, refresh=0) as http:
        http.get(srv.url + "/v2/")
        directory.key_only("z-orphan", leaves.get("right", "z"))  # Docker refuses the folder now
        for _ in range(3):
            assert http.get(srv.url + "/v2/").status_code == 200
        broken = [line for line in warnings_logged(caplog) if "broken" in line]
        assert len(broken) == 1
        assert "missing client certificate z-orphan.cert for key z-orphan.key" in broken[0]
        # Repaired, then broken again: a new warning.
        directory.remove("z-orphan.key")
        http.get(srv.url + "/v2/")
        directory.key_only("z-orphan", leaves.get("right", "z"))
        http.get(srv.url + "/v2/")
        assert len([line for line in warnings_logged(caplog) if "broken" in line]) == 2
    assert srv.failed_handshakes == 1
    assert {r.client_subject for r in srv.requests} == {subject("b-right")}


@pytest.mark.parametrize(("recheck", "tried_again"), [(0, 1), (60, 0)])
def test_winner_is_forgotten_when_its_files_change(
    recheck: float, tried_again: int, mtls_server: Any, certs_d: CertsD, leaves: Leaves
) -> None:
    """Docker's order again once the winner's files change; a-wrong, refused at the
    certificate layer and unchanged, is skipped until ``recheck`` seconds pass."""
    srv = mtls_server(reject="tls")
    directory = host_dir(certs_d, srv, leaves.layout("wrong", "right"))
    with client(certs_d, refresh=0, recheck=recheck) as http:
        transport: Transport = http._transport  # type: ignore[assignment]
        http.get(srv.url + "/v2/")
        assert (transport.winner(srv.url), srv.failed_handshakes) == ("b-right", 1)
        # Another pair changes: the winner stays first.
        directory.pair("c-extra", leaves.get("wrong", "c-extra"))
        http.get(srv.url + "/v2/")
        assert (transport.winner(srv.url), srv.failed_handshakes) == ("b-right", 1)
        # The winner's own files change: Docker's order again, a-wrong first.
        directory.pair("b-right", leaves.get("right", "b-right-renewed"))
        http.get(srv.url + "/v2/")
        assert (transport.winner(srv.url), srv.failed_handshakes) == ("b-right", 1 + tried_again)
    assert srv.requests[-1].client_subject == subject("b-right-renewed")


# --- names, IPv6 -------------------------------------------------------------------------------


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def test_ip_and_ipv6_folders(mtls_server: Any, certs_d: CertsD, leaves: Leaves) -> None:
    if not ipv6_loopback():
        pytest.skip("IPv6 loopback (::1) is not available here")
    srv = mtls_server(reject="tls", ipv6=True)
    host_dir(certs_d, srv, leaves.layout("wrong", "right"), name=f"[::1]:{srv.port}")
    host_dir(certs_d, srv, leaves.layout("right"), name=f"127.0.0.1:{srv.port}")
    with client(certs_d) as http:
        assert http.get(srv.url_v6 + "/v2/").status_code == 200
        assert http.get(srv.url_ip + "/v2/").status_code == 200
    assert [r.client_subject for r in srv.requests] == [subject("b-right"), subject("a-right")]


# --- concurrency, close, options ------------------------------------------------------------------


def test_threads_share_one_transport(mtls_server: Any, certs_d: CertsD, leaves: Leaves) -> None:
    threads, per_thread = 8, 50
    srv = mtls_server(reject="tls", max_workers=2 * threads)
    host_dir(certs_d, srv, leaves.layout("wrong", "right"))
    statuses: list[int] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads)

    with client(certs_d) as http:

        def work() -> None:
            try:
                barrier.wait()
                for _ in range(per_thread):
                    statuses.append(http.get(srv.url + "/v2/").status_code)
            except BaseException as exc:  # reported below
                errors.append(exc)

        workers = [threading.Thread(target=work) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
    assert errors == []
    assert statuses == [200] * threads * per_thread
    assert srv.failed_handshakes <= threads
    assert srv.handshakes <= threads


def test_close_closes_every_pool(mtls_server: Any, certs_d: CertsD, leaves: Leaves) -> None:
    first = mtls_server(reject="http")
    second = mtls_server(reject="tls")
    host_dir(certs_d, first, leaves.layout("wrong", "right"))
    host_dir(certs_d, second, leaves.layout("right", "wrong"))
    transport = Transport(root=certs_d.root)
    http = httpx.Client(transport=transport)
    for _ in range(3):
        http.get(first.url + "/v2/")
        http.get(second.url + "/v2/")
    assert client_sockets(first.port, second.port) >= 2  # the winners' kept-alive connections
    http.close()
    assert client_sockets(first.port, second.port) == 0


class Interrupt(BaseException):
    """Stands for KeyboardInterrupt, SystemExit or a cancellation: not an ``Exception``."""


def interrupt_on_send(name: str, info: dict[str, Any]) -> None:
    if name == "http11.send_request_headers.started":
        raise Interrupt


def nginx_400_then_stall(server: StubServer, number: int, raw: socket.socket) -> None:
    """Start nginx's 400 page for a missing certificate, then never finish its body."""
    tls = server.handshake(raw)
    with tls.makefile("rb") as reader:
        read_request(reader)
        tls.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 250\r\n\r\n<html>")
        server.stopping.wait(30)


def slot_users(http: Any) -> list[int]:
    """How many requests or open responses hold each candidate (private state)."""
    transport: Any = http._transport
    return [len(slot._users) for state in transport._hosts._states.values() for slot in state.slots]


def test_interrupted_while_reading_a_rejection_page_gives_the_candidate_back(
    mtls_ca: CA, certs_d: CertsD, leaves: Leaves
) -> None:
    def interrupt_on_body(name: str, info: dict[str, Any]) -> None:
        if name == "http11.receive_response_body.started":
            raise Interrupt

    with StubServer(mtls_ca.issue_server(), nginx_400_then_stall) as stub:
        host_dir(certs_d, stub, leaves.layout("wrong", "right"))
        with client(certs_d) as http:
            with pytest.raises(Interrupt):
                http.get(stub.url + "/v2/", extensions={"trace": interrupt_on_body})
            assert slot_users(http) == [0, 0]


def test_close_after_an_interrupted_request(
    mtls_server: Any, certs_d: CertsD, leaves: Leaves
) -> None:
    """A request interrupted by a BaseException gives its candidate's transport back, so
    ``close()`` still closes it and the keep-alive connection of a later request."""
    srv = mtls_server(reject="tls")
    host_dir(certs_d, srv, leaves.layout("right"))
    http = client(certs_d)
    http.get(srv.url + "/v2/")
    with pytest.raises(Interrupt):
        http.get(srv.url + "/v2/", extensions={"trace": interrupt_on_send})
    assert http.get(srv.url + "/v2/").status_code == 200  # on a new kept-alive connection
    assert client_sockets(srv.port) == 1
    http.close()
    assert client_sockets(srv.port) == 0


def test_close_while_a_response_is_open(mtls_server: Any, certs_d: CertsD, leaves: Leaves) -> None:
    """``close()`` under an open streamed response: the response still reads to its end, and
    its connection closes with it."""
    srv = mtls_server(reject="tls")
    host_dir(certs_d, srv, leaves.layout("wrong", "right"))
    http = client(certs_d)
    with http.stream("GET", srv.url + "/v2/_catalog") as response:
        http.close()
        assert client_sockets(srv.port) == 1  # still open: the response uses it
        assert response.read() == b'{"repositories":["team/app"]}'
    assert client_sockets(srv.port) == 0  # read to the end: closed by its last user


def test_transport_options_reach_the_inner_transports(
    mtls_server: Any, certs_d: CertsD, leaves: Leaves
) -> None:
    srv = mtls_server(reject="tls")
    host_dir(certs_d, srv, leaves.layout("wrong", "right"))
    tracer = Tracer()
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    with client(certs_d, local_address="127.0.0.2", http2=False, limits=limits, retries=0) as http:
        assert http.get(srv.url + "/v2/", extensions={"trace": tracer}).status_code == 200
    assert tracer.client_addr[0] == "127.0.0.2"


def test_retries_reach_the_inner_transports(certs_d: CertsD, leaves: Leaves) -> None:
    """``retries`` retries the TCP connect of one candidate; it never rotates candidates."""
    port = closed_port()
    directory = certs_d.host(f"localhost:{port}")
    for name, leaf in leaves.layout("wrong", "right"):
        directory.pair(name, leaf)
    tracer = Tracer()
    with client(certs_d, retries=2) as http, pytest.raises(httpx.ConnectError):
        http.get(f"https://localhost:{port}/v2/", extensions={"trace": tracer})
    assert tracer.count("connection.connect_tcp.started") == 3


def test_plain_http_bypasses_certs_d(certs_d: CertsD) -> None:
    """``http://`` goes through a plain transport (here: refused, with no certs.d lookup)."""
    port = closed_port()
    certs_d.host(f"localhost:{port}").cert_only("broken", CA().issue_client())
    with client(certs_d) as http, pytest.raises(httpx.ConnectError):
        http.get(f"http://localhost:{port}/")


# --- the examples -------------------------------------------------------------------------------


@pytest.mark.parametrize("script", ["catalog.py", "catalog_async.py"])
def test_catalog_example(script: str, mtls_server: Any, certs_d: CertsD, leaves: Leaves) -> None:
    srv = mtls_server(reject="tls", repositories=["library/alpine", "team/app"])
    host_dir(certs_d, srv, leaves.layout("wrong", "right"))
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / script), srv.url, "--root", str(certs_d.root)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["library/alpine", "team/app"]
    assert "b-right" in result.stderr
    assert [r.path for r in srv.requests] == ["/v2/_catalog"]


def load_example(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"example_{name}", REPO / "examples" / name)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_catalog_examples_report_a_broken_directory(
    mtls_server: Any, certs_d: CertsD, leaves: Leaves, capsys: pytest.CaptureFixture[str]
) -> None:
    srv = mtls_server(reject="tls")
    host_dir(certs_d, srv, []).cert_only("lonely", leaves.get("right", "lonely"))
    argv = [srv.url, "--root", str(certs_d.root)]
    assert load_example("catalog.py").main(argv) == 2
    assert asyncio.run(load_example("catalog_async.py").main(argv)) == 2
    err = capsys.readouterr().err
    assert err.count("missing key lonely.key for client certificate lonely.cert") == 2
    assert srv.connections == 0


def catalog_pages(request: httpx.Request) -> httpx.Response:
    """A catalog split over two pages, as distribution serves it with ``?n=1``."""
    if "last" not in request.url.params:
        link = '</v2/_catalog?last=a%2Fone&n=1>; rel="next"'
        return httpx.Response(200, json={"repositories": ["a/one"]}, headers={"Link": link})
    return httpx.Response(200, json={"repositories": ["b/two"]})


def test_catalog_example_follows_pages() -> None:
    module = load_example("catalog.py")
    with httpx.Client(transport=httpx.MockTransport(catalog_pages)) as http:
        assert module.list_repositories(http, "reg.test:5000") == ["a/one", "b/two"]
    refuse = httpx.MockTransport(lambda request: httpx.Response(403))
    with httpx.Client(transport=refuse) as http, pytest.raises(httpx.HTTPStatusError):
        module.list_repositories(http, "https://reg.test:5000/")


def test_a_pair_broken_after_the_load_is_a_transport_error(
    mtls_server: Any, certs_d: CertsD, leaves: Leaves
) -> None:
    """A pair that fails when its context is built (a file swapped for a FIFO or an
    oversized one after the load) reaches the caller as httpx expects: a TransportError."""
    srv = mtls_server(reject="tls")
    host_dir(certs_d, srv, leaves.layout("right"))
    broken = KeyPairError(Path("x.cert"), Path("x.key"), "unreadable now", "fix it")

    def unusable(**options: Any) -> httpx.HTTPTransport:
        raise broken

    http = httpx.Client(transport=Transport(root=certs_d.root, inner=unusable))
    with http, pytest.raises(CertsDirTransportError) as err:
        http.get(srv.url + "/v2/")
    assert err.value.error is broken
    assert isinstance(err.value, httpx.TransportError)


def test_the_password_is_no_field_of_the_options(tmp_path: Path) -> None:
    import dataclasses

    secret = "s3cr3t-passw0rd"
    opts = _options(tmp_path, "linux", None, secret, "docker", 1.0)
    assert secret not in repr(dataclasses.asdict(opts)) + repr(opts)
    assert opts.password.get() == secret


# --- inner=: the documented way to make the inner transports -------------------------------------


@pytest.mark.parametrize("tls", TLS_VERSIONS)
def test_inner_makes_each_candidates_transport_and_keeps_rejections_seen(
    tls: str, mtls_server: Any, certs_d: CertsD, leaves: Leaves
) -> None:
    """A factory that wraps httpx's transport gets each candidate's (watched) context as
    ``verify`` and the remaining options; the refusal of the wrong pair is still seen, TLS
    1.3's after the handshake included, and the right pair wins."""
    srv = mtls_server(reject="tls", tls_version=tls)
    host_dir(certs_d, srv, leaves.layout("wrong", "right"))
    made: list[dict[str, Any]] = []

    def factory(**options: Any) -> httpx.HTTPTransport:
        made.append(options)
        return httpx.HTTPTransport(**options)

    transport = Transport(root=certs_d.root, inner=factory, trust_env=False, retries=0)
    with httpx.Client(transport=transport) as http:
        response = http.get(srv.url + "/v2/")
    assert response.status_code == 200
    verdicts = [a.verdict for a in response.extensions["dockercerts.attempts"]]
    assert verdicts == ["rejected", "accepted"]
    assert [sorted(o) for o in made] == [["retries", "verify"]] * 2
    assert all(isinstance(o["verify"], ssl.SSLContext) for o in made)
    assert all(o["verify"].sslsocket_class is not ssl.SSLSocket for o in made)  # watched


def test_inner_gets_no_verify_for_plain_http_and_the_proxy_when_one_applies(
    tmp_path: Path,
) -> None:
    calls: list[dict[str, Any]] = []

    def factory(**options: Any) -> httpx.MockTransport:
        calls.append(options)
        return httpx.MockTransport(lambda request: httpx.Response(204))

    proxy = "http://127.0.0.1:3128"
    transport = Transport(root=tmp_path, inner=factory, proxy=proxy)
    with httpx.Client(transport=transport) as http:
        assert http.get("http://127.0.0.1:9/").status_code == 204
    assert [sorted(call) for call in calls] == [["proxy"]]
    assert calls[0]["proxy"].url == httpx.URL(proxy)


def test_inner_options_are_checked_against_the_factory(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument colour"):
        Transport(root=tmp_path, inner=httpx.HTTPTransport, colour="blue")
    # A factory that takes any keyword decides for itself.
    Transport(root=tmp_path, inner=lambda **options: httpx.MockTransport(print), colour="blue")
    with pytest.raises(TypeError, match="inner= must be a callable"):
        Transport(root=tmp_path, inner="httpx.HTTPTransport")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="verify= cannot be set"):
        Transport(root=tmp_path, inner=lambda **options: None, verify=False)
