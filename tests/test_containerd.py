"""containerd's folders read as containerd reads them, and the transport using them.

Rules and sources (containerd ``core/remotes/docker/config``; docs/runtimes.md):
``loadHostDir`` (hosts.toml, else the loose files; a file that does not decode is logged and
the loose files are read), ``loadCertFiles`` (sub-folders skipped, a ``.cert`` without
``.key`` is one combined file, a ``.key`` alone is ignored), ``updateTLSConfigFromHost``
(``ca`` added to the system roots, ``client`` entries in order, its error texts), and the
transport's rule for this issue: a request uses the TLS of the endpoint at its own host.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_secrets import BROKEN, PASSWORD, WRONG_PASSWORD, build, exception_texts
from test_secrets import material as material

import dockercerts
from dockercerts import (
    AsyncTransport,
    CertsDirTransportError,
    ClientCertificateRejected,
    Transport,
    load,
)
from dockercerts.containerd import load_hosts
from dockercerts.errors import EndpointTLSError
from dockercerts.testing import CA, CertsD, Leaf

# --- test material, made once --------------------------------------------------------------------


@pytest.fixture(scope="session")
def other_ca(mtls_ca_factory: Any) -> CA:
    return mtls_ca_factory(name="containerd refused CA")  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def alice(mtls_ca: CA) -> Leaf:
    return mtls_ca.issue_client("alice")


@pytest.fixture(scope="session")
def mallory(other_ca: CA) -> Leaf:
    return other_ca.issue_client("mallory")


def combined(leaf: Leaf) -> bytes:
    return leaf.cert_pem + leaf.key_pem()


def write(folder: Path, name: str, data: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    path.chmod(0o600)  # keys among them: no "readable by others" warning
    return path


# --- reading -------------------------------------------------------------------------------------


def test_hosts_toml_every_endpoint_with_its_tls(
    tmp_path: Path, mtls_ca: CA, alice: Leaf, mallory: Leaf
) -> None:
    folder = tmp_path / "reg_5000_"
    write(folder, "ca.pem", mtls_ca.cert_pem)
    write(folder, "mallory.pem", combined(mallory))
    alice.write(folder / "certs" / "alice.cert", folder / "certs" / "alice.key")
    write(
        folder,
        "hosts.toml",
        b"""
server = "https://reg:5000"
ca = "ca.pem"
client = [["certs/alice.cert", "certs/alice.key"]]

[host."https://mirror.example"]
  capabilities = ["pull"]
  ca = ["ca.pem"]
  client = ["mallory.pem", ["certs/alice.cert", ""]]
  skip_verify = true
""",
    )
    # The documented ["cert", ""] form: containerd joins "" to the folder and reads the
    # folder as the key (ctr 1.6.20 fails this way too: see test_runtime_peers.py).
    with pytest.raises(EndpointTLSError) as caught:
        load_hosts("reg:5000", root=tmp_path)
    assert str(caught.value) == (
        f'unable to read CERT file "{folder}": read {folder}: is a directory'
    )
    assert caught.value.endpoint == "https://mirror.example/v2"
    assert 'client = "alice.cert"' in caught.value.fix
    write(folder / "certs", "alice.pem", combined(alice))
    toml = (folder / "hosts.toml").read_bytes()
    write(folder, "hosts.toml", toml.replace(b'["certs/alice.cert", ""]', b'"certs/alice.pem"'))
    found = load_hosts("reg:5000", root=tmp_path)
    assert found.folder == folder
    assert found.source == "hosts.toml"
    mirror, server = found.endpoints
    assert mirror.endpoint.url == "https://mirror.example/v2"
    assert [p.name for p in mirror.certs.pairs] == ["mallory.pem", "certs/alice.pem"]
    assert mirror.certs.pairs[0].key == folder / "mallory.pem"  # combined PEM
    assert mirror.certs.skip_verify
    assert "skip-verify" in {w.code for w in mirror.certs.warnings}
    assert [p.subject for p in server.certs.pairs] == ["CN=alice"]
    assert server.certs.ca_files == (folder / "ca.pem",)
    assert not server.certs.skip_verify
    assert server.certs.uses_system_roots
    assert server.certs.trust == "merge"
    assert found.endpoint_for("reg:5000") is server
    assert found.endpoint_for("mirror.example") is mirror
    assert found.endpoint_for("mirror.example:443") is mirror
    assert found.endpoint_for("reg") is None


def test_load_returns_the_endpoint_at_the_host_itself(tmp_path: Path, alice: Leaf) -> None:
    folder = tmp_path / "docker.io"
    write(folder, "alice.pem", combined(alice))
    write(folder, "hosts.toml", b'[host."https://mirror.example"]\nclient = "alice.pem"\n')
    hub = load("docker.io", runtime="containerd", root=tmp_path)
    assert hub.endpoint == "https://registry-1.docker.io/v2"
    assert hub.pairs == ()
    # The mirror's own folder is what a request to the mirror reads: none here.
    mirror = load("mirror.example", runtime="containerd", root=tmp_path)
    assert mirror.endpoint == "https://mirror.example/v2"
    assert not mirror.exists


def test_loose_files_containerds_rules(
    tmp_path: Path, mtls_ca: CA, alice: Leaf, mallory: Leaf
) -> None:
    tree = CertsD(tmp_path)
    folder = tree.host("reg:5000").ca(mtls_ca).pair("b-alice", alice)
    write(folder.path, "a-mallory.cert", combined(mallory))  # no .key: combined
    write(folder.path, "orphan.key", alice.key_pem())  # Docker refuses; containerd ignores
    folder.mkdir("sub.crt")  # a sub-folder named like a CA: skipped
    write(folder.path, "ca.pem", b"ignored")
    found = load_hosts("reg:5000", root=tmp_path)
    assert found.source == "files"
    assert found.hosts_file is None
    (server,) = found.endpoints
    assert [p.name for p in server.certs.pairs] == ["a-mallory.cert", "b-alice.cert"]
    assert server.certs.pairs[0].key == folder.path / "a-mallory.cert"
    assert server.certs.ca_files == (folder.path / "ca.crt",)
    assert {i.key for i in found.ignored} == {"orphan.key", "sub.crt", "ca.pem"}
    with pytest.raises(dockercerts.MissingKeyError):
        load("reg:5000", root=tmp_path)  # Docker's loop: a-mallory.cert has no .key


def test_loose_files_unusable_crt_is_an_error(tmp_path: Path) -> None:
    folder = CertsD(tmp_path).host("reg:5000")
    write(folder.path, "ca.crt", b"not a certificate")
    with pytest.raises(EndpointTLSError) as caught:
        load_hosts("reg:5000", root=tmp_path)
    assert str(caught.value) == f'unable to load CA cert "{folder.path / "ca.crt"}"'
    # Docker counts the file and goes on with the system roots.
    assert load("reg:5000", root=tmp_path).ca_files == (folder.path / "ca.crt",)


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            'ca = "missing.pem"',
            'unable to read CA cert "{d}/missing.pem": open {d}/missing.pem: '
            "no such file or directory",
        ),
        ('ca = "."', 'unable to read CA cert "{d}": read {d}: is a directory'),
        (
            'client = "missing.pem"',
            'unable to read CERT file "{d}/missing.pem": open '
            "{d}/missing.pem: no such file or directory",
        ),
        (
            'client = [["c.pem", "nokey.pem"]]',
            'unable to read CERT file "{d}/nokey.pem": open '
            "{d}/nokey.pem: no such file or directory",
        ),
        (
            'client = "key.pem"',
            "failed to load X509 key pair: tls: failed to find certificate "
            "PEM data in certificate input, but did find a private key; PEM inputs may have been "
            "switched",
        ),
        (
            'client = [["c.pem", "c.pem"]]',
            "failed to load X509 key pair: tls: found a "
            "certificate rather than a key in the PEM for the private key",
        ),
        (
            'client = [["c.pem", "other.pem"]]',
            "failed to load X509 key pair: tls: private key does not match public key",
        ),
    ],
)
def test_endpoint_tls_error_texts(
    tmp_path: Path, alice: Leaf, mallory: Leaf, toml: str, message: str
) -> None:
    folder = tmp_path / "reg:5000"
    write(folder, "c.pem", alice.cert_pem)
    write(folder, "key.pem", alice.key_pem())
    write(folder, "other.pem", mallory.key_pem())
    write(folder, "hosts.toml", toml.encode())
    with pytest.raises(EndpointTLSError) as caught:
        load_hosts("reg:5000", root=tmp_path)
    assert str(caught.value) == message.format(d=folder)
    assert "PRIVATE KEY" not in str(caught.value)


def test_broken_hosts_toml_is_logged_and_the_files_are_read(
    tmp_path: Path, mtls_ca: CA, alice: Leaf, caplog: pytest.LogCaptureFixture
) -> None:
    folder = CertsD(tmp_path).host("reg:5000").ca(mtls_ca).pair("alice", alice)
    write(folder.path, "hosts.toml", b'capabilities = ["pull", "fetch"]\nclient = "x.pem"\n')
    with caplog.at_level(logging.ERROR, "dockercerts"):
        found = load_hosts("reg:5000", root=tmp_path)
    assert found.hosts_error is not None
    assert found.source == "files"
    assert str(found.hosts_error) == (
        f"failed to decode {folder.path / 'hosts.toml'}: unknown capability fetch"
    )
    assert [r.getMessage() for r in caplog.records] == [str(found.hosts_error)]
    (server,) = found.endpoints
    assert [p.name for p in server.certs.pairs] == ["alice.cert"]
    assert "hosts-toml-unusable" in {w.code for w in server.certs.warnings}
    # An empty hosts.toml is no hosts.toml.
    write(folder.path, "hosts.toml", b"")
    assert load_hosts("reg:5000", root=tmp_path).source == "files"


def test_unreadable_hosts_toml_fails(tmp_path: Path) -> None:
    folder = CertsD(tmp_path).host("reg:5000").mkdir("hosts.toml")
    with pytest.raises(dockercerts.CertsDirReadError) as caught:
        load_hosts("reg:5000", root=tmp_path)
    assert "is a directory" in str(caught.value)
    assert caught.value.path == folder.path / "hosts.toml"


def test_top_level_client_does_not_reach_host_tables(tmp_path: Path, alice: Leaf) -> None:
    folder = tmp_path / "_default"
    write(folder, "alice.pem", combined(alice))
    write(folder, "hosts.toml", b'client = "alice.pem"\n[host."https://mirror.example"]\n')
    found = load_hosts("reg:5000", root=tmp_path)
    mirror, server = found.endpoints
    assert mirror.certs.pairs == ()
    assert [p.name for p in server.certs.pairs] == ["alice.pem"]
    assert server.endpoint.url == "https://reg:5000/v2"


def test_secrets_stay_out_of_errors(tmp_path: Path, alice: Leaf) -> None:
    folder = tmp_path / "reg:5000"
    write(folder, "enc.pem", alice.cert_pem + alice.key_pem(b"s3cret-pw"))
    write(folder, "hosts.toml", b'client = "enc.pem"\n')
    with pytest.raises(EndpointTLSError) as caught:
        load_hosts("reg:5000", root=tmp_path, password=b"wrong-pw")
    assert "wrong-pw" not in repr(caught.value.__dict__)
    assert caught.value.__traceback__ is not None
    found = load_hosts("reg:5000", root=tmp_path, password=b"s3cret-pw")
    certs = found.endpoints[0].certs
    assert "s3cret-pw" not in repr(certs)
    assert "s3cret-pw" not in repr(found)
    assert certs.candidates()[0].context is not None


# --- the transport -------------------------------------------------------------------------------


def containerd_folder(root: Path, srv: Any, toml: str, files: dict[str, bytes]) -> Path:
    """``root/localhost_PORT_/`` with ``hosts.toml`` and ``files``."""
    folder = root / f"localhost_{srv.port}_"
    for name, data in files.items():
        write(folder, name, data)
    write(folder, "hosts.toml", toml.replace("URL", srv.url).encode())
    return folder


def wrong_then_right(root: Path, srv: Any, mallory: Leaf, alice: Leaf) -> None:
    """A hosts.toml whose endpoint lists a refused combined PEM, then alice's pair."""
    containerd_folder(
        root,
        srv,
        '[host."URL"]\nca = "ca.crt"\nclient = ["mallory.pem", ["a.cert", "a.key"]]\n',
        {
            "ca.crt": srv.server_ca.cert_pem,
            "mallory.pem": combined(mallory),
            "a.cert": alice.cert_pem,
            "a.key": alice.key_pem(),
        },
    )


@pytest.mark.parametrize("tls", ["1.2", "1.3"])
def test_transport_uses_client_entries_in_file_order(
    tls: str, tmp_path: Path, mtls_server: Any, mallory: Leaf, alice: Leaf
) -> None:
    srv = mtls_server(reject="tls", tls_version=tls)
    wrong_then_right(tmp_path, srv, mallory, alice)
    transport = Transport(runtime="containerd", root=tmp_path)
    with httpx.Client(transport=transport) as client:
        response = client.get(srv.url + "/v2/")
        assert transport.winner(srv.url) == "a.cert"
    assert response.status_code == 200
    attempts = response.extensions["dockercerts.attempts"]
    assert [(a.candidate, a.verdict) for a in attempts] == [
        ("mallory.pem", "rejected"),
        ("a.cert", "accepted"),
    ]
    assert [r.client_subject for r in srv.requests] == ["CN=alice"]


def test_transport_skip_verify_only_for_its_endpoint(
    tmp_path: Path, mtls_server: Any, alice: Leaf, caplog: pytest.LogCaptureFixture
) -> None:
    insecure = mtls_server(reject="tls")
    checked = mtls_server(reject="tls")
    # Neither folder names the servers' CA: only skip_verify gets through.
    containerd_folder(
        tmp_path,
        insecure,
        "server = 'URL'\nskip_verify = true\nclient = 'a.pem'",
        {"a.pem": combined(alice)},
    )
    containerd_folder(
        tmp_path, checked, "server = 'URL'\nclient = 'a.pem'", {"a.pem": combined(alice)}
    )
    with (
        caplog.at_level(logging.WARNING, "dockercerts"),
        httpx.Client(transport=Transport(runtime="containerd", root=tmp_path)) as client,
    ):
        assert client.get(insecure.url + "/v2/").status_code == 200
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            client.get(checked.url + "/v2/")
    loud = [r.getMessage() for r in caplog.records if "skip_verify = true" in r.getMessage()]
    assert len(loud) == 1
    assert "NOT checked" in loud[0]
    assert str(insecure.port) in loud[0]


def test_transport_top_level_client_not_for_a_host_table(
    tmp_path: Path, mtls_server: Any, alice: Leaf
) -> None:
    srv = mtls_server(reject="tls", tls_version="1.2")
    containerd_folder(
        tmp_path,
        srv,
        'server = "https://upstream.invalid"\nclient = "a.pem"\n[host."URL"]\nca = "ca.crt"\n',
        {"a.pem": combined(alice), "ca.crt": srv.server_ca.cert_pem},
    )
    transport = Transport(runtime="containerd", root=tmp_path)
    with (
        httpx.Client(transport=transport) as client,
        pytest.raises(ClientCertificateRejected) as caught,
    ):
        client.get(srv.url + "/v2/")
    # Routed: the host table is tried first (no client of its own), then the server (whose
    # name does not resolve); the host table's TLS failure is the answer (the first of equals).
    attempts = caught.value.attempts
    assert next((a.candidate, a.endpoint) for a in attempts) == (None, srv.url + "/v2")
    assert [a.endpoint for a in attempts][1:] == ["https://upstream.invalid/v2"]


def test_transport_host_without_endpoint_gets_defaults_and_a_warning(
    tmp_path: Path, mtls_server: Any, alice: Leaf, caplog: pytest.LogCaptureFixture
) -> None:
    srv = mtls_server(reject="tls")
    containerd_folder(
        tmp_path,
        srv,
        'server = "https://mirror.invalid"\nca = "ca.crt"\n',
        {"ca.crt": srv.server_ca.cert_pem},
    )
    with (
        caplog.at_level(logging.WARNING, "dockercerts"),
        httpx.Client(transport=Transport(runtime="containerd", root=tmp_path)) as client,
        # Routed as containerd routes: to the server the folder names, which does not resolve.
        pytest.raises(httpx.ConnectError, match=r"not known|resolution|nodename"),
    ):
        client.get(srv.url + "/v2/")
    assert any("names no endpoint at localhost:" in r.getMessage() for r in caplog.records)


def test_transport_broken_hosts_toml_falls_back_and_reloads(
    tmp_path: Path, mtls_server: Any, alice: Leaf, mallory: Leaf
) -> None:
    srv = mtls_server(reject="tls", tls_version="1.3")
    folder = containerd_folder(
        tmp_path,
        srv,
        "server = [broken",
        {"ca.crt": srv.server_ca.cert_pem, "alice.cert": combined(alice)},
    )
    transport = Transport(runtime="containerd", root=tmp_path, refresh=0)
    with httpx.Client(transport=transport) as client:
        assert client.get(srv.url + "/v2/").status_code == 200  # the loose files
        assert transport.winner(srv.url) == "alice.cert"
        # Fixed: now hosts.toml decides, with mallory only; then with the CA removed.
        write(folder, "m.pem", combined(mallory))
        write(
            folder,
            "hosts.toml",
            b'server = "' + srv.url.encode() + b'"\nca = "ca.crt"\nclient = "m.pem"\n',
        )
        with pytest.raises(ClientCertificateRejected):
            client.get(srv.url + "/v2/")
        (folder / "ca.crt").write_bytes(b"garbage")
        with pytest.raises(CertsDirTransportError, match="unable to load CA cert"):
            Transport(runtime="containerd", root=tmp_path).handle_request(
                httpx.Request("GET", srv.url + "/v2/")
            )


@pytest.mark.anyio
async def test_async_transport_with_containerd(
    tmp_path: Path, mtls_server: Any, mallory: Leaf, alice: Leaf
) -> None:
    srv = mtls_server(reject="tls", tls_version="1.3")
    containerd_folder(
        tmp_path,
        srv,
        'server = "URL"\nca = "ca.crt"\nclient = ["m.pem", "a.pem"]\n',
        {"ca.crt": srv.server_ca.cert_pem, "m.pem": combined(mallory), "a.pem": combined(alice)},
    )
    async with httpx.AsyncClient(
        transport=AsyncTransport(runtime="containerd", root=tmp_path)
    ) as client:
        response = await client.get(srv.url + "/v2/")
    assert response.status_code == 200
    assert [a.candidate for a in response.extensions["dockercerts.attempts"]] == [
        "m.pem",
        "a.pem",
    ]


def test_podman_transport_reads_home_first(
    tmp_path: Path, mtls_server: Any, alice: Leaf, monkeypatch: pytest.MonkeyPatch
) -> None:
    srv = mtls_server(reject="tls")
    monkeypatch.setenv("HOME", str(tmp_path))
    CertsD(tmp_path / ".config/containers/certs.d").host(srv.host).ca(srv.server_ca).pair(
        "alice", alice
    )
    with httpx.Client(transport=Transport(runtime="podman")) as client:
        assert client.get(srv.url + "/v2/").status_code == 200
    assert [r.client_subject for r in srv.requests] == ["CN=alice"]


# --- secrets: the broken trees of test_secrets.py, read by the other runtimes ------------------


@pytest.mark.parametrize("runtime", ["podman", "containerd"])
@pytest.mark.parametrize("case", sorted(BROKEN))
@pytest.mark.parametrize("password", [None, WRONG_PASSWORD, PASSWORD])
def test_runtime_errors_hold_no_secret(
    runtime: str, case: str, password: Any, material: dict[str, Any], tmp_path: Path
) -> None:
    secrets = material["secrets"]
    build(tmp_path, "reg:5000", BROKEN[case], material["leaves"])
    secrets.add_tree(tmp_path)
    try:
        certs = load("reg:5000", runtime=runtime, root=tmp_path, password=password)
    except dockercerts.CertsDirError as exc:
        for text in exception_texts(exc):
            secrets.assert_clean(text, f"{runtime} {case}: {type(exc).__name__}")
        return
    secrets.assert_clean(repr(certs), f"{runtime} {case}: HostCerts")
    for warning in certs.warnings:
        secrets.assert_clean(str(warning), f"{runtime} {case}: {warning.code}")


@pytest.mark.parametrize("tls", ["1.2", "1.3"])
def test_requests_adapter_reads_containerds_folders_too(
    tls: str, tmp_path: Path, mtls_server: Any, mallory: Leaf, alice: Leaf
) -> None:
    """runtime=, as the transports take it, for the requests adapter: the endpoint's client
    entries in file order, the wrong one refused, the right one remembered."""
    requests_adapter = pytest.importorskip("dockercerts.requests")
    srv = mtls_server(reject="tls", tls_version=tls)
    wrong_then_right(tmp_path, srv, mallory, alice)
    with requests_adapter.session(runtime="containerd", root=tmp_path) as session:
        response = session.get(srv.url + "/v2/", timeout=10)
    assert response.status_code == 200
    assert [(a.candidate, a.verdict) for a in requests_adapter.attempts(response)] == [
        ("mallory.pem", "rejected"),
        ("a.cert", "accepted"),
    ]
    assert [r.client_subject for r in srv.requests] == ["CN=alice"]


def test_the_folder_warnings_for_a_host_are_one_list_for_load_and_inspect(tmp_path: Path) -> None:
    """``ContainerdHost.warnings_for`` (what inspect shows) and ``load`` (one endpoint's view)
    say ``no-endpoint-for-host`` with the same words: one function makes it."""
    folder = tmp_path / "reg.test:5000"
    folder.mkdir()
    (folder / "hosts.toml").write_text('server = "https://mirror.test"\n')
    found = load_hosts("reg.test:5000", root=tmp_path)
    listed = found.warnings_for("reg.test:5000")
    assert [w.code for w in listed] == ["no-endpoint-for-host"]
    assert listed[0].path == folder / "hosts.toml"
    assert "https://mirror.test" in listed[0].message
    loaded = load("reg.test:5000", runtime="containerd", root=tmp_path).warnings
    assert [w for w in loaded if w.code == "no-endpoint-for-host"] == list(listed)
    # The endpoint at the host itself: nothing to say.
    assert found.warnings_for("mirror.test") == ()
