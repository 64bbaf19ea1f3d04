"""``system="truststore"``: the platform's verifier plus the folder's CA files.

Tested on Linux, where truststore verifies with OpenSSL's default paths (so
``SSL_CERT_FILE`` stands in for the platform's store) plus the folder's roots. The macOS
(Keychain) and Windows (CryptoAPI) paths are truststore's and are not exercised here.
"""

from __future__ import annotations

import ssl
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

import dockercerts
from dockercerts import Transport
from dockercerts.testing import CA, CertsD, Leaf

truststore = pytest.importorskip("truststore", reason="truststore needs Python >= 3.10")


@pytest.fixture(scope="session")
def alice(mtls_ca: CA) -> Leaf:
    return mtls_ca.issue_client("alice")


@pytest.fixture(scope="session")
def stranger(mtls_ca_factory: Any) -> Leaf:
    return mtls_ca_factory(name="truststore stranger CA").issue_client("stranger")  # type: ignore[no-any-return]


@pytest.mark.parametrize("tls", ["1.2", "1.3"])
def test_truststore_with_the_folders_ca_steps_to_the_right_pair(
    tls: str, mtls_server: Any, certs_d: CertsD, alice: Leaf, stranger: Leaf
) -> None:
    srv = mtls_server(reject="tls", tls_version=tls)
    certs_d.host(srv.host).ca(srv.server_ca).pair("a-stranger", stranger).pair("b-alice", alice)
    transport = Transport(root=certs_d.root, system="truststore")
    with httpx.Client(transport=transport) as client:
        response = client.get(srv.url + "/v2/")
        assert transport.winner(srv.url) == "b-alice"
    assert response.status_code == 200
    attempts = response.extensions["dockercerts.attempts"]
    assert [(a.candidate, a.verdict) for a in attempts] == [
        ("a-stranger", "rejected"),
        ("b-alice", "accepted"),
    ]
    # The watch saw the handshakes through truststore's own classes (in TLS 1.2 the
    # refused one fails inside the handshake, so it never completes).
    assert [a.fresh for a in attempts] == [tls == "1.3", True]
    assert attempts[-1].tls_version == f"TLSv{tls}"
    certs = dockercerts.load(srv.host, root=certs_d.root, system="truststore")
    context = certs.candidates()[0].context
    assert type(context).__module__.startswith("truststore")
    assert certs.system == "truststore"
    assert certs.trust == "merge"


def test_truststore_without_the_ca_fails_verification(
    mtls_server: Any, certs_d: CertsD, alice: Leaf
) -> None:
    srv = mtls_server(reject="tls")
    certs_d.host(srv.host).pair("alice", alice)
    with (
        httpx.Client(transport=Transport(root=certs_d.root, system="truststore")) as client,
        pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"),
    ):
        client.get(srv.url + "/v2/")


def test_truststore_system_roots_are_openssls_paths_on_linux(
    mtls_server: Any,
    certs_d: CertsD,
    alice: Leaf,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if sys.platform != "linux":
        pytest.skip("on macOS and Windows truststore asks the platform, not OpenSSL's paths")
    srv = mtls_server(reject="tls")
    certs_d.host(srv.host).pair("alice", alice)  # no CA file in the folder
    bundle = tmp_path / "system.pem"
    bundle.write_bytes(srv.server_ca.cert_pem)
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    with httpx.Client(transport=Transport(root=certs_d.root, system="truststore")) as client:
        assert client.get(srv.url + "/v2/").status_code == 200


def test_truststore_is_never_injected() -> None:
    before = ssl.SSLContext
    with Transport(system="truststore"):
        dockercerts.docker_context(system=True)
    assert ssl.SSLContext is before
    assert ssl.SSLContext.__module__ == "ssl"


def test_bad_choices_are_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="system must be 'openssl' or 'truststore'"):
        Transport(system="keychain")
    with pytest.raises(ValueError, match="trust='replace' cannot go with system='truststore'"):
        Transport(system="truststore", trust="replace")
    with pytest.raises(ValueError, match="trust='replace' keeps the system roots out"):
        dockercerts.load("reg:5000", root=tmp_path, system="truststore", trust="replace")
    monkeypatch.setitem(sys.modules, "truststore", None)
    with pytest.raises(ImportError, match=r"pip install 'dockercerts\[truststore\]'"):
        Transport(system="truststore")


def test_skip_verify_with_truststore(tmp_path: Path, mtls_server: Any, alice: Leaf) -> None:
    """containerd's skip_verify holds with truststore too: nothing is verified."""
    srv = mtls_server(reject="tls")
    folder = tmp_path / f"localhost_{srv.port}_"
    folder.mkdir()
    (folder / "a.pem").write_bytes(alice.cert_pem + alice.key_pem())
    (folder / "a.pem").chmod(0o600)
    (folder / "hosts.toml").write_text(
        f'server = "{srv.url}"\nskip_verify = true\nclient = "a.pem"\n'
    )
    transport = Transport(runtime="containerd", root=tmp_path, system="truststore")
    with httpx.Client(transport=transport) as client:
        assert client.get(srv.url + "/v2/").status_code == 200
