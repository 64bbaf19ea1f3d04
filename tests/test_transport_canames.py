"""``Transport(order="ca-names")`` with :class:`~dockercerts.testing.MTLSServer` (real
sockets and handshakes, TLS 1.2 and 1.3; the server counts connections): handshakes on the
first request, when names are learned and when not, what a failure to learn costs, and the
option's absence. nginx and the proxy are in ``test_canames_peers.py``.
"""

from __future__ import annotations

import logging
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional

import anyio
import httpx
import pytest
from peers import require_pyopenssl

from dockercerts import AsyncTransport, Transport, canames
from dockercerts.cli import main
from dockercerts.errors import CANamesError, MissingExtraError
from dockercerts.pytest_plugin import CAFactory, ServerFactory
from dockercerts.testing import CA, CertsD, Leaf, MTLSServer

TLS_VERSIONS = ("1.2", "1.3")
MODES = ("sync", "async")
K = 4  # the right pair's place in Docker's order


@pytest.fixture(autouse=True)
def _pyopenssl() -> None:
    require_pyopenssl()


@pytest.fixture(scope="module")
def strangers(mtls_ca_factory: CAFactory) -> list[Leaf]:
    stranger = mtls_ca_factory(name="order stranger CA")
    return [stranger.issue_client(f"stranger-{n}") for n in range(K - 1)]


@pytest.fixture(scope="module")
def right(mtls_ca: CA) -> Leaf:
    return mtls_ca.issue_client("right")


def tree(certs_d: CertsD, server: MTLSServer, strangers: list[Leaf], right: Leaf) -> Path:
    """``p1``..``p3`` from a CA the server does not trust, the right pair ``p4`` last."""
    host = certs_d.host(server.host).ca(server.server_ca)
    for number, leaf in enumerate(strangers, 1):
        host.pair(f"p{number}", leaf)
    host.pair(f"p{K}", right)
    return host.path


def get(mode: str, transport: Any, url: str) -> httpx.Response:
    if mode == "sync":
        with httpx.Client(transport=transport) as client:
            return client.get(url)

    async def run() -> httpx.Response:
        async with httpx.AsyncClient(transport=transport) as client:
            return await client.get(url)

    return anyio.run(run)


def make(mode: str, **options: Any) -> Any:
    return (Transport if mode == "sync" else AsyncTransport)(**options)


class Reads:
    """Counts the transport's reads of CA names (each one handshake), passing them on."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail: bool = False) -> None:
        self.calls: list[tuple[str, int]] = []
        self._real = canames.read_ca_names
        self._fail = fail
        self._lock = threading.Lock()
        monkeypatch.setattr(canames, "read_ca_names", self)

    def __call__(self, host: str, port: int, **options: Any) -> canames.ServerCANames:
        with self._lock:
            self.calls.append((host, port))
        if self._fail:
            raise CANamesError(host, port, "no answer within 5 s")
        return self._real(host, port, **options)


def server_with_names(mtls_server: ServerFactory, tls: str, send: bool) -> MTLSServer:
    server = mtls_server(reject="tls", tls_version=tls, send_ca_names=send)
    if send and not server.ca_names_sent:
        pytest.skip("this Python's OpenSSL cannot be reached to set the CA names")
    return server


# --- handshakes -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("tls", TLS_VERSIONS)
def test_listed_names_make_the_first_request_two_handshakes(
    mtls_server: ServerFactory,
    certs_d: CertsD,
    strangers: list[Leaf],
    right: Leaf,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
    tls: str,
) -> None:
    server = server_with_names(mtls_server, tls, send=True)
    tree(certs_d, server, strangers, right)
    reads = Reads(monkeypatch)
    transport = make(mode, root=certs_d.path, order="ca-names")
    response = get(mode, transport, server.url + "/v2/")
    assert response.status_code == 200
    # One handshake to read the names, one with the right pair.
    assert (server.connections, server.handshakes) == (2, 1)
    assert reads.calls == [("localhost", server.port)]
    assert [a.candidate for a in response.extensions["dockercerts.attempts"]] == [f"p{K}"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("tls", TLS_VERSIONS)
def test_without_names_the_order_is_dockers_and_costs_one_handshake(
    mtls_server: ServerFactory,
    certs_d: CertsD,
    strangers: list[Leaf],
    right: Leaf,
    mode: str,
    tls: str,
) -> None:
    server = server_with_names(mtls_server, tls, send=False)
    tree(certs_d, server, strangers, right)
    response = get(mode, make(mode, root=certs_d.path, order="ca-names"), server.url + "/v2/")
    assert response.status_code == 200
    assert server.connections == K + 1
    attempts = response.extensions["dockercerts.attempts"]
    assert [a.candidate for a in attempts] == [f"p{n}" for n in range(1, K + 1)]


@pytest.mark.parametrize("mode", MODES)
def test_off_by_default_nothing_is_read(
    mtls_server: ServerFactory,
    certs_d: CertsD,
    strangers: list[Leaf],
    right: Leaf,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
) -> None:
    server = server_with_names(mtls_server, "1.3", send=True)
    tree(certs_d, server, strangers, right)
    reads = Reads(monkeypatch)
    assert get(mode, make(mode, root=certs_d.path), server.url + "/v2/").status_code == 200
    assert reads.calls == []
    assert server.connections == K


# --- when the names are read ------------------------------------------------------------------


def test_read_once_per_host_and_again_after_the_folder_changes(
    mtls_server: ServerFactory,
    certs_d: CertsD,
    strangers: list[Leaf],
    right: Leaf,
    mtls_ca: CA,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = server_with_names(mtls_server, "1.3", send=True)
    hostdir = tree(certs_d, server, strangers, right)
    reads = Reads(monkeypatch)
    url = server.url + "/v2/"
    with httpx.Client(transport=Transport(root=certs_d.path, order="ca-names", refresh=0)) as c:
        for _ in range(3):
            assert c.get(url).status_code == 200
        assert len(reads.calls) == 1  # later requests go to the winner: no search
        # A new pair leaves the winner's files alone: still no search, nothing read.
        (hostdir / "p0.cert").write_bytes(strangers[0].cert_pem)
        (hostdir / "p0.key").write_bytes(strangers[0].key_pem())
        assert c.get(url).status_code == 200
        assert len(reads.calls) == 1
        # The winner's certificate replaced: a new search, which reads the names again.
        newer = mtls_ca.issue_client("right-renewed")
        (hostdir / f"p{K}.cert").write_bytes(newer.cert_pem)
        (hostdir / f"p{K}.key").write_bytes(newer.key_pem())
        response = c.get(url)
    assert response.status_code == 200
    assert len(reads.calls) == 2
    assert [a.candidate for a in response.extensions["dockercerts.attempts"]] == [f"p{K}"]


def test_a_failed_read_falls_back_to_dockers_order(
    mtls_server: ServerFactory,
    certs_d: CertsD,
    strangers: list[Leaf],
    right: Leaf,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = server_with_names(mtls_server, "1.3", send=True)
    tree(certs_d, server, strangers, right)
    reads = Reads(monkeypatch, fail=True)
    with caplog.at_level(logging.INFO, logger="dockercerts"):
        response = get("sync", make("sync", root=certs_d.path, order="ca-names"), server.url)
    assert response.status_code == 200
    assert len(reads.calls) == 1
    attempts = response.extensions["dockercerts.attempts"]
    assert [a.candidate for a in attempts] == [f"p{n}" for n in range(1, K + 1)]
    assert "no answer within 5 s; trying client certificates in Docker's order" in caplog.text


def test_one_pair_reads_nothing(
    mtls_server: ServerFactory, certs_d: CertsD, right: Leaf, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = server_with_names(mtls_server, "1.3", send=True)
    certs_d.host(server.host).ca(server.server_ca).pair("only", right)
    reads = Reads(monkeypatch)
    response = get("sync", make("sync", root=certs_d.path, order="ca-names"), server.url + "/v2/")
    assert response.status_code == 200
    assert (reads.calls, server.connections) == ([], 1)


def test_concurrent_first_requests_read_once(
    mtls_server: ServerFactory,
    certs_d: CertsD,
    strangers: list[Leaf],
    right: Leaf,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = server_with_names(mtls_server, "1.3", send=True)
    tree(certs_d, server, strangers, right)
    reads = Reads(monkeypatch)
    transport = Transport(root=certs_d.path, order="ca-names")
    with httpx.Client(transport=transport) as client, ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: client.get(server.url + "/v2/").status_code, range(8)))
    assert codes == [200] * 8
    # The one request looking for the winner reads the names; the others wait for it.
    assert len(reads.calls) == 1
    assert server.failed_handshakes == 1  # the read's own, without a certificate


# --- without pyOpenSSL, and bad values ----------------------------------------------------------


@pytest.fixture
def no_pyopenssl(monkeypatch: pytest.MonkeyPatch) -> None:
    """``import OpenSSL`` raises ImportError, as when the extra is not installed."""
    for name in list(sys.modules):
        if name == "OpenSSL" or name.startswith("OpenSSL."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "OpenSSL", None)


@pytest.mark.usefixtures("no_pyopenssl")
@pytest.mark.parametrize("factory", [Transport, AsyncTransport])
def test_order_ca_names_without_pyopenssl_fails_at_construction(factory: Any) -> None:
    with pytest.raises(MissingExtraError) as caught:
        factory(order="ca-names")
    assert str(caught.value) == (
        "order='ca-names' needs pyOpenSSL, which is not installed: pip install 'dockercerts[probe]'"
    )
    assert isinstance(caught.value, ImportError)
    factory()  # the default needs nothing
    assert canames.available() is False


@pytest.mark.parametrize("order", ["CA-names", "issuer", None, 1])
def test_order_must_be_docker_or_ca_names(order: Optional[object]) -> None:
    with pytest.raises(ValueError, match="order must be 'docker' or 'ca-names', not"):
        Transport(order=order)  # type: ignore[arg-type]


@pytest.mark.usefixtures("no_pyopenssl")
def test_probe_without_pyopenssl_says_how_to_get_the_section(
    mtls_server: ServerFactory,
    certs_d: CertsD,
    strangers: list[Leaf],
    right: Leaf,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = mtls_server(reject="tls")
    tree(certs_d, server, strangers, right)
    assert main(["probe", server.url, "--root", str(certs_d.path)]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "CA names" in line or "Docker (Go)" in line]
    assert lines == [
        "CA names the server asks for: not shown, pyOpenSSL is not installed "
        "(pip install 'dockercerts[probe]' shows them, and what Docker would send)"
    ]
    assert f"The transport settles on p{K} ({K}th of {K})." in out
