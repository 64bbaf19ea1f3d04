"""The transport against real nginx and real docker-registry on loopback.

A certs.d tree whose wrong pair sorts first (``a-wrong``, then ``b-right``) reaches
``/v2/`` with 200 through each peer, sync and async, TLS 1.2 and 1.3, and the peer's own
logs show which certificate arrived: nginx logs the subject and SHA-1 fingerprint of each
request's certificate; docker-registry logs a handshake error for the refused one (from the
client port of the first attempt) and the completed request (from the port of the second).

docker-registry cannot be capped at TLS 1.2 (its setting is a minimum), so TLS 1.2 is
forced on the client side, by capping each candidate's context. Without the binaries the
tests skip, except under ``DOCKERCERTS_REQUIRE_PEERS=1`` (CI), where they fail.
"""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import httpx
import pytest
from peers import NginxPeer, RegistryPeer, require_peer

from dockercerts import AsyncTransport, Transport
from dockercerts.testing import CA, CertsD, Leaf

pytestmark = pytest.mark.peers

TLS_VERSIONS = ("1.2", "1.3")
NGINX_MODES = {"verify": 400, "status": 403, "error_page": 495}


def capped_at_tls12(inner: Any) -> Any:
    """An ``inner=`` factory whose candidates offer TLS 1.2 at most (the peer would negotiate
    1.3)."""

    def make(*, verify: Optional[ssl.SSLContext] = None, **options: Any) -> Any:
        if verify is None:
            return inner(**options)
        verify.maximum_version = ssl.TLSVersion.TLSv1_2
        return inner(verify=verify, **options)

    return make


@dataclass
class Files:
    server_ca: CA
    right: Leaf
    wrong: Leaf
    peer: dict[str, Path]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, mtls_ca: CA, mtls_ca_factory: Any) -> Files:
    d = tmp_path_factory.mktemp("peer-files")
    server_ca = mtls_ca_factory(name="peer server CA")
    cert, key = server_ca.issue_server().write(d / "server.pem", d / "server.key")
    return Files(
        server_ca=server_ca,
        right=mtls_ca.issue_client("b-right"),
        wrong=mtls_ca_factory(name="peer refused CA").issue_client("a-wrong"),
        peer={"server_cert": cert, "server_key": key, "client_ca": mtls_ca.write(d / "ca.pem")},
    )


@pytest.fixture(scope="module", params=list(NGINX_MODES))
def nginx(request: pytest.FixtureRequest, files: Files) -> Iterator[NginxPeer]:
    binary = require_peer("nginx")
    with NginxPeer(mode=request.param, binary=binary, **files.peer) as peer:
        yield peer


@pytest.fixture(scope="module")
def registry(files: Files) -> Iterator[RegistryPeer]:
    binary = require_peer("docker-registry")
    with RegistryPeer(binary=binary, **files.peer) as peer:
        yield peer


def tree(certs_d: CertsD, peer: Union[NginxPeer, RegistryPeer], files: Files) -> None:
    """``a-wrong`` sorts first, ``b-right`` second."""
    certs_d.host(peer.host).ca(files.server_ca).pair("a-wrong", files.wrong).pair(
        "b-right", files.right
    )


def transport(tls: str, asynchronous: bool, **options: Any) -> Any:
    """The transport (sync or async) whose candidates speak TLS ``tls``."""
    cls, inner = (
        (AsyncTransport, httpx.AsyncHTTPTransport)
        if asynchronous
        else (Transport, httpx.HTTPTransport)
    )
    if tls == "1.2":
        options["inner"] = capped_at_tls12(inner)
    return cls(**options)


class Ports:
    """Client ports of the connections each request opened, from httpx's trace."""

    def __init__(self) -> None:
        self.ports: list[int] = []

    def __call__(self, name: str, info: dict[str, Any]) -> None:
        if name == "connection.connect_tcp.complete":
            self.ports.append(info["return_value"].get_extra_info("client_addr")[1])

    async def trace_async(self, name: str, info: dict[str, Any]) -> None:
        self(name, info)


def sha1(leaf: Leaf) -> str:
    return hashlib.sha1(leaf.der).hexdigest()  # nginx's $ssl_client_fingerprint


def check_nginx_log(peer: NginxPeer, files: Files, uri: str, tls: str) -> None:
    refused_status = NGINX_MODES[peer.mode]

    # nginx logs a request after answering it: wait for both lines.
    def both() -> list[dict[str, str]]:
        return [r for r in peer.records() if r["uri"] == uri]

    assert peer.wait_for(lambda: len(both()) >= 2), peer.log_lines()
    records = both()
    assert [(r["status"], r["ssl_client_s_dn"]) for r in records] == [
        (str(refused_status), "CN=a-wrong"),
        ("200", "CN=b-right"),
    ]
    assert [r["ssl_client_fingerprint"] for r in records] == [sha1(files.wrong), sha1(files.right)]
    assert records[1]["ssl_client_verify"] == "SUCCESS"
    assert {r["ssl_protocol"] for r in records} == {f"TLSv{tls}"}


def check_registry_log(peer: RegistryPeer, uri: str, ports: list[int]) -> None:
    record = peer.request_for(uri)
    assert record["http.response.status"] == 200
    # The refused certificate: Go's handshake error, from the first attempt's port.
    wrong_port, right_port = ports
    assert peer.wait_for(
        lambda: any(remote.endswith(f":{wrong_port}") for remote, _ in peer.handshake_errors())
    ), peer.log_text()
    reasons = [r for remote, r in peer.handshake_errors() if remote.endswith(f":{wrong_port}")]
    assert reasons
    assert reasons[0].startswith("tls: failed to verify client certificate: x509:")
    # The accepted one: the completed request came from the second attempt's port.
    assert str(record["http.request.remoteaddr"]).endswith(f":{right_port}")
    assert not any(remote.endswith(f":{right_port}") for remote, _ in peer.handshake_errors())


@pytest.mark.parametrize("tls", TLS_VERSIONS)
def test_nginx_wrong_pair_first(tls: str, nginx: NginxPeer, files: Files, certs_d: CertsD) -> None:
    tree(certs_d, nginx, files)
    uri = f"/v2/?t=sync-{tls}"
    with httpx.Client(transport=transport(tls, False, root=certs_d.root)) as http:
        response = http.get(nginx.url + uri)
        assert http._transport.winner(nginx.url) == "b-right"  # type: ignore[attr-defined]
    assert response.status_code == 200
    assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    check_nginx_log(nginx, files, uri, tls)


@pytest.mark.parametrize("tls", TLS_VERSIONS)
def test_registry_wrong_pair_first(
    tls: str, registry: RegistryPeer, files: Files, certs_d: CertsD
) -> None:
    tree(certs_d, registry, files)
    uri = f"/v2/?t=sync-{tls}"
    ports = Ports()
    with httpx.Client(transport=transport(tls, False, root=certs_d.root)) as http:
        response = http.get(registry.url + uri, extensions={"trace": ports})
        assert http._transport.winner(registry.url) == "b-right"  # type: ignore[attr-defined]
        catalog = http.get(registry.url + "/v2/_catalog")
    assert response.status_code == 200
    assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    assert catalog.json() == {"repositories": []}
    check_registry_log(registry, uri, ports.ports)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("tls", TLS_VERSIONS)
async def test_nginx_wrong_pair_first_async(
    tls: str, nginx: NginxPeer, files: Files, certs_d: CertsD, anyio_backend: str
) -> None:
    tree(certs_d, nginx, files)
    uri = f"/v2/?t=async-{tls}"
    async with httpx.AsyncClient(transport=transport(tls, True, root=certs_d.root)) as http:
        response = await http.get(nginx.url + uri)
        assert http._transport.winner(nginx.url) == "b-right"  # type: ignore[attr-defined]
    assert response.status_code == 200
    check_nginx_log(nginx, files, uri, tls)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("tls", TLS_VERSIONS)
async def test_registry_wrong_pair_first_async(
    tls: str, registry: RegistryPeer, files: Files, certs_d: CertsD, anyio_backend: str
) -> None:
    tree(certs_d, registry, files)
    uri = f"/v2/?t=async-{tls}"
    ports = Ports()
    async with httpx.AsyncClient(transport=transport(tls, True, root=certs_d.root)) as http:
        response = await http.get(registry.url + uri, extensions={"trace": ports.trace_async})
        assert http._transport.winner(registry.url) == "b-right"  # type: ignore[attr-defined]
    assert response.status_code == 200
    check_registry_log(registry, uri, ports.ports)
