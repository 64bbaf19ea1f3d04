"""Parity with the real runtimes: ``ctr`` (containerd) and ``skopeo`` (containers/image) read
the same folders as dockercerts, against docker-registry behind nginx with mTLS.

For each layout, the tool and dockercerts must agree on the folder (``ctr --debug`` logs
``loading host directory``, ``skopeo --debug`` logs the folder and every file it read), on
success or failure (and the error's words, where the tool fails), and on the client
certificate the registry finally saw (nginx logs its subject per request). Where Go's
certificate choice fails (the server's CA names match no pair), dockercerts must not.

Debian 12 ships containerd 1.6.20 and skopeo 1.9.3. Where containerd 1.x differs from the
current sources dockercerts follows (a ``hosts.toml`` without ``[host]`` tables, the
``referrers`` capability), the tests assert the difference for 1.x and parity for 2.x; see
the README's containerd section.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import httpx
import pytest
from peers import NginxPeer, RegistryPeer, require_peer
from runtime_peers import ConnectProxy, ToolRun, require_tool, run_ctr, run_skopeo, tool_version
from test_peers_more import MANIFEST_V2, push_image

import dockercerts
from dockercerts import MissingKeyError, Transport
from dockercerts.errors import EndpointTLSError
from dockercerts.testing import CA, Leaf, MTLSServer

pytestmark = pytest.mark.peers

HOST = "registry.test:5000"
REF = f"{HOST}/team/app:v1"
MANIFEST_URL = f"https://{HOST}/v2/team/app/manifests/v1"


@dataclass
class Pki:
    server_ca: CA
    client_ca: CA
    other_ca: CA
    alice: Leaf  # accepted by the registry
    mallory: Leaf  # from a CA nginx does not accept (nor advertise)

    def combined(self, leaf: Leaf) -> bytes:
        return leaf.cert_pem + leaf.key_pem()


@dataclass
class Registry:
    nginx: NginxPeer
    proxy: ConnectProxy
    pki: Pki

    def records_after(self, count: int) -> list[dict[str, str]]:
        return self.nginx.records()[count:]


@pytest.fixture(scope="module")
def pki(mtls_ca_factory: Any) -> Pki:
    client_ca = mtls_ca_factory(name="parity client CA")
    other_ca = mtls_ca_factory(name="parity stranger CA")
    return Pki(
        server_ca=mtls_ca_factory(name="parity server CA"),
        client_ca=client_ca,
        other_ca=other_ca,
        alice=client_ca.issue_client("alice"),
        mallory=other_ca.issue_client("mallory"),
    )


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[Registry]:
    """docker-registry (plain HTTP) behind nginx (mTLS, ``ssl_verify_client on``), one image
    pushed, reached as ``registry.test:5000`` through a CONNECT proxy."""
    require_peer("nginx")
    require_peer("docker-registry")
    work = tmp_path_factory.mktemp("parity")
    server = pki.server_ca.issue_server("registry.test", "localhost", "127.0.0.1")
    server.write(work / "server.crt", work / "server.key")
    (work / "clients.pem").write_bytes(pki.client_ca.cert_pem)
    with RegistryPeer(workdir=work) as backend:
        with httpx.Client() as plain:
            push_image(plain, backend.url, "team/app", "v1")
        with (
            NginxPeer(
                server_cert=work / "server.crt",
                server_key=work / "server.key",
                client_ca=work / "clients.pem",
                upstream=backend.address,
                workdir=work,
            ) as nginx,
            ConnectProxy(nginx.port) as proxy,
        ):
            yield Registry(nginx, proxy, pki)


def write_tree(root: Path, files: dict[str, Union[bytes, str]]) -> None:
    """``files``: relative path -> content (bytes), or ``"->target"`` for a symbolic link,
    or ``"dir"`` for a folder."""
    root.mkdir(parents=True, exist_ok=True)
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if content == "dir":
            path.mkdir()
        elif isinstance(content, str):
            path.symlink_to(content[2:])
        else:
            path.write_bytes(content)
            path.chmod(0o600)


@dataclass
class Ours:
    ok: bool
    status: Optional[int]
    error: Optional[BaseException]
    winner: Optional[str]
    folder: Path
    subjects: set[str]


def ours(setup: Registry, runtime: str, **where: Any) -> Ours:
    """dockercerts' transport with ``runtime`` and ``where`` (``root=`` / ``cert_dir=``): the
    manifest request, the folder it read, the subject nginx saw on each answered request."""
    before = len(setup.nginx.records())
    folder = dockercerts.host_dir(HOST, runtime=runtime, **where)
    status: Optional[int] = None
    error: Optional[BaseException] = None
    transport = Transport(runtime=runtime, proxy=setup.proxy.url, trust_env=False, **where)
    with httpx.Client(transport=transport) as client:
        try:
            status = client.get(MANIFEST_URL, headers={"Accept": MANIFEST_V2}).status_code
        except httpx.HTTPError as exc:
            error = exc
        winner = transport.winner(MANIFEST_URL)
    return Ours(
        ok=status == 200,
        status=status,
        error=error,
        winner=winner,
        folder=folder,
        subjects=_accepted(setup, before, len(setup.nginx.records()) - before if status else 0),
    )


def _accepted(setup: Registry, before: int, expected: int) -> set[str]:
    if expected:
        setup.nginx.wait_for_records(before + expected)
    return {r["ssl_client_s_dn"] for r in setup.records_after(before) if r["status"] == "200"}


def tool_subjects(setup: Registry, before: int, run: ToolRun) -> set[str]:
    """Subjects of the tool's answered requests (nginx logs after answering: wait a little)."""
    if run.ok:
        setup.nginx.wait_for(lambda: any(r["status"] == "200" for r in setup.records_after(before)))
    return {r["ssl_client_s_dn"] for r in setup.records_after(before) if r["status"] == "200"}


# --- ctr (containerd) ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ctr() -> str:
    return require_tool("ctr")


def ctr_layouts(pki: Pki) -> dict[str, tuple[dict[str, Union[bytes, str]], str, bool]]:
    """name -> (files under the hosts dir, the folder containerd must read, success)."""
    ca = pki.server_ca.cert_pem
    alice, mallory = pki.combined(pki.alice), pki.combined(pki.mallory)
    table = f'[host."https://{HOST}"]\n'
    return {
        "host_port_ before host:port": (
            {
                "registry.test:5000/ca.crt": ca,
                "registry.test:5000/m.cert": mallory,
                "registry.test_5000_/ca.crt": ca,
                "registry.test_5000_/alice.cert": alice,
            },
            "registry.test_5000_",
            True,
        ),
        "_default when the host has no folder": (
            {"_default/ca.crt": ca, "_default/alice.cert": alice, "other:5000/ca.crt": ca},
            "_default",
            True,
        ),
        "hosts.toml host table: ca and a cert/key pair": (
            {
                "registry.test:5000/hosts.toml": table.encode()
                + b'ca = "pki/ca.pem"\nclient = [["pki/a.cert", "pki/a.key"]]\n',
                "registry.test:5000/pki/ca.pem": ca,
                "registry.test:5000/pki/a.cert": pki.alice.cert_pem,
                "registry.test:5000/pki/a.key": pki.alice.key_pem(),
            },
            "registry.test:5000",
            True,
        ),
        "hosts.toml client list, a stranger's first": (
            {
                "registry.test:5000/hosts.toml": table.encode()
                + b'ca = "ca.pem"\nclient = ["m.pem", "a.pem"]\n',
                "registry.test:5000/ca.pem": ca,
                "registry.test:5000/m.pem": mallory,
                "registry.test:5000/a.pem": alice,
            },
            "registry.test:5000",
            True,
        ),
        "loose files: combined .cert, lone .key, sub-folder .crt": (
            {
                "registry.test:5000/ca.crt": ca,
                "registry.test:5000/alice.cert": alice,
                "registry.test:5000/tls.key": pki.alice.key_pem(),
                "registry.test:5000/old.crt": "dir",
            },
            "registry.test:5000",
            True,
        ),
        "hosts.toml that does not decode: the loose files": (
            {
                "registry.test:5000/hosts.toml": table.encode() + b'capabilities = ["pul"]\n',
                "registry.test:5000/ca.crt": ca,
                "registry.test:5000/alice.cert": alice,
            },
            "registry.test:5000",
            True,
        ),
        "empty client list: no certificate": (
            {
                "registry.test:5000/hosts.toml": table.encode() + b'ca = "ca.pem"\nclient = []\n',
                "registry.test:5000/ca.pem": ca,
                "registry.test:5000/alice.cert": alice,
            },
            "registry.test:5000",
            False,
        ),
        'the documented ["cert", ""] pair: the folder read as the key': (
            {
                "registry.test:5000/hosts.toml": table.encode()
                + b'ca = "ca.pem"\nclient = [["a.pem", ""]]\n',
                "registry.test:5000/ca.pem": ca,
                "registry.test:5000/a.pem": alice,
            },
            "registry.test:5000",
            False,
        ),
        "a .crt without a certificate": (
            {
                "registry.test:5000/ca.crt": ca,
                "registry.test:5000/junk.crt": b"junk",
                "registry.test:5000/alice.cert": alice,
            },
            "registry.test:5000",
            False,
        ),
    }


LAYOUT_NAMES = [
    "host_port_ before host:port",
    "_default when the host has no folder",
    "hosts.toml host table: ca and a cert/key pair",
    "hosts.toml client list, a stranger's first",
    "loose files: combined .cert, lone .key, sub-folder .crt",
    "hosts.toml that does not decode: the loose files",
    "empty client list: no certificate",
    'the documented ["cert", ""] pair: the folder read as the key',
    "a .crt without a certificate",
]


@pytest.mark.parametrize("name", LAYOUT_NAMES)
def test_ctr_and_dockercerts_agree(name: str, ctr: str, registry: Registry, tmp_path: Path) -> None:
    files, folder, succeeds = ctr_layouts(registry.pki)[name]
    root = tmp_path / "hosts"
    write_tree(root, files)
    before = len(registry.nginx.records())
    run = run_ctr(ctr, root, REF, registry.proxy, tmp_path)
    theirs = tool_subjects(registry, before, run)
    mine = ours(registry, "containerd", root=root)

    assert run.folders == [str(root / folder)], run.stderr
    assert mine.folder == root / folder
    # Nothing resolves registry.test: both came in through the proxy.
    assert set(registry.proxy.targets) == {HOST}
    assert (run.ok, mine.ok) == (succeeds, succeeds), (run.stderr, mine)
    if succeeds:
        assert theirs == mine.subjects == {"CN=alice"}, run.stderr
    if name.startswith("hosts.toml that does not decode"):
        assert run.decode_errors == ["unknown capability pul"]
    if name == "empty client list: no certificate":
        # Both sent no certificate; nginx answered 400 to each.
        assert mine.status == 400
        assert "400" in run.error
    if not succeeds and mine.status is None:
        # containerd's own words, from the same file.
        assert isinstance(mine.error, dockercerts.CertsDirTransportError)
        assert isinstance(mine.error.error, EndpointTLSError)
        assert run.error == f"ctr: {mine.error}"


def test_ctr_1x_reads_loose_files_when_hosts_toml_has_no_host_table(
    ctr: str, registry: Registry, tmp_path: Path
) -> None:
    """containerd 1.x fails to decode a hosts.toml with no ``[host]`` table (``invalid
    `host` tree``) and reads the loose files; 2.x, and dockercerts, read the file."""
    pki = registry.pki
    root = tmp_path / "hosts"
    write_tree(
        root,
        {
            "registry.test:5000/hosts.toml": f'server = "https://{HOST}"\n'
            'ca = "ca.pem"\nclient = "a.pem"\n'.encode(),
            "registry.test:5000/ca.pem": pki.server_ca.cert_pem,
            "registry.test:5000/a.pem": pki.combined(pki.alice),
        },
    )
    run = run_ctr(ctr, root, REF, registry.proxy, tmp_path)
    mine = ours(registry, "containerd", root=root)
    assert mine.ok
    assert mine.subjects == {"CN=alice"}
    if tool_version(ctr) < (2, 0, 0):
        assert run.decode_errors == ["invalid `host` tree"]
        assert not run.ok
        assert "certificate signed by unknown authority" in run.error
    else:
        assert run.ok
        assert run.decode_errors == []


# --- skopeo (containers/image) -------------------------------------------------------------------


@pytest.fixture(scope="module")
def skopeo() -> str:
    return require_tool("skopeo")


def test_skopeo_cert_dir_folder_and_files(skopeo: str, registry: Registry, tmp_path: Path) -> None:
    pki = registry.pki
    flat = tmp_path / "flat"
    write_tree(
        flat,
        {
            "ca.crt": pki.server_ca.cert_pem,
            "a-stranger.cert": pki.mallory.cert_pem,
            "a-stranger.key": pki.mallory.key_pem(),
            "b-alice.cert": pki.alice.cert_pem,
            "b-alice.key": pki.alice.key_pem(),
            "gone.crt": "->nowhere.crt",
            "notes.pem": b"ignored",
        },
    )
    before = len(registry.nginx.records())
    run = run_skopeo(skopeo, REF, registry.proxy, tmp_path / "home", cert_dir=flat)
    theirs = tool_subjects(registry, before, run)
    mine = ours(registry, "podman", cert_dir=flat)
    assert run.folders == [str(flat)]
    assert mine.folder == flat
    assert run.ok, run.stderr
    assert mine.ok
    # Go sends the pair the server's CA names match (alice); dockercerts tries the stranger
    # first, is refused, and settles on alice: the registry sees the same certificate.
    assert theirs == mine.subjects == {"CN=alice"}
    assert mine.winner == "b-alice"
    # The same files, in the same order; the dangling gone.crt passed over by both.
    certs = dockercerts.load(HOST, runtime="podman", cert_dir=flat)
    read = [str(p) for p in certs.ca_files]
    for pair in certs.pairs:
        read += [str(pair.cert), str(pair.key)]
    assert sorted(run.files) == sorted([*read, str(flat / "gone.crt")])
    assert "crt-vanished" in {w.code for w in certs.warnings}


def test_skopeo_default_search_list_via_home(
    skopeo: str, registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pki = registry.pki
    home = tmp_path / "home"
    folder = home / ".config/containers/certs.d" / HOST
    write_tree(
        folder,
        {
            "ca.crt": pki.server_ca.cert_pem,
            "alice.cert": pki.alice.cert_pem,
            "alice.key": pki.alice.key_pem(),
        },
    )
    before = len(registry.nginx.records())
    run = run_skopeo(skopeo, REF, registry.proxy, home)
    theirs = tool_subjects(registry, before, run)
    monkeypatch.setenv("HOME", str(home))
    mine = ours(registry, "podman")
    assert run.folders == [str(folder)]
    assert mine.folder == folder
    assert run.ok, run.stderr
    assert mine.ok
    assert theirs == mine.subjects == {"CN=alice"}


def test_skopeo_missing_key_same_words(skopeo: str, registry: Registry, tmp_path: Path) -> None:
    flat = tmp_path / "flat"
    write_tree(flat, {"ca.crt": registry.pki.server_ca.cert_pem, "ca.cert": b"x"})
    run = run_skopeo(skopeo, REF, registry.proxy, tmp_path / "home", cert_dir=flat)
    with pytest.raises(MissingKeyError) as caught:
        dockercerts.load(HOST, runtime="podman", cert_dir=flat)
    assert not run.ok
    assert str(caught.value) in run.stderr
    assert "Note that CA certificates should use the extension .crt" in str(caught.value)


def test_go_sends_nothing_when_ca_names_match_no_pair_dockercerts_gets_through(
    skopeo: str, registry: Registry, tmp_path: Path, mtls_ca_factory: Any
) -> None:
    """The server accepts alice's CA but advertises another CA's name: Go finds no pair to
    send (crypto/tls ``getClientCertificate``), dockercerts tries alice and is let in."""
    pki = registry.pki
    server = pki.server_ca.issue_server("registry.test", "localhost", "127.0.0.1")
    unrelated = mtls_ca_factory(name="parity advertised-only CA")
    flat = tmp_path / "flat"
    write_tree(
        flat,
        {
            "ca.crt": pki.server_ca.cert_pem,
            "alice.cert": pki.alice.cert_pem,
            "alice.key": pki.alice.key_pem(),
        },
    )
    with (
        MTLSServer(
            server_cert=server, client_ca=pki.client_ca, reject="http", send_ca_names=[unrelated]
        ) as srv,
        ConnectProxy(srv.port) as proxy,
    ):
        run = run_skopeo(skopeo, REF, proxy, tmp_path / "home", cert_dir=flat)
        seen_by_skopeo = [r.client_subject for r in srv.requests]
        with httpx.Client(
            transport=Transport(runtime="podman", cert_dir=flat, proxy=proxy.url, trust_env=False)
        ) as client:
            response = client.get(f"https://{HOST}/v2/")
    assert not run.ok
    assert seen_by_skopeo
    assert set(seen_by_skopeo) == {None}
    assert response.status_code == 200
    assert srv.requests[-1].client_subject == "CN=alice"
