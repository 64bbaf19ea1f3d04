"""containerd's routing, dockercerts against real ``ctr --hosts-dir`` on the same mirror tree.

The world of ``test_mirrors_peers.py`` under names of its own (containerd treats
``localhost`` specially): ``mirror-a.test`` (``pull`` only, a ``[header]``),
``mirror-b.test`` (``pull`` and ``resolve``, under ``/cache/v2`` with ``override_path``)
and the server ``registry.test:5000``, each an nginx with mTLS and its own client
certificate, reached through a CONNECT proxy that maps each name to its nginx. ``ctr
content fetch-object`` (no daemon) and the transport fetch the same objects; nginx's logs
say which server each request hit, with which URI (``?ns=``, the path) and certificate.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from peers import NginxPeer
from runtime_peers import ConnectProxy, require_tool, run_ctr
from test_mirrors_peers import registries, served
from test_peers_more import MANIFEST_V2

from dockercerts import Transport

pytestmark = pytest.mark.peers

REGISTRY = "registry.test:5000"
EXTRA = b"a blob only the upstream holds (ctr parity)"
NS = "ns=registry.test%3A5000"


@dataclass
class Tree:
    peers: dict[str, NginxPeer]  # "a", "b", "up"
    proxy: ConnectProxy
    hosts: Path
    digest: str
    extra: str

    def marks(self) -> dict[str, int]:
        return {name: len(peer.records()) for name, peer in self.peers.items()}

    def since(self, marks: dict[str, int], wait: int = 0) -> list[tuple[str, str, str, str]]:
        """(peer, uri, status, client subject) of every request after ``marks``."""
        out = []
        for name, peer in self.peers.items():
            for record in peer.records()[marks[name] :]:
                out.append((name, record["uri"], record["status"], record["ssl_client_s_dn"]))
        return out


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory, mtls_ca_factory: Any) -> Iterator[Tree]:
    work = served(
        tmp_path_factory, mtls_ca_factory, "mirrors-ctr", "registry.test", "mirror-a.test",
        "mirror-b.test",
    )  # fmt: skip
    clients = mtls_ca_factory(name="ctr mirrors client CA")
    clients.write(work / "clients.pem")
    for name in ("a", "b", "up"):
        clients.issue_client(f"ctr-{name}").write(work / f"{name}.crt", work / f"{name}.key")
    tls = {
        "server_cert": work / "server.crt",
        "server_key": work / "server.key",
        "client_ca": work / "clients.pem",
    }
    with (
        registries(work, EXTRA) as (mirror, upstream, digest, extra),
        NginxPeer(**tls, upstream=mirror.address, workdir=work / "a") as a,
        NginxPeer(**tls, upstream=mirror.address, prefix="/cache", workdir=work / "b") as b,
        NginxPeer(**tls, upstream=upstream.address, workdir=work / "up") as up,
        ConnectProxy(
            up.port,
            {"mirror-a.test:443": a.port, "mirror-b.test:443": b.port, REGISTRY: up.port},
        ) as proxy,
    ):
        hosts = work / "hosts"
        folder = hosts / REGISTRY
        folder.mkdir(parents=True)

        def tls_of(name: str) -> str:
            return (
                f'ca = "{work / "server-ca.crt"}"\n'
                f'client = [["{work / name}.crt", "{work / name}.key"]]\n'
            )

        (folder / "hosts.toml").write_text(
            f'server = "https://{REGISTRY}"\n{tls_of("up")}'
            f'[host."https://mirror-a.test"]\ncapabilities = ["pull"]\n{tls_of("a")}'
            '[host."https://mirror-a.test".header]\nX-Mirror-Test = "from-a"\n'
            f'[host."https://mirror-b.test/cache/v2"]\ncapabilities = ["pull", "resolve"]\n'
            f"override_path = true\n{tls_of('b')}"
        )
        yield Tree({"a": a, "b": b, "up": up}, proxy, hosts, digest, extra)


@pytest.fixture(scope="module")
def ctr() -> str:
    return require_tool("ctr")


def _ours(tree: Tree, *requests: tuple[str, str]) -> list[httpx.Response]:
    transport = Transport(
        runtime="containerd", root=tree.hosts, proxy=tree.proxy.url, trust_env=False, recheck=0
    )
    with httpx.Client(transport=transport) as client:
        return [
            client.request(method, f"https://{REGISTRY}/v2/{path}", headers={"Accept": MANIFEST_V2})
            for method, path in requests
        ]


def _settled(tree: Tree, marks: dict[str, int], count: int) -> list[tuple[str, str, str, str]]:
    """The requests after ``marks``, once nginx has logged ``count`` of them (it logs after
    answering)."""
    tree.peers["up"].wait_for(lambda: len(tree.since(marks)) >= count)
    return tree.since(marks)


def _ctr(
    ctr: str, tree: Tree, ref: str, tmp_path: Path, count: int
) -> list[tuple[str, str, str, str]]:
    """``ctr content fetch-object`` of ``ref`` succeeds; the requests it made."""
    marks = tree.marks()
    run = run_ctr(ctr, tree.hosts, ref, tree.proxy, tmp_path)
    assert run.ok, run.stderr
    return _settled(tree, marks, count)


def test_a_tag_resolves_at_the_resolve_mirror_and_its_manifest_comes_from_the_pull_one(
    ctr: str, tree: Tree, tmp_path: Path
) -> None:
    theirs = _ctr(ctr, tree, f"{REGISTRY}/team/app:v1", tmp_path, 2)
    resolved = ("b", f"/cache/v2/team/app/manifests/v1?{NS}", "200", "CN=ctr-b")
    fetched = ("a", f"/v2/team/app/manifests/{tree.digest}?{NS}", "200", "CN=ctr-a")
    # ctr: the tag at the pull+resolve mirror only, the manifest by digest at the first pull one.
    assert resolved in theirs, theirs
    assert fetched in theirs, theirs
    assert not [r for r in theirs if r[0] == "up" or (r[0] == "a" and "manifests/v1" in r[1])]

    marks = tree.marks()
    tag, manifest = _ours(
        tree, ("HEAD", "team/app/manifests/v1"), ("GET", f"team/app/manifests/{tree.digest}")
    )
    assert tag.status_code == manifest.status_code == 200
    # The same servers, the same URIs (path, ?ns=), the same client certificates.
    assert sorted(_settled(tree, marks, 2)) == sorted([resolved, fetched])


def test_a_blob_missing_on_the_mirrors_comes_from_the_server_for_both(
    ctr: str, tree: Tree, tmp_path: Path
) -> None:
    # ctr walks twice (resolve: HEAD manifests/ then blobs/ at each; fetch: GET blobs/), and
    # the server answers its manifest HEAD for a blob's digest 500: the blob requests count.
    everything = _ctr(ctr, tree, f"{REGISTRY}/team/app@{tree.extra}", tmp_path, 3)
    theirs = [r for r in everything if "/blobs/" in r[1]]
    blob = f"/team/app/blobs/{tree.extra}"
    # Each blob request in the walk's order: the mirrors (404), then the server (no ?ns=).
    walk = [
        ("a", f"/v2{blob}?{NS}", "404", "CN=ctr-a"),
        ("b", f"/cache/v2{blob}?{NS}", "404", "CN=ctr-b"),
        ("up", f"/v2{blob}", "200", "CN=ctr-up"),
    ]
    assert set(theirs) == set(walk), theirs

    marks = tree.marks()
    (response,) = _ours(tree, ("GET", f"team/app/blobs/{tree.extra}"))
    assert response.content == EXTRA
    assert sorted(_settled(tree, marks, 3)) == sorted(walk)
