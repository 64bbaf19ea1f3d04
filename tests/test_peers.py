"""Real nginx and docker-registry on loopback: how each rejects a client certificate.

These tests pin how real servers refuse a certificate (the README's verdict layers) with
real handshakes, and check that
``MTLSServer`` reproduces the same outcome class as the real peer it stands in for
(``reject="http"`` ~ nginx ``ssl_verify_client on``, ``reject="tls"`` ~ docker-registry
``http.tls.clientcas``). Without the binaries they skip, except under
``DOCKERCERTS_REQUIRE_PEERS=1`` (CI), where they fail.
"""

from __future__ import annotations

import hashlib
import os
import re
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import httpx
import peers
import pytest
from peers import (
    NginxPeer,
    PeerStartError,
    RegistryPeer,
    port_is_open,
    require_peer,
)

from dockercerts.testing import CA, Leaf, MTLSServer

pytestmark = pytest.mark.peers

TLS_VERSIONS = ("1.2", "1.3")
CERTS = ("none", "wrong", "right")

# Alert names OpenSSL reports for a server refusing the client certificate (as the real
# peers send them).
REJECTION_ALERTS = (
    "SSLV3_ALERT_BAD_CERTIFICATE",
    "SSLV3_ALERT_HANDSHAKE_FAILURE",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED",
    "SSLV3_ALERT_CERTIFICATE_REVOKED",
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE",
    "TLSV1_ALERT_UNKNOWN_CA",
    "TLSV1_ALERT_ACCESS_DENIED",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED",
)


@dataclass
class Pki:
    """Files on disk for the peers and the client contexts."""

    ca: CA  # issues the server certificate and the accepted client certificate
    server: Leaf
    right: Leaf  # issued by ``ca``: accepted
    wrong: Leaf  # issued by another CA: refused
    ca_path: Path
    server_cert: Path
    server_key: Path
    cert_paths: dict[str, tuple[Path, Path]]

    @classmethod
    def make(cls, d: Path, ca: CA, other: CA) -> Pki:
        """In ``d``: a server certificate and ``alice`` from ``ca``, ``mallory`` from ``other``."""
        server = ca.issue_server()
        right = ca.issue_client("alice")
        wrong = other.issue_client("mallory")
        server_cert, server_key = server.write(d / "server.pem", d / "server.key")
        return cls(
            ca=ca,
            server=server,
            right=right,
            wrong=wrong,
            ca_path=ca.write(d / "ca.pem"),
            server_cert=server_cert,
            server_key=server_key,
            cert_paths={
                "right": right.write(d / "alice.cert", d / "alice.key"),
                "wrong": wrong.write(d / "mallory.cert", d / "mallory.key"),
            },
        )

    def peer_files(self) -> dict[str, Path]:
        return {
            "server_cert": self.server_cert,
            "server_key": self.server_key,
            "client_ca": self.ca_path,
        }

    def context(self, cert: str, tls: Optional[str] = None) -> ssl.SSLContext:
        """A client context trusting the test CA, presenting ``cert`` (none/wrong/right),
        pinned to TLS ``tls`` ("1.2", "1.3") or allowing both."""
        ctx = ssl.create_default_context(cafile=str(self.ca_path))
        if tls is not None:
            version = ssl.TLSVersion.TLSv1_2 if tls == "1.2" else ssl.TLSVersion.TLSv1_3
            ctx.minimum_version = ctx.maximum_version = version
        if cert != "none":
            cert_path, key_path = self.cert_paths[cert]
            ctx.load_cert_chain(str(cert_path), str(key_path))
        return ctx


@pytest.fixture(scope="module")
def pki(
    tmp_path_factory: pytest.TempPathFactory,
    mtls_ca: CA,
    mtls_ca_factory: Callable[..., CA],
) -> Pki:
    # The plugin's CAs, so the parity test can use the ``mtls_server`` fixture as it is:
    # its servers trust ``mtls_ca`` and let certificates of factory-made CAs through the
    # handshake (as nginx does) to refuse them in HTTP.
    return Pki.make(tmp_path_factory.mktemp("pki"), mtls_ca, mtls_ca_factory(name="peers other CA"))


@pytest.fixture(scope="module")
def nginx_verify(nginx_bin: str, pki: Pki) -> Iterator[NginxPeer]:
    with NginxPeer(mode="verify", binary=nginx_bin, **pki.peer_files()) as peer:
        yield peer


@pytest.fixture(scope="module")
def nginx_status(nginx_bin: str, pki: Pki) -> Iterator[NginxPeer]:
    with NginxPeer(mode="status", binary=nginx_bin, **pki.peer_files()) as peer:
        yield peer


@pytest.fixture(scope="module")
def nginx_error_page(nginx_bin: str, pki: Pki) -> Iterator[NginxPeer]:
    with NginxPeer(mode="error_page", binary=nginx_bin, **pki.peer_files()) as peer:
        yield peer


@pytest.fixture(scope="module")
def registry(registry_bin: str, pki: Pki) -> Iterator[RegistryPeer]:
    with RegistryPeer(binary=registry_bin, **pki.peer_files()) as peer:
        yield peer


def get(url: str, ctx: ssl.SSLContext, path: str = "/v2/") -> httpx.Response:
    with httpx.Client(verify=ctx, timeout=5.0) as client:
        return client.get(url + path)


def alert_in(exc: BaseException) -> Optional[str]:
    """The rejection alert named by ``exc`` or anything along its cause/context chain.

    httpcore raises ``from None``, but httpx keeps the ``ssl.SSLError`` message, so the
    name is usually in ``str(exc)`` itself; the chain is searched in case it is not.
    """
    seen: set[int] = set()
    current: Optional[BaseException] = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        for alert in REJECTION_ALERTS:
            if alert in str(current):
                return alert
        current = current.__cause__ or current.__context__
    return None


def outcome(url: str, ctx: ssl.SSLContext) -> tuple[str, str]:
    """The outcome class of ``GET /v2/`` and a detail: ("tls-rejected", alert name),
    ("http-400", page title), ("http-<status>", "") or ("ok", "").

    Only a rejection alert counts as "tls-rejected": any other transport error (a reset, a
    server-certificate failure) is a broken test setup and propagates.
    """
    try:
        response = get(url, ctx)
    except (httpx.ConnectError, httpx.ReadError) as exc:
        alert = alert_in(exc)
        if alert is None:
            raise
        return "tls-rejected", alert
    if response.status_code == 200:
        return "ok", ""
    title = re.search(r"<title>(.*?)</title>", response.text)
    return f"http-{response.status_code}", title.group(1) if title else ""


def sha1_hex(leaf: Leaf) -> str:
    # nginx's $ssl_client_fingerprint is SHA-1 of the DER leaf; Leaf.fingerprint is SHA-256.
    return hashlib.sha1(leaf.der).hexdigest()


def process_group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


# --- finding the binaries -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["nginx", "docker-registry"])
def test_require_peer_skips_or_fails_when_missing(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setattr(peers, "nginx_binary", lambda: None)
    monkeypatch.setattr(peers, "registry_binary", lambda: None)
    monkeypatch.delenv("DOCKERCERTS_REQUIRE_PEERS", raising=False)
    with pytest.raises(pytest.skip.Exception, match=f"{name} not installed: apt-get install"):
        require_peer(name)
    # CI sets this: a missing peer is then a failure, never a silent skip.
    monkeypatch.setenv("DOCKERCERTS_REQUIRE_PEERS", "1")
    with pytest.raises(pytest.fail.Exception, match=r"\.ci/run"):
        require_peer(name)


def test_require_peer_finds_installed_binaries(nginx_bin: str, registry_bin: str) -> None:
    assert os.access(nginx_bin, os.X_OK)
    assert os.access(registry_bin, os.X_OK)
    assert require_peer("nginx") == peers.nginx_binary() == nginx_bin


# --- start and stop ----------------------------------------------------------------------


def test_nginx_starts_on_loopback_and_stops(nginx_bin: str, pki: Pki) -> None:
    peer = NginxPeer(binary=nginx_bin, **pki.peer_files())
    with peer:
        assert peer.url == f"https://localhost:{peer.port}"
        assert peer.host == f"localhost:{peer.port}"
        assert port_is_open(peer.port)
        assert "listen 127.0.0.1:" in peer.config_text()
        response = get(peer.url, pki.context("right"), "/v2/_catalog")
        assert response.json() == {"repositories": ["team/app"]}
        pid, workdir = peer.pid, peer.workdir
    assert pid is not None
    assert peer.process is not None
    assert peer.process.returncode is not None
    # The workers too: the whole process group is gone.
    assert process_group_gone(pid)
    assert not port_is_open(peer.port)
    assert not workdir.exists()


def test_registry_starts_on_loopback_and_stops(registry_bin: str, pki: Pki) -> None:
    peer = RegistryPeer(binary=registry_bin, **pki.peer_files())
    with peer:
        assert peer.url == f"https://localhost:{peer.port}"
        assert port_is_open(peer.port)
        assert f'"addr": "127.0.0.1:{peer.port}"' in peer.config_text()
        response = get(peer.url, pki.context("right"))
        assert response.status_code == 200
        pid = peer.pid
    assert pid is not None
    assert peer.process is not None
    assert peer.process.returncode is not None
    assert process_group_gone(pid)
    assert not port_is_open(peer.port)


def test_peer_stops_when_the_with_block_fails(nginx_bin: str, pki: Pki) -> None:
    peer = NginxPeer(binary=nginx_bin, **pki.peer_files())
    with pytest.raises(RuntimeError, match="boom"), peer:
        raise RuntimeError("boom")
    assert peer.pid is not None
    assert process_group_gone(peer.pid)
    assert not port_is_open(peer.port)


def test_start_failure_reports_the_server_log(nginx_bin: str, pki: Pki, tmp_path: Path) -> None:
    files = pki.peer_files()
    files["server_key"] = tmp_path / "missing.key"
    peer = NginxPeer(binary=nginx_bin, **files)
    with pytest.raises(PeerStartError, match=r"missing\.key"):
        peer.start()
    assert peer.process is not None
    assert peer.process.returncode is not None


# --- docker-registry: rejection in the TLS layer ------------------------------------------


@pytest.mark.parametrize("tls", TLS_VERSIONS)
@pytest.mark.parametrize("cert", ["none", "wrong"])
def test_registry_rejects_in_tls(registry: RegistryPeer, pki: Pki, tls: str, cert: str) -> None:
    before = len(registry.handshake_errors())
    # TLS 1.2: the alert ends the handshake. TLS 1.3: the client's handshake is over before
    # the server has judged its certificate, so the alert arrives on the first read.
    expected = httpx.ConnectError if tls == "1.2" else (httpx.ReadError, httpx.ConnectError)
    with pytest.raises(expected) as info:
        get(registry.url, pki.context(cert, tls))
    assert alert_in(info.value) == "SSLV3_ALERT_BAD_CERTIFICATE", repr(info.value)
    # The registry's only trace of a rejected certificate: Go's handshake error line. Match
    # on the reason, as an earlier test's line may land after ``before`` was taken.
    if cert == "none":
        reason = re.compile(r"tls: client didn't provide a certificate$")
    else:
        reason = re.compile(r"tls: failed to verify client certificate: x509: ")
    assert registry.wait_for(
        lambda: any(reason.match(r) for _, r in registry.handshake_errors()[before:])
    ), registry.log_text()


@pytest.mark.parametrize("tls", TLS_VERSIONS)
def test_registry_accepts_the_right_cert(registry: RegistryPeer, pki: Pki, tls: str) -> None:
    path = f"/v2/?t=registry-{tls}"
    response = get(registry.url, pki.context("right", tls), path)
    assert response.status_code == 200
    assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    record = registry.request_for(path)
    assert record["http.response.status"] == 200
    # 2.8 says nothing about the client certificate in its request log.
    assert not any("alice" in str(value) for value in record.values())


def test_registry_minimum_tls13_refuses_tls12(registry_bin: str, pki: Pki) -> None:
    with RegistryPeer(binary=registry_bin, minimum_tls="tls1.3", **pki.peer_files()) as peer:
        assert get(peer.url, pki.context("right", "1.3")).status_code == 200
        with pytest.raises(httpx.ConnectError, match="PROTOCOL_VERSION"):
            get(peer.url, pki.context("right", "1.2"))


# --- nginx: rejection in HTTP -------------------------------------------------------------


@pytest.mark.parametrize("tls", TLS_VERSIONS)
@pytest.mark.parametrize(
    ("cert", "title"),
    [
        ("none", "400 No required SSL certificate was sent"),
        ("wrong", "400 The SSL certificate error"),
    ],
)
def test_nginx_verify_answers_400(
    nginx_verify: NginxPeer, pki: Pki, tls: str, cert: str, title: str
) -> None:
    response = get(nginx_verify.url, pki.context(cert, tls))
    assert response.status_code == 400
    assert f"<title>{title}</title>" in response.text
    assert response.headers["Connection"] == "close"
    assert "Docker-Distribution-API-Version" not in response.headers


@pytest.mark.parametrize("tls", TLS_VERSIONS)
def test_nginx_verify_accepts_the_right_cert_and_logs_it(
    nginx_verify: NginxPeer, pki: Pki, tls: str
) -> None:
    path = f"/v2/?t=right-{tls}"
    response = get(nginx_verify.url, pki.context("right", tls), path)
    assert response.status_code == 200
    assert response.json() == {}
    assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    record = nginx_verify.record_for(path)
    assert record["status"] == "200"
    assert record["ssl_client_verify"] == "SUCCESS"
    assert record["ssl_client_s_dn"] == pki.right.subject == "CN=alice"
    assert record["ssl_client_fingerprint"] == sha1_hex(pki.right)
    assert record["ssl_protocol"] == f"TLSv{tls}"


def test_nginx_logs_the_wrong_cert_it_refused(nginx_verify: NginxPeer, pki: Pki) -> None:
    path = "/v2/?t=wrong"
    assert get(nginx_verify.url, pki.context("wrong"), path).status_code == 400
    record = nginx_verify.record_for(path)
    assert record["status"] == "400"
    assert record["ssl_client_verify"].startswith("FAILED:")
    assert record["ssl_client_s_dn"] == "CN=mallory"
    assert record["ssl_client_fingerprint"] == sha1_hex(pki.wrong)


@pytest.mark.parametrize("tls", TLS_VERSIONS)
@pytest.mark.parametrize(("cert", "status"), [("none", 403), ("wrong", 403), ("right", 200)])
def test_nginx_status_rule(
    nginx_status: NginxPeer, pki: Pki, tls: str, cert: str, status: int
) -> None:
    assert get(nginx_status.url, pki.context(cert, tls)).status_code == status


def test_nginx_status_rule_allowed_subjects(nginx_bin: str, pki: Pki) -> None:
    # A trusted certificate whose subject is not allowed gets the configured status.
    with NginxPeer(
        mode="status", status=401, allowed_subjects=["CN=bob"], binary=nginx_bin,
        **pki.peer_files(),
    ) as peer:  # fmt: skip
        assert get(peer.url, pki.context("right")).status_code == 401
        assert get(peer.url, pki.context("none")).status_code == 401
    with NginxPeer(
        mode="status", allowed_subjects=["CN=bob", "CN=alice"], binary=nginx_bin,
        **pki.peer_files(),
    ) as peer:  # fmt: skip
        assert get(peer.url, pki.context("right")).status_code == 200
        assert get(peer.url, pki.context("wrong")).status_code == 403


@pytest.mark.parametrize("tls", TLS_VERSIONS)
@pytest.mark.parametrize(("cert", "status"), [("none", 496), ("wrong", 495), ("right", 200)])
def test_nginx_error_page_codes(
    nginx_error_page: NginxPeer, pki: Pki, tls: str, cert: str, status: int
) -> None:
    assert get(nginx_error_page.url, pki.context(cert, tls)).status_code == status


def test_nginx_protocols_setting(nginx_bin: str, pki: Pki) -> None:
    with NginxPeer(protocols=("TLSv1.2",), binary=nginx_bin, **pki.peer_files()) as peer:
        assert get(peer.url, pki.context("right", "1.2")).status_code == 200
        with pytest.raises(httpx.ConnectError, match="PROTOCOL_VERSION"):
            get(peer.url, pki.context("right", "1.3"))


# --- parity: MTLSServer behaves like the peer it stands in for ------------------------------


@pytest.mark.parametrize("tls", TLS_VERSIONS)
@pytest.mark.parametrize("cert", CERTS)
def test_parity_with_mtls_server(
    nginx_verify: NginxPeer,
    registry: RegistryPeer,
    mtls_server: Callable[..., MTLSServer],
    pki: Pki,
    tls: str,
    cert: str,
) -> None:
    """Same certificates, same outcome class: real nginx (``ssl_verify_client on``) ~
    ``mtls_server(reject="http")``, real docker-registry (``clientcas``) ~
    ``mtls_server(reject="tls")``."""
    fake_http_server = mtls_server(reject="http", tls_version=tls, server_cert=pki.server)
    fake_tls_server = mtls_server(reject="tls", tls_version=tls, server_cert=pki.server)
    expected = {"none": "{reject}", "wrong": "{reject}", "right": "ok"}[cert]
    nginx, nginx_detail = outcome(nginx_verify.url, pki.context(cert, tls))
    fake_http, fake_http_detail = outcome(fake_http_server.url, pki.context(cert, tls))
    real_registry, _ = outcome(registry.url, pki.context(cert, tls))
    fake_tls, _ = outcome(fake_tls_server.url, pki.context(cert, tls))
    # Pin the real peers first, so a drift in nginx or the registry is named as such.
    assert nginx == expected.format(reject="http-400")
    assert real_registry == expected.format(reject="tls-rejected")
    assert fake_http == nginx
    # nginx's page title tells "no certificate" from "bad certificate"; so must the fake's.
    assert fake_http_detail == nginx_detail
    # Alert names differ (Go sends bad_certificate for both cases, OpenSSL sends
    # handshake_failure / certificate_required / unknown_ca): the class is what must match.
    assert fake_tls == real_registry
