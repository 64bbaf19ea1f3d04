"""The CA names servers ask for, what Go sends for them, and ``order="ca-names"``.

1. Reading the names from real nginx (TLS 1.2 and 1.3), directly and through tinyproxy.
2. The probe's "what Docker would send" against real skopeo (a Go client of
   containers/image) on the same folder and server.
3. ``order="ca-names"`` against nginx: which pairs are tried, in which order.
4. ``order="ca-names"`` against :class:`~dockercerts.testing.MTLSServer`, which counts
   connections: handshakes of a first request, when the names are read, a failed read,
   concurrency; without pyOpenSSL; bad values.

Sections 3 and 4 run through the three front ends (``MODES``): the transports and the
requests adapter.

nginx lists in its CertificateRequest the names of ``ssl_client_certificate`` and trusts
``ssl_trusted_certificate`` without listing it, which gives every case Go cares about:

=====================  =============================  ===============================
server                 lists                          trusts
=====================  =============================  ===============================
``listed``             the clients' root              the root
``root-only``          the root                       the root and its intermediate
``none``               nothing (``optional_no_ca``)   the root (403 for anything else)
``decoy``              a decoy CA                     the root (and the decoy)
``not-asked``          no CertificateRequest at all   -
=====================  =============================  ===============================

Each folder has a pair no server trusts first, then the pair under test: issued by the root,
by its intermediate with the intermediate in the ``.cert``, or by the intermediate as a bare
leaf (moby#21148). ``dockercerts probe`` says what Go sends and whether it is accepted;
skopeo, run on the same folder against the same server, must agree: it succeeds exactly when
the probe says so, and nginx logs the certificate the probe says Go sends. The ``peers``
marker is on sections 1-3.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import anyio
import httpx
import pytest
import requests
from peers import NginxPeer, TinyproxyPeer, require_peer, require_pyopenssl

import dockercerts.requests
from dockercerts import AsyncTransport, Transport, canames
from dockercerts.canames import read_ca_names
from dockercerts.cli import main, probe_report
from dockercerts.errors import Attempt, CANamesError, MissingExtraError
from dockercerts.pytest_plugin import CAFactory, ServerFactory
from dockercerts.requests import Adapter
from dockercerts.testing import CA, CertsD, Leaf, MTLSServer

peers = pytest.mark.peers

TLS_VERSIONS = ("1.2", "1.3")
MODES = ("sync", "async", "requests")
K = 4  # the right pair's place in Docker's order, in section 4


@pytest.fixture(autouse=True)
def _pyopenssl() -> None:
    require_pyopenssl()


@dataclass
class Pki:
    server_ca: CA
    root: CA  # the clients' root, which every server trusts
    issuing: CA  # its intermediate
    decoy: CA
    stranger: Leaf  # from a CA no server trusts
    right: Leaf  # issued by the root
    chained: Leaf  # issued by the intermediate, the intermediate in its .cert
    leaf_only: Leaf  # issued by the intermediate, alone in its .cert
    files: dict[str, Path]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory, mtls_ca_factory: Any) -> Pki:
    d = tmp_path_factory.mktemp("canames")
    server_ca = mtls_ca_factory(name="canames server CA")
    cert, key = server_ca.issue_server().write(d / "server.pem", d / "server.key")
    root = mtls_ca_factory(name="canames clients root")
    issuing = root.intermediate("canames clients issuing")
    decoy = mtls_ca_factory(name="canames decoy CA")
    (d / "root+issuing.pem").write_bytes(root.cert_pem + issuing.cert_pem)
    return Pki(
        server_ca=server_ca,
        root=root,
        issuing=issuing,
        decoy=decoy,
        stranger=mtls_ca_factory(name="canames stranger CA").issue_client("stranger"),
        right=root.issue_client("right"),
        chained=issuing.issue_client("chained"),
        leaf_only=issuing.issue_client("leaf-only", include_chain=False),
        files={
            "server_cert": cert,
            "server_key": key,
            "root": root.write(d / "root.pem"),
            "root+issuing": d / "root+issuing.pem",
            "decoy": decoy.write(d / "decoy.pem"),
        },
    )


@pytest.fixture(scope="module")
def nginx_bin() -> str:
    require_pyopenssl()
    return require_peer("nginx")


def nginx(pki: Pki, server: str, tls: str, binary: str) -> NginxPeer:
    """nginx for one row of the module docstring's table."""
    files = pki.files
    options: dict[str, Any] = {"client_ca": files["root"]}
    if server == "root-only":
        options = {"client_ca": files["root+issuing"], "advertise": files["root"]}
    elif server == "none":
        options.update(mode="status", advertise=False)
    elif server == "decoy":
        options["advertise"] = files["decoy"]
    elif server == "not-asked":
        options["verify_client"] = "off"
    return NginxPeer(
        server_cert=files["server_cert"],
        server_key=files["server_key"],
        protocols=(f"TLSv{tls}",),
        binary=binary,
        **options,
    )


def folder(certs_d: CertsD, peer: NginxPeer, pki: Pki, under_test: str) -> Path:
    """``a-stranger`` first, then ``b-<under_test>``; the intermediate as a .crt too, so
    inspect can see the bare leaf's issuer is one."""
    leaf = {"right": pki.right, "chained": pki.chained, "leaf-only": pki.leaf_only}[under_test]
    host = certs_d.host(peer.host).ca(pki.server_ca).ca(pki.issuing, "issuing.crt")
    host.pair("a-stranger", pki.stranger).pair(f"b-{under_test}", leaf)
    return host.path


def get(mode: str, transport: Any, url: str) -> Any:
    """``GET url`` through ``transport`` (for ``"requests"``, an adapter) in a client of
    its own."""
    if mode == "sync":
        with httpx.Client(transport=transport) as client:
            return client.get(url)
    if mode == "requests":
        with requests.Session() as session:
            session.mount("https://", transport)
            return session.get(url, timeout=10)

    async def run() -> httpx.Response:
        async with httpx.AsyncClient(transport=transport) as client:
            return await client.get(url)

    return anyio.run(run)


def make(mode: str, **options: Any) -> Any:
    return {"sync": Transport, "async": AsyncTransport, "requests": Adapter}[mode](**options)


def attempts_of(response: Any) -> tuple[Attempt, ...]:
    if isinstance(response, requests.Response):
        return dockercerts.requests.attempts(response)
    found: tuple[Attempt, ...] = response.extensions["dockercerts.attempts"]
    return found


# --- 1. reading the names ---------------------------------------------------------------------


@peers
@pytest.mark.parametrize("tls", TLS_VERSIONS)
@pytest.mark.parametrize(
    ("server", "expected"),
    [
        ("listed", ["root"]),
        ("root-only", ["root"]),
        ("none", []),
        ("decoy", ["decoy"]),
        ("not-asked", None),
    ],
)
def test_read_ca_names_from_nginx(
    nginx_bin: str, pki: Pki, server: str, expected: Optional[list[str]], tls: str
) -> None:
    with nginx(pki, server, tls, nginx_bin) as peer:
        found = read_ca_names("localhost", peer.port)
        by_ip = read_ca_names("127.0.0.1", peer.port)  # no SNI for an address
    assert found == by_ip
    assert found.tls_version == f"TLSv{tls}"
    if expected is None:
        assert (found.requested, found.names) == (False, ())
        return
    cas = [getattr(pki, name) for name in expected]
    assert found.requested
    # The very bytes of each CA's subject, which is what Go compares.
    assert list(found.names) == [ca.certificate.subject.public_bytes() for ca in cas]
    assert list(found.texts) == [ca.subject for ca in cas]


@peers
def test_read_ca_names_through_an_http_proxy(
    nginx_bin: str, pki: Pki, tinyproxy_peer: TinyproxyPeer
) -> None:
    with nginx(pki, "listed", "1.3", nginx_bin) as peer:
        before = len(tinyproxy_peer.connects())
        found = read_ca_names("localhost", peer.port, proxy=httpx.Proxy(tinyproxy_peer.url))
        assert tinyproxy_peer.connects()[before:] == [peer.host]
    assert found.texts == (pki.root.subject,)


@pytest.fixture(scope="module")
def tinyproxy_peer() -> Iterator[TinyproxyPeer]:
    with TinyproxyPeer(binary=require_peer("tinyproxy")) as peer:
        yield peer


# --- 2. the probe's Go column, checked against skopeo ------------------------------------------

# (server, pair under test) -> (what Go sends, accepted); a-stranger is always first.
GO_CASES = {
    ("listed", "right"): ("b-right", True),
    ("listed", "chained"): ("b-chained", True),  # the intermediate's issuer is listed
    ("root-only", "leaf-only"): (None, False),  # moby#21148: the leaf's issuer is not
    ("none", "right"): ("a-stranger", False),  # no names: the first pair
    ("decoy", "right"): (None, False),
    ("not-asked", "right"): (None, True),
}


def skopeo(
    binary: str, cert_dir: Path, peer: NginxPeer, home: Path
) -> subprocess.CompletedProcess[str]:
    """``skopeo list-tags`` with ``cert_dir`` as its whole certs.d folder (``--cert-dir``)."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),  # no auth file, registries.conf or policy of this machine's user
        "XDG_RUNTIME_DIR": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
    }
    return subprocess.run(
        [
            binary,
            "list-tags",
            "--tls-verify=true",
            "--cert-dir",
            str(cert_dir),
            f"docker://localhost:{peer.port}/team/app",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


@peers
@pytest.mark.parametrize("tls", TLS_VERSIONS)
@pytest.mark.parametrize(("server", "pair"), list(GO_CASES))
def test_probe_says_what_go_sends_and_skopeo_agrees(
    nginx_bin: str,
    pki: Pki,
    certs_d: CertsD,
    tmp_path: Path,
    server: str,
    pair: str,
    tls: str,
) -> None:
    skopeo_bin = require_peer("skopeo")
    sends, accepted = GO_CASES[server, pair]
    with nginx(pki, server, tls, nginx_bin) as peer:
        cert_dir = folder(certs_d, peer, pki, pair)
        report = probe_report(f"{peer.url}/v2/?probe", root=str(certs_d.path))
        ran = skopeo(skopeo_bin, cert_dir, peer, tmp_path)
        # skopeo's first request is its ping of /v2/; the probe asked for /v2/?probe.
        ping = peer.record_for("/v2/")

    go = report["go"]
    assert (go["sends"], go["accepted"]) == (sends, accepted), go
    # skopeo is Go: it succeeds exactly when the probe says what Go sends is accepted,
    assert (ran.returncode == 0) == go["accepted"], ran.stderr
    # and the certificate nginx saw from it is the one the probe names (none: empty).
    assert ping["ssl_client_s_dn"] == ("" if go["sends"] is None else subject(go["sends"]))
    if server != "not-asked":
        assert ping["ssl_protocol"] == f"TLSv{tls}"

    # dockercerts itself finds the pair under test wherever Go fails (the stranger first
    # when the server does not care).
    expected_winner = 1 if server == "not-asked" else 2
    assert report["winner"] == expected_winner
    names = report["ca_names"]
    assert (names["read"], names["tls_version"]) == (True, f"TLSv{tls}")
    listed = [a["issuer_listed"] for a in report["attempts"]]
    if server in ("listed", "root-only", "decoy"):
        assert listed == [False, server == "listed"]
    else:
        assert listed == [None, None]


@peers
def test_probe_text_and_inspect_for_moby_21148(
    nginx_bin: str, pki: Pki, certs_d: CertsD, capsys: pytest.CaptureFixture[str]
) -> None:
    with nginx(pki, "root-only", "1.3", nginx_bin) as peer:
        folder(certs_d, peer, pki, "leaf-only")
        code = main(["probe", peer.url, "--root", str(certs_d.path)])
        out = capsys.readouterr().out
        assert code == 0
        assert "CA names the server asks for (TLSv1.3)\n  CN=canames clients root\n" in out
        assert "b-leaf-only  CN=canames clients issuing  no" in out
        assert (
            "Docker (Go) sends no certificate: no pair's issuer is among the CA names the "
            "server lists (rejected, HTTP 400 No required SSL certificate was sent)." in out
        )
        assert "The transport settles on b-leaf-only (2nd of 2)." in out
        code = main(["inspect", peer.host, "--root", str(certs_d.path)])
        out = capsys.readouterr().out
    assert code == 1
    assert "b-leaf-only.cert: the .cert holds only the leaf, issued by the intermediate" in out
    assert "[leaf-without-intermediate]" in out


# --- 3. order="ca-names" against nginx --------------------------------------------------------


def _tried(response: Any) -> list[tuple[Optional[str], str]]:
    return [(a.candidate, a.verdict) for a in attempts_of(response)]


@peers
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("tls", TLS_VERSIONS)
@pytest.mark.parametrize(
    ("server", "pair", "tried"),
    [
        # Listed pairs first, even with two unlisted ones sorted before them.
        ("listed", "right", ["b-right"]),
        ("listed", "chained", ["b-chained"]),
        # Nothing to go by: Docker's order, every pair still tried.
        ("root-only", "leaf-only", ["a-stranger", "a2-stranger", "b-leaf-only"]),
        ("none", "right", ["a-stranger", "a2-stranger", "b-right"]),
        ("decoy", "right", ["a-stranger", "a2-stranger", "b-right"]),
    ],
)
def test_order_ca_names_tries_listed_pairs_first(
    nginx_bin: str,
    pki: Pki,
    certs_d: CertsD,
    mode: str,
    tls: str,
    server: str,
    pair: str,
    tried: list[str],
) -> None:
    with nginx(pki, server, tls, nginx_bin) as peer:
        hostdir = folder(certs_d, peer, pki, pair)
        (hostdir / "a2-stranger.cert").write_bytes(pki.stranger.cert_pem)
        (hostdir / "a2-stranger.key").write_bytes(pki.stranger.key_pem())
        uri = f"/v2/?t=order-{mode}"
        response = get(mode, make(mode, root=certs_d.path, order="ca-names"), peer.url + uri)
        assert response.status_code == 200
        assert _tried(response) == [
            *((name, "rejected") for name in tried[:-1]),
            (tried[-1], "accepted"),
        ]
        # nginx saw exactly those, in that order.
        assert peer.wait_for(
            lambda: len([r for r in peer.records() if r["uri"] == uri]) == len(tried)
        )
        seen = [r["ssl_client_s_dn"] for r in peer.records() if r["uri"] == uri]
    assert seen == [subject(name) for name in tried]


def subject(pair: str) -> str:
    """The subject of the leaf in ``pair`` (``a-stranger``, ``a2-stranger``, ``b-right``)."""
    return "CN=stranger" if "stranger" in pair else f"CN={pair.split('-', 1)[1]}"


@peers
def test_order_ca_names_learns_through_the_proxy(
    nginx_bin: str, pki: Pki, certs_d: CertsD, tinyproxy_peer: TinyproxyPeer
) -> None:
    with nginx(pki, "listed", "1.3", nginx_bin) as peer:
        folder(certs_d, peer, pki, "right")
        before = len(tinyproxy_peer.connects())
        transport = Transport(root=certs_d.path, order="ca-names", proxy=tinyproxy_peer.url)
        response = get("sync", transport, peer.url + "/v2/")
        # One tunnel to learn the names, one for the listed pair.
        assert tinyproxy_peer.connects()[before:] == [peer.host, peer.host]
    assert _tried(response) == [("b-right", "accepted")]


def test_read_ca_names_refuses_a_socks_proxy() -> None:
    require_pyopenssl()
    with pytest.raises(CANamesError, match=r"a socks5:// proxy is in the way"):
        read_ca_names("localhost", 1, proxy=httpx.Proxy("socks5://127.0.0.1:1"))


# --- 4. order="ca-names" against MTLSServer ---------------------------------------------------


@pytest.fixture(scope="module")
def strangers(mtls_ca_factory: CAFactory) -> list[Leaf]:
    stranger = mtls_ca_factory(name="order stranger CA")
    return [stranger.issue_client(f"stranger-{n}") for n in range(K - 1)]


@pytest.fixture(scope="module")
def right(mtls_ca: CA) -> Leaf:
    return mtls_ca.issue_client("right")


class Reads:
    """Counts the transport's reads of CA names (each one handshake), passing them on, or
    failing them when ``fail`` is set."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, int]] = []
        self.fail = False
        self._real = canames.read_ca_names
        self._lock = threading.Lock()
        monkeypatch.setattr(canames, "read_ca_names", self)

    def __call__(self, host: str, port: int, **options: Any) -> canames.ServerCANames:
        with self._lock:
            self.calls.append((host, port))
        if self.fail:
            raise CANamesError(host, port, "no answer within 5 s")
        return self._real(host, port, **options)


@dataclass
class Scene:
    """An MTLSServer refusing untrusted pairs in TLS, its folder under ``certs_d`` (``p1``..
    ``p3`` untrusted, the right pair ``p4`` last), and the count of CA-name reads."""

    mtls_server: ServerFactory
    certs_d: CertsD
    strangers: list[Leaf]
    right: Leaf
    reads: Reads

    def start(self, tls: str = "1.3", send: bool = True) -> MTLSServer:
        server = self.mtls_server(reject="tls", tls_version=tls, send_ca_names=send)
        if send and not server.ca_names_sent:
            pytest.skip("this Python's OpenSSL cannot be reached to set the CA names")
        host = self.certs_d.host(server.host).ca(server.server_ca)
        for number, leaf in enumerate(self.strangers, 1):
            host.pair(f"p{number}", leaf)
        host.pair(f"p{K}", self.right)
        return server

    def transport(self, mode: str = "sync", **options: Any) -> Any:
        return make(mode, root=self.certs_d.path, **options)


@pytest.fixture
def scene(
    mtls_server: ServerFactory,
    certs_d: CertsD,
    strangers: list[Leaf],
    right: Leaf,
    monkeypatch: pytest.MonkeyPatch,
) -> Scene:
    return Scene(mtls_server, certs_d, strangers, right, Reads(monkeypatch))


def tried(response: Any) -> list[Optional[str]]:
    return [a.candidate for a in attempts_of(response)]


ALL = [f"p{n}" for n in range(1, K + 1)]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("tls", TLS_VERSIONS)
@pytest.mark.parametrize("send", [True, False], ids=["names", "no-names"])
def test_first_request_handshakes(scene: Scene, mode: str, tls: str, send: bool) -> None:
    """Listed names: one handshake to read them, one with the right pair. None listed:
    Docker's order, at the cost of that one handshake."""
    server = scene.start(tls, send)
    response = get(mode, scene.transport(mode, order="ca-names"), server.url + "/v2/")
    assert response.status_code == 200
    assert scene.reads.calls == [("localhost", server.port)]
    if send:
        assert (server.connections, server.handshakes) == (2, 1)
        assert tried(response) == [f"p{K}"]
    else:
        assert (server.connections, server.handshakes) == (K + 1, 1)
        assert tried(response) == ALL


@pytest.mark.parametrize("mode", MODES)
def test_off_by_default_nothing_is_read(scene: Scene, mode: str) -> None:
    server = scene.start()
    assert get(mode, scene.transport(mode), server.url + "/v2/").status_code == 200
    assert scene.reads.calls == []
    assert server.connections == K


def test_read_once_per_host_and_again_after_the_folder_changes(scene: Scene, mtls_ca: CA) -> None:
    server = scene.start()
    hostdir = scene.certs_d.path / server.host
    url = server.url + "/v2/"
    with httpx.Client(transport=scene.transport(order="ca-names", refresh=0)) as c:
        for _ in range(3):
            assert c.get(url).status_code == 200
        assert len(scene.reads.calls) == 1  # later requests go to the winner: no search
        # A new pair leaves the winner's files alone: still no search, nothing read.
        (hostdir / "p0.cert").write_bytes(scene.strangers[0].cert_pem)
        (hostdir / "p0.key").write_bytes(scene.strangers[0].key_pem())
        assert c.get(url).status_code == 200
        assert len(scene.reads.calls) == 1
        # The winner's certificate replaced: a new search, which reads the names again.
        newer = mtls_ca.issue_client("right-renewed")
        (hostdir / f"p{K}.cert").write_bytes(newer.cert_pem)
        (hostdir / f"p{K}.key").write_bytes(newer.key_pem())
        response = c.get(url)
    assert response.status_code == 200
    assert len(scene.reads.calls) == 2
    assert tried(response) == [f"p{K}"]


def test_a_failed_read_falls_back_to_dockers_order(
    scene: Scene, caplog: pytest.LogCaptureFixture
) -> None:
    server = scene.start()
    scene.reads.fail = True
    with caplog.at_level(logging.INFO, logger="dockercerts"):
        response = get("sync", scene.transport(order="ca-names"), server.url)
    assert response.status_code == 200
    assert len(scene.reads.calls) == 1
    assert tried(response) == ALL
    assert "no answer within 5 s; trying client certificates in Docker's order" in caplog.text


def test_one_pair_reads_nothing(scene: Scene) -> None:
    server = scene.start()
    for number in range(1, K):
        (scene.certs_d.path / server.host / f"p{number}.cert").unlink()
        (scene.certs_d.path / server.host / f"p{number}.key").unlink()
    response = get("sync", scene.transport(order="ca-names"), server.url + "/v2/")
    assert response.status_code == 200
    assert (scene.reads.calls, server.connections) == ([], 1)


def test_concurrent_first_requests_read_once(scene: Scene) -> None:
    server = scene.start()
    url = server.url + "/v2/"
    with (
        httpx.Client(transport=scene.transport(order="ca-names")) as client,
        ThreadPoolExecutor(8) as pool,
    ):
        codes = list(pool.map(lambda _: client.get(url).status_code, range(8)))
    assert codes == [200] * 8
    # The one request looking for the winner reads the names; the others wait for it.
    assert len(scene.reads.calls) == 1
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
@pytest.mark.parametrize("factory", [Transport, AsyncTransport, Adapter])
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
    scene: Scene, capsys: pytest.CaptureFixture[str]
) -> None:
    server = scene.start(send=False)
    assert main(["probe", server.url, "--root", str(scene.certs_d.path)]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "CA names" in line or "Docker (Go)" in line]
    assert lines == [
        "CA names the server asks for: not shown, pyOpenSSL is not installed "
        "(pip install 'dockercerts[probe]' shows them, and what Docker would send)"
    ]
    assert f"The transport settles on p{K} ({K}th of {K})." in out
