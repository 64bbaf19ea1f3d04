"""containerd's routing in the transports (``runtime="containerd"``), against real registries.

Two docker-registry instances, a "mirror" (the image, without an extra blob) and the
"upstream" (the image and the extra blob), each behind nginx with mTLS and a client CA of
its own. The mirror is reached through two nginx fronts: ``A`` (``pull`` only, a
``[header]``) and ``B`` (``pull`` and ``resolve``, served under ``/cache/v2`` and reached
with ``override_path``). The upstream is ``server``. nginx's logs say which endpoint each
request reached, with which client certificate, query and header.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from peers import NginxPeer, RegistryPeer, free_port, require_peer
from test_peers_more import MANIFEST_V2, push_blob, push_image
from tokenserver import TokenServer

from dockercerts import AsyncTransport, Transport

pytestmark = pytest.mark.peers

EXTRA = b"a blob only the upstream holds"


@dataclass
class World:
    a: NginxPeer
    b: NginxPeer
    up: NginxPeer
    root: Path
    digest: str  # the manifest's
    extra: str  # the blob only upstream has
    work: Path

    @property
    def registry(self) -> str:
        return f"localhost:{self.up.port}"

    def url(self, path: str) -> str:
        return f"https://{self.registry}/v2/{path}"

    def endpoint(self, peer: NginxPeer, path: str = "/v2") -> str:
        return f"https://localhost:{peer.port}{path}"

    def hosts_toml(self, root: Path, mirrors: str) -> Path:
        folder = root / self.registry
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "hosts.toml").write_text(
            f'server = "https://{self.registry}"\nca = "{self.work / "server-ca.crt"}"\n'
            f'client = [["{self.work / "up.crt"}", "{self.work / "up.key"}"]]\n' + mirrors
        )
        return root


def _host(world: World, url: str, capabilities: str, client: str, extra: str = "") -> str:
    work = world.work
    return (
        f'[host."{url}"]\ncapabilities = {capabilities}\nca = "{work / "server-ca.crt"}"\n'
        f'client = [["{work / client}.crt", "{work / client}.key"]]\n{extra}'
    )


def mirrors(world: World) -> str:
    return _host(
        world,
        world.endpoint(world.a),
        '["pull"]',
        "a",
        f'[host."{world.endpoint(world.a)}".header]\nX-Mirror-Test = "from-a"\n',
    ) + _host(
        world,
        world.endpoint(world.b, "/cache/v2"),
        '["pull", "resolve"]',
        "b",
        "override_path = true\n",
    )


def served(
    factory: pytest.TempPathFactory, mtls_ca_factory: Any, name: str, *server_names: str
) -> Path:
    """A work folder for a mirror world (the peers it needs checked first) with the servers'
    CA (``server-ca.crt``) and their certificate for ``server_names`` (``server.crt``/``.key``)."""
    require_peer("nginx")
    require_peer("docker-registry")
    work = factory.mktemp(name)
    server_ca = mtls_ca_factory(name=f"{name} server CA")
    server_ca.write(work / "server-ca.crt")
    server_ca.issue_server(*server_names).write(work / "server.crt", work / "server.key")
    return work


@contextlib.contextmanager
def registries(work: Path, extra: bytes) -> Iterator[tuple[RegistryPeer, RegistryPeer, str, str]]:
    """The mirror and the upstream registries, both with ``team/app:v1`` and the upstream
    with the blob ``extra``: ``(mirror, upstream, the manifest's digest, extra's digest)``."""
    with (
        RegistryPeer(workdir=work / "mirror") as mirror,
        RegistryPeer(workdir=work / "upstream") as upstream,
    ):
        with httpx.Client() as plain:
            digest = push_image(plain, mirror.url, "team/app", "v1")
            assert push_image(plain, upstream.url, "team/app", "v1") == digest
            blob = push_blob(plain, upstream.url, "team/app", extra)
        yield mirror, upstream, digest, blob


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, mtls_ca_factory: Any) -> Iterator[World]:
    work = served(tmp_path_factory, mtls_ca_factory, "mirrors", "localhost", "127.0.0.1")
    mirror_ca = mtls_ca_factory(name="mirror client CA")
    upstream_ca = mtls_ca_factory(name="upstream client CA")
    mirror_ca.write(work / "mirror-clients.pem")
    upstream_ca.write(work / "upstream-clients.pem")
    mirror_ca.issue_client("mirror-a").write(work / "a.crt", work / "a.key")
    mirror_ca.issue_client("mirror-b").write(work / "b.crt", work / "b.key")
    upstream_ca.issue_client("upstream").write(work / "up.crt", work / "up.key")
    tls = {"server_cert": work / "server.crt", "server_key": work / "server.key"}
    with registries(work, EXTRA) as (mirror, upstream, digest, extra):
        with httpx.Client() as plain:
            push_image(plain, upstream.url, "team/app", "only-up")
        mirror_cas = work / "mirror-clients.pem"
        with (
            NginxPeer(
                **tls, client_ca=mirror_cas, upstream=mirror.address, workdir=work / "a"
            ) as a,
            NginxPeer(
                **tls,
                client_ca=mirror_cas,
                upstream=mirror.address,
                prefix="/cache",
                protocols=("TLSv1.2",),
                workdir=work / "b",
            ) as b,
            NginxPeer(
                **tls,
                client_ca=work / "upstream-clients.pem",
                upstream=upstream.address,
                protocols=("TLSv1.3",),
                workdir=work / "up",
            ) as up,
        ):
            world = World(a, b, up, work / "certs.d", digest, extra, work)
            world.hosts_toml(world.root, mirrors(world))
            yield world


def _transport(world: World, root: Path, **options: Any) -> Transport:
    return Transport(runtime="containerd", root=root, trust_env=False, **options)


def _where(response: httpx.Response) -> list[tuple[str, str]]:
    return [(str(a.endpoint), a.outcome) for a in response.extensions["dockercerts.attempts"]]


def _record(peer: NginxPeer, uri: str) -> dict[str, str]:
    return peer.record_for(uri)


def test_resolve_skips_the_pull_only_mirror_and_uses_override_path(world: World) -> None:
    with httpx.Client(transport=_transport(world, world.root, recheck=0)) as client:
        response = client.get(world.url("team/app/manifests/v1"), headers={"Accept": MANIFEST_V2})
    assert response.status_code == 200
    assert response.headers["Docker-Content-Digest"] == world.digest
    assert _where(response) == [(world.endpoint(world.b, "/cache/v2"), "HTTP 200")]
    ns = f"ns=localhost%3A{world.up.port}"
    record = _record(world.b, f"/cache/v2/team/app/manifests/v1?{ns}")
    assert record["ssl_client_s_dn"] == "CN=mirror-b"
    assert record["ssl_protocol"] == "TLSv1.2"
    assert not [r for r in world.a.records() if "manifests/v1" in r["uri"]]


def test_pull_by_digest_goes_to_the_first_mirror_with_its_header(world: World) -> None:
    with httpx.Client(transport=_transport(world, world.root, recheck=0)) as client:
        response = client.get(
            world.url(f"team/app/manifests/{world.digest}"), headers={"Accept": MANIFEST_V2}
        )
    assert response.status_code == 200
    assert _where(response) == [(world.endpoint(world.a), "HTTP 200")]
    ns = f"ns=localhost%3A{world.up.port}"
    record = _record(world.a, f"/v2/team/app/manifests/{world.digest}?{ns}")
    assert record["ssl_client_s_dn"] == "CN=mirror-a"
    assert record["x_mirror_test"] == "from-a"


def test_blob_missing_on_the_mirrors_falls_back_to_the_server(world: World) -> None:
    with httpx.Client(transport=_transport(world, world.root, recheck=0)) as client:
        response = client.get(world.url(f"team/app/blobs/{world.extra}"))
    assert response.status_code == 200
    assert response.content == EXTRA
    assert _where(response) == [
        (world.endpoint(world.a), "HTTP 404"),
        (world.endpoint(world.b, "/cache/v2"), "HTTP 404"),
        (world.endpoint(world.up), "HTTP 200"),
    ]
    # No ?ns= at the registry itself, and its own client certificate.
    record = _record(world.up, f"/v2/team/app/blobs/{world.extra}")
    assert record["ssl_client_s_dn"] == "CN=upstream"
    assert record["ssl_protocol"] == "TLSv1.3"
    assert record["x_mirror_test"] == ""


def test_every_endpoint_404_gives_the_404(world: World) -> None:
    missing = "sha256:" + "0" * 64
    with httpx.Client(transport=_transport(world, world.root, recheck=0)) as client:
        response = client.get(world.url(f"team/app/blobs/{missing}"))
    assert response.status_code == 404
    assert [a.status for a in response.extensions["dockercerts.attempts"]] == [404, 404, 404]


def test_tag_only_upstream_and_push_only_to_the_server(world: World) -> None:
    with httpx.Client(transport=_transport(world, world.root, recheck=0)) as client:
        resolved = client.head(
            world.url("team/app/manifests/only-up"), headers={"Accept": MANIFEST_V2}
        )
        started = client.post(world.url("team/app/blobs/uploads/"))
    assert resolved.status_code == 200
    assert [e for e, _ in _where(resolved)] == [
        world.endpoint(world.b, "/cache/v2"),
        world.endpoint(world.up),
    ]
    assert started.status_code == 202
    assert _where(started) == [(world.endpoint(world.up), "HTTP 202")]


def test_mirror_down_falls_back_and_the_server_sticks(world: World, tmp_path: Path) -> None:
    dead = f"https://localhost:{free_port()}"
    root = world.hosts_toml(tmp_path, _host(world, dead, '["pull"]', "a"))
    url = world.url(f"team/app/blobs/{world.extra}")
    with httpx.Client(transport=_transport(world, root)) as client:
        first = client.get(url)
        second = client.get(url)
    assert first.status_code == second.status_code == 200
    endpoints = [a.endpoint for a in first.extensions["dockercerts.attempts"]]
    assert endpoints == [dead + "/v2", world.endpoint(world.up)]
    assert first.extensions["dockercerts.attempts"][0].verdict == "error"
    # Within recheck seconds the walk starts at the endpoint that answered.
    assert _where(second) == [(world.endpoint(world.up), "HTTP 200")]


def test_a_challenge_at_a_mirror_is_returned_and_the_token_goes_there(
    world: World, tmp_path: Path
) -> None:
    """A mirror with token auth (docker-registry behind nginx with mTLS) after a mirror that
    lacks the blob: its 401 challenge ends the walk, and the request retried with the token
    goes straight to it (the sticky endpoint), not to the first mirror or the server."""
    with (
        TokenServer() as tokens,
        RegistryPeer(token_auth=tokens.auth, workdir=tmp_path / "registry") as registry,
    ):
        push = {"Authorization": "Bearer " + tokens.token_for("repository:team/app:pull,push")}
        with httpx.Client(headers=push) as plain:
            digest = push_blob(plain, registry.url, "team/app", EXTRA)
        assert digest == world.extra
        with NginxPeer(
            server_cert=world.work / "server.crt",
            server_key=world.work / "server.key",
            client_ca=world.work / "mirror-clients.pem",
            upstream=registry.address,
            workdir=tmp_path / "nginx",
        ) as guarded:
            root = world.hosts_toml(
                tmp_path / "certs.d",
                _host(world, world.endpoint(world.a), '["pull"]', "a")
                + _host(world, world.endpoint(guarded), '["pull"]', "b"),
            )
            url = world.url(f"team/app/blobs/{world.extra}")
            with httpx.Client(transport=_transport(world, root)) as client:
                challenged = client.get(url)
                token = tokens.fetch("repository:team/app:pull")
                pulled = client.get(url, headers={"Authorization": f"Bearer {token}"})
            assert challenged.status_code == 401
            assert challenged.headers["WWW-Authenticate"].startswith(
                f'Bearer realm="{tokens.realm}"'
            )
            assert _where(challenged) == [
                (world.endpoint(world.a), "HTTP 404"),
                (world.endpoint(guarded), "HTTP 401 (token challenge)"),
            ]
            assert pulled.status_code == 200
            assert pulled.content == EXTRA
            assert _where(pulled) == [(world.endpoint(guarded), "HTTP 200")]
            ns = f"ns=localhost%3A{world.up.port}"
            # nginx logs a request after answering it: wait for both lines.
            records = [r for r in guarded.wait_for_records(2) if r["uri"].endswith(ns)]
            assert [r["status"] for r in records] == ["401", "200"]
            assert {r["ssl_client_s_dn"] for r in records} == {"CN=mirror-b"}


def test_docker_runtime_routes_nothing(world: World) -> None:
    # The same tree read by Docker's rules: no hosts.toml, the request goes where it says
    # (and fails: Docker's folder for the host has no client certificate for nginx).
    with (
        httpx.Client(transport=Transport(root=world.root, trust_env=False), verify=False) as client,
        pytest.raises(httpx.HTTPError),
    ):
        client.get(world.url("team/app/manifests/v1"))


@pytest.mark.anyio
async def test_async_twin_walks_the_same_way(world: World) -> None:
    transport = AsyncTransport(runtime="containerd", root=world.root, trust_env=False, recheck=0)
    async with httpx.AsyncClient(transport=transport) as client:
        resolved = await client.get(
            world.url("team/app/manifests/v1"), headers={"Accept": MANIFEST_V2}
        )
        blob = await client.get(world.url(f"team/app/blobs/{world.extra}"))
    assert resolved.status_code == blob.status_code == 200
    assert _where(resolved) == [(world.endpoint(world.b, "/cache/v2"), "HTTP 200")]
    assert [e for e, _ in _where(blob)] == [
        world.endpoint(world.a),
        world.endpoint(world.b, "/cache/v2"),
        world.endpoint(world.up),
    ]
    assert blob.content == EXTRA


def test_requests_adapter_walks_the_same_way(world: World) -> None:
    """dockercerts.requests.Adapter routes with the same flow: the same endpoints, the same
    rewrite (override_path, ?ns=, [header]), each endpoint's own client pair."""
    adapter_module = pytest.importorskip("dockercerts.requests")
    ns = f"ns=localhost%3A{world.up.port}"
    with adapter_module.session(
        runtime="containerd", root=world.root, recheck=0, trust_env=False
    ) as session:
        resolved = session.get(
            world.url("team/app/manifests/v1"), headers={"Accept": MANIFEST_V2}, timeout=10
        )
        by_digest = session.get(
            world.url(f"team/app/manifests/{world.digest}?t=requests"),
            headers={"Accept": MANIFEST_V2},
            timeout=10,
        )
        blob = session.get(world.url(f"team/app/blobs/{world.extra}"), timeout=10)
        started = session.post(world.url("team/app/blobs/uploads/"), timeout=10)

    def where(response: Any) -> list[tuple[str, str]]:
        return [(str(a.endpoint), a.outcome) for a in adapter_module.attempts(response)]

    assert resolved.status_code == 200
    assert resolved.headers["Docker-Content-Digest"] == world.digest
    assert where(resolved) == [(world.endpoint(world.b, "/cache/v2"), "HTTP 200")]
    assert by_digest.status_code == 200
    assert where(by_digest) == [(world.endpoint(world.a), "HTTP 200")]
    # Keys sorted, as containerd re-encodes the query.
    record = _record(world.a, f"/v2/team/app/manifests/{world.digest}?{ns}&t=requests")
    assert (record["ssl_client_s_dn"], record["x_mirror_test"]) == ("CN=mirror-a", "from-a")
    assert blob.content == EXTRA
    assert [e for e, _ in where(blob)] == [
        world.endpoint(world.a),
        world.endpoint(world.b, "/cache/v2"),
        world.endpoint(world.up),
    ]
    assert started.status_code == 202
    assert where(started) == [(world.endpoint(world.up), "HTTP 202")]
    # The request is the caller's again; the response's URL is where it was answered (a
    # relative redirect from a mirror is followed at the mirror, as containerd follows it).
    assert resolved.request.url == world.url("team/app/manifests/v1")
    assert resolved.url == world.endpoint(world.b, f"/cache/v2/team/app/manifests/v1?{ns}")
    assert blob.url == world.url(f"team/app/blobs/{world.extra}")
