"""The requests adapter against real servers, and the registry clients people build on requests.

1. **The rejection matrix**, through :class:`dockercerts.requests.Adapter` as through
   :class:`dockercerts.Transport`: six servers (docker-registry refusing in TLS; nginx's 400
   page; nginx's 403 rule, naming no CA; nginx naming a decoy CA; haproxy's alerts in TLS 1.2
   and in TLS 1.3) by six certs.d layouts. Each case runs a fresh front end of each kind:
   the same records, the same answer or error, the same winner, and both the outcome the
   layout calls for; the server's own log shows the winner's certificate.
2. **oras-py**: push a small artifact and pull it back (``OrasClient``, whose
   ``client.session`` has the adapter mounted) through docker-registry behind nginx and
   behind haproxy, the wrong pair first: same digests, and the server's log shows which
   certificate every request carried.
3. **python-dxf**, which takes no session: inside ``with DXF(...)`` it keeps one in
   ``dxf._sessions[0]`` (a private attribute; the README says so), where the adapter is
   mounted. Push a blob, tag it, list the tags and pull the blob back.
4. ``examples/oras_push_pull.py``, run as a user would.

The peers (``peers.py``) and the flow tests' certificates and driver (``test_flow_peers.py``)
are shared. Without the binaries these skip, except under ``DOCKERCERTS_REQUIRE_PEERS=1``.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import dxf
import oras.client
import pytest
from peers import HAProxyPeer, NginxPeer, RegistryPeer
from test_flow_peers import Driver, Pki, attempts_of, folder, pki
from test_transport import load_example

import dockercerts.requests
from dockercerts.errors import Attempt, EveryCertificateRejected
from dockercerts.testing import CertsD

pytestmark = pytest.mark.peers

__all__ = ["pki"]  # the flow tests' fixture, registered here too

REPO = Path(__file__).resolve().parent.parent
Peer = Union[RegistryPeer, NginxPeer, HAProxyPeer]

# --- 1. the matrix ------------------------------------------------------------------------------

# How each server refuses a pair it does not trust, and what it answers when none is trusted.
SERVERS = {
    "registry": ("certificate", "rejected"),
    "nginx-400": ("certificate", 400),
    "nginx-403-no-ca-names": ("authorization", 403),
    "nginx-decoy-ca-names": ("certificate", 400),
    "haproxy-tls1.2": ("certificate", "rejected"),
    "haproxy-tls1.3": ("certificate", "rejected"),
}
LAYOUTS = {
    "right": ("a-right",),
    "wrong-right": ("a-wrong", "b-right"),
    "right-wrong": ("a-right", "b-wrong"),
    "wrong-wrong-right": ("a-wrong", "b-wrong2", "c-right"),
    "wrong-wrong": ("a-wrong", "b-wrong2"),
    "no-pair": (),
}


@dataclass
class Server:
    kind: str  # a key of SERVERS
    peer: Peer


@pytest.fixture(scope="module", params=sorted(SERVERS))
def server(
    request: pytest.FixtureRequest,
    pki: Pki,
    tmp_path_factory: pytest.TempPathFactory,
    mtls_ca_factory: Any,
) -> Iterator[Server]:
    kind: str = request.param
    binary = request.getfixturevalue(f"{kind.split('-')[0]}_bin")
    peer: Peer
    if kind == "registry":
        peer = RegistryPeer(binary=binary, **pki.peer)
    elif kind.startswith("haproxy"):
        peer = HAProxyPeer(tls_version=kind[-3:], binary=binary, **pki.peer)
    elif kind == "nginx-400":
        peer = NginxPeer(binary=binary, **pki.peer)
    elif kind == "nginx-403-no-ca-names":
        peer = NginxPeer(mode="status", advertise=False, binary=binary, **pki.peer)
    else:
        decoy = mtls_ca_factory(name="requests peers decoy CA")
        decoy_file = decoy.write(tmp_path_factory.mktemp("decoy") / "decoy.pem")
        peer = NginxPeer(advertise=decoy_file, binary=binary, **pki.peer)
    with peer:
        yield Server(kind, peer)


Record = tuple[Optional[str], str, Optional[str], Optional[int], str, Optional[bool], Optional[str]]


def record(attempt: Attempt) -> Record:
    return (
        attempt.candidate,
        attempt.verdict,
        attempt.layer,
        attempt.status,
        attempt.outcome,
        attempt.fresh,
        attempt.tls_version,
    )


def through(mode: str, root: Path, url: str) -> tuple[Any, list[Record], Optional[str]]:
    """``GET url`` through a fresh front end: the status (or ``"rejected"``), the records,
    the winner."""
    with Driver(mode, root=root) as http:
        try:
            response = http.get(url)
        except EveryCertificateRejected as exc:
            outcome, attempts = "rejected", exc.attempts
        else:
            outcome, attempts = response.status_code, attempts_of(response)
        return outcome, [record(a) for a in attempts], http.winner(url)


def expected(kind: str, pairs: tuple[str, ...]) -> tuple[Any, list[tuple[Any, ...]], Any]:
    """What the layout calls for: the pairs up to the first trusted one tried in order, the
    refused ones at the server's layer; its 200, or the server's answer to the first one."""
    layer, refused = SERVERS[kind]
    tried: list[tuple[Any, ...]] = []
    for name in pairs or (None,):
        if name is not None and "right" in name:
            return 200, [*tried, (name, "accepted", None)], name
        tried.append((name, "rejected", layer))
    return refused, tried, None


def served_to(peer: Union[NginxPeer, HAProxyPeer], uri: str) -> str:
    """The client certificate subject of the request for ``uri`` that was answered 200."""
    found: list[dict[str, str]] = []

    def look() -> bool:
        records = peer.requests() if isinstance(peer, HAProxyPeer) else peer.records()
        found[:] = [r for r in records if r["uri"] == uri and r["status"] == "200"]
        return bool(found)

    # A peer logs a request after answering it: the client may see the 200 first.
    assert peer.wait_for(look), f"no 200 logged for {uri}"
    return found[0]["ssl_client_s_dn"]


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_the_matrix_through_the_adapter_as_through_the_transport(
    layout: str, server: Server, pki: Pki, certs_d: CertsD
) -> None:
    peer, pairs = server.peer, LAYOUTS[layout]
    if pairs:
        folder(certs_d, peer.host, pki, *pairs)
    else:
        certs_d.host(peer.host).ca(pki.server_ca)
    results = {}
    for mode in ("sync", "requests"):
        uri = f"/v2/?t={layout}-{mode}"
        results[mode] = through(mode, certs_d.root, peer.url + uri)
        outcome, records, winner = results[mode]
        assert (outcome, [r[:3] for r in records], winner) == expected(server.kind, pairs), mode
        if outcome == 200 and isinstance(peer, RegistryPeer):  # it logs no certificate
            assert peer.request_for(uri)["http.response.status"] == 200
        elif outcome == 200:
            assert served_to(peer, uri) == "CN=right"
    # Not only the same verdicts: the same records to the letter (outcome texts, whether a
    # connection was opened for the try, the TLS version).
    assert results["requests"] == results["sync"]


# --- a registry behind a TLS front, for the clients ---------------------------------------------


@dataclass
class Registry:
    front: Union[NginxPeer, HAProxyPeer]

    @property
    def host(self) -> str:
        return self.front.host

    def refused_in_tls(self) -> list[dict[str, str]]:
        """Handshakes refused so far (haproxy); nginx refuses none: it answers its page."""
        if isinstance(self.front, HAProxyPeer):
            return self.front.handshake_failures()
        return []

    def check_logs(self, repository: str, refused_before: int) -> None:
        """Everything the registry served for ``repository`` carried ``b-right``'s
        certificate; ``a-wrong``'s was presented first, and refused: in TLS (haproxy) or with
        nginx's 400 page, never passed on to the registry."""
        if isinstance(self.front, HAProxyPeer):
            assert self.front.wait_for(lambda: len(self.refused_in_tls()) > refused_before)
            records = self.front.requests()
            refused = [f["ssl_client_s_dn"] for f in self.refused_in_tls()[refused_before:]]
        else:
            records = self.front.records()
        mine = [r for r in records if r["uri"].startswith(f"/v2/{repository}/")]
        served = [r["ssl_client_s_dn"] for r in mine if r["status"] != "400"]
        if isinstance(self.front, NginxPeer):
            refused = [r["ssl_client_s_dn"] for r in mine if r["status"] == "400"]
        assert served, "the server logged no request"
        assert set(served) == {"CN=right"}
        assert refused
        assert set(refused) == {"CN=wrong"}


@pytest.fixture(scope="module", params=["nginx", "haproxy"])
def registry(request: pytest.FixtureRequest, pki: Pki, registry_bin: str) -> Iterator[Registry]:
    """docker-registry (plain HTTP, no auth) behind nginx (400 pages) or haproxy (TLS alerts),
    both requiring a client certificate from the CA ``pki.right`` comes from."""
    binary = request.getfixturevalue(f"{request.param}_bin")
    front_type = NginxPeer if request.param == "nginx" else HAProxyPeer
    with (
        RegistryPeer(binary=registry_bin) as backend,
        front_type(upstream=backend.address, binary=binary, **pki.peer) as front,
    ):
        yield Registry(front)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# --- 2. oras-py -----------------------------------------------------------------------------------


def test_oras_push_and_pull(registry: Registry, pki: Pki, certs_d: CertsD, tmp_path: Path) -> None:
    folder(certs_d, registry.host, pki)  # a-wrong first, b-right second
    repository = f"dockercerts/oras-{registry.front.name}"
    target = f"{registry.host}/{repository}:v1"
    data = b"an artifact pushed with oras-py through dockercerts\n"
    source = tmp_path / "push" / "hello.txt"
    source.parent.mkdir()
    source.write_bytes(data)

    refused_before = len(registry.refused_in_tls())
    client = oras.client.OrasClient(hostname=registry.host)
    adapter = dockercerts.requests.Adapter(root=certs_d.root)
    client.session.mount("https://", adapter)
    with client.session:
        pushed = client.push(
            target=target, files=[str(source)], disable_path_validation=True, quiet=True
        )
        pulled = client.pull(target=target, outdir=str(tmp_path / "pull"))
        manifest = client.get_manifest(target)
        winner = adapter.winner(f"https://{registry.host}")

    assert pushed.status_code == 201
    assert [a.candidate for a in dockercerts.requests.attempts(pushed)] == ["b-right"]
    assert pushed.headers["Docker-Content-Digest"] == sha256(pushed.request.body)
    assert [Path(p).name for p in pulled] == ["hello.txt"]
    assert Path(pulled[0]).read_bytes() == data
    assert [layer["digest"] for layer in manifest["layers"]] == [sha256(data)]
    assert winner == "b-right"
    registry.check_logs(repository, refused_before)


# --- 3. python-dxf ----------------------------------------------------------------------------


def test_python_dxf_lists_tags_and_pulls_a_blob(
    registry: Registry, pki: Pki, certs_d: CertsD, tmp_path: Path
) -> None:
    folder(certs_d, registry.host, pki)
    repository = f"dockercerts/dxf-{registry.front.name}"
    data = b"a blob pushed and pulled with python-dxf through dockercerts\n"
    blob = tmp_path / "blob"
    blob.write_bytes(data)
    refused_before = len(registry.refused_in_tls())

    def connected(client: dxf.DXF) -> dockercerts.requests.Adapter:
        # python-dxf takes no session: the one it opens for the with block is where the
        # adapter goes (a private attribute of python-dxf's).
        adapter = dockercerts.requests.Adapter(root=certs_d.root)
        client._sessions[0].mount("https://", adapter)
        return adapter

    with dxf.DXF(registry.host, repository) as pusher:
        connected(pusher)
        # python-dxf asks with a HEAD first, which nginx answers 400 with no page to read
        # (see test_head_as_first_contact_with_nginx).
        digest = pusher.push_blob(str(blob))
        pusher.set_alias("v1", digest)
    # A fresh adapter: listing the tags is the first contact, the wrong pair first again.
    with dxf.DXF(registry.host, repository) as puller:
        adapter = connected(puller)
        tags = puller.list_aliases()
        pulled = b"".join(puller.pull_blob(digest))  # python-dxf checks the digest
        winner = adapter.winner(f"https://{registry.host}")
    assert digest == sha256(data)
    assert tags == ["v1"]
    assert pulled == data
    assert winner == "b-right"
    registry.check_logs(repository, refused_before)


@pytest.mark.parametrize("mode", ["sync", "requests"])
def test_head_as_first_contact_with_nginx(
    mode: str, nginx_bin: str, pki: Pki, certs_d: CertsD
) -> None:
    with NginxPeer(binary=nginx_bin, **pki.peer) as nginx:
        folder(certs_d, nginx.host, pki)
        with Driver(mode, root=certs_d.root) as http:
            response = http.request("HEAD", nginx.url + "/v2/")
            winner = http.winner(nginx.url)
    assert (response.status_code, winner) == (200, "b-right")


# --- 4. the example ---------------------------------------------------------------------------


def test_the_oras_example(registry: Registry, pki: Pki, certs_d: CertsD) -> None:
    folder(certs_d, registry.host, pki)
    refused_before = len(registry.refused_in_tls())
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "examples" / "oras_push_pull.py"),
            registry.host,
            "--root",
            str(certs_d.root),
            "--repository",
            f"dockercerts/example-{registry.front.name}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"pushed {registry.host}/dockercerts/example-")
    assert lines[-1].startswith("pulled hello.txt, sha256:")
    assert "client certificate: b-right" in proc.stderr
    registry.check_logs(f"dockercerts/example-{registry.front.name}", refused_before)


def test_the_oras_example_talks_to_this_machine_only(capsys: pytest.CaptureFixture[str]) -> None:
    example = load_example("oras_push_pull.py")
    assert example.main(["registry.example.com"]) == 2
    assert "is not a registry on this machine" in capsys.readouterr().err
    assert example.on_this_machine("[::1]:5000")
    assert example.on_this_machine("127.0.0.1:5000")
    assert not example.on_this_machine("localhost.example.com:5000")
