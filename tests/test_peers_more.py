"""Self-tests of the newer real peers: haproxy, tinyproxy, docker-registry with token auth
(with tests/tokenserver.py) and nginx proxying to a registry.

Each test proves a peer does what the transport tests will rely on, with plain ``ssl``
contexts and httpx (not the dockercerts transport): haproxy refuses a bad client certificate
with a TLS alert on TLS 1.2 and 1.3 and logs the good one, speaks h2 when asked; tinyproxy
logs the CONNECTs it carried; the token registry answers Bearer challenges,
``insufficient_scope`` and ``invalid_token``; nginx in front of a registry passes it through,
and gives a 502 when it is down. Without the binaries these skip, except under
``DOCKERCERTS_REQUIRE_PEERS=1`` (CI), where they fail.
"""

from __future__ import annotations

import hashlib
import json
import re
import ssl
from collections.abc import Iterator
from typing import Optional

import httpx
import peers
import pytest
from peers import (
    HAProxyPeer,
    NginxPeer,
    RegistryPeer,
    TinyproxyPeer,
    free_port,
    require_peer,
)
from test_peers import Pki
from tokenserver import Scope, TokenServer

from dockercerts.testing import CA

pytestmark = pytest.mark.peers

TLS_VERSIONS = ("1.2", "1.3")

# What OpenSSL (haproxy's) sends, as the client's OpenSSL names it.
HAPROXY_ALERTS = {
    ("1.2", "none"): "SSLV3_ALERT_HANDSHAKE_FAILURE",
    ("1.2", "wrong"): "TLSV1_ALERT_UNKNOWN_CA",
    ("1.3", "none"): "TLSV13_ALERT_CERTIFICATE_REQUIRED",
    ("1.3", "wrong"): "TLSV1_ALERT_UNKNOWN_CA",
}
HAPROXY_REASONS = {
    "none": "SSL handshake failure",
    "wrong": "SSL client certificate not trusted",
}


MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.make(
        tmp_path_factory.mktemp("pki-more"),
        CA(name="peers-more CA"),
        CA(name="peers-more other CA"),
    )


@pytest.fixture(scope="module", params=TLS_VERSIONS)
def haproxy(request: pytest.FixtureRequest, haproxy_bin: str, pki: Pki) -> Iterator[HAProxyPeer]:
    """haproxy pinned to one TLS version on its side; clients offer both."""
    with HAProxyPeer(tls_version=request.param, binary=haproxy_bin, **pki.peer_files()) as peer:
        yield peer


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def alert_in(exc: BaseException) -> str:
    """The first OpenSSL alert name in ``exc`` or its cause/context chain, or ``""``."""
    current: Optional[BaseException] = exc
    seen: set[int] = set()
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        for word in str(current).replace("[", " ").replace("]", " ").split():
            if "_ALERT_" in word:
                return word
        current = current.__cause__ or current.__context__
    return ""


def push_blob(client: httpx.Client, base: str, repo: str, data: bytes) -> str:
    """Monolithic blob upload (POST, then PUT with the digest); returns the digest."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    started = client.post(f"{base}/v2/{repo}/blobs/uploads/")
    assert started.status_code == 202, started.text
    location = httpx.URL(base).join(started.headers["Location"])
    done = client.put(location.copy_add_param("digest", digest), content=data)
    assert done.status_code == 201, done.text
    return digest


def push_image(client: httpx.Client, base: str, repo: str, tag: str) -> str:
    """A minimal schema-2 image (config + one layer); returns the manifest digest."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "tag": tag}).encode()
    layer = b"dockercerts layer for " + tag.encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_V2,
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "size": len(config),
            "digest": push_blob(client, base, repo, config),
        },
        "layers": [
            {
                "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                "size": len(layer),
                "digest": push_blob(client, base, repo, layer),
            }
        ],
    }
    body = json.dumps(manifest).encode()
    response = client.put(
        f"{base}/v2/{repo}/manifests/{tag}",
        content=body,
        headers={"Content-Type": MANIFEST_V2},
    )
    assert response.status_code == 201, response.text
    digest = response.headers["Docker-Content-Digest"]
    assert digest == "sha256:" + hashlib.sha256(body).hexdigest()
    return digest


# --- require_peer ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["haproxy", "tinyproxy"])
def test_require_peer_knows_the_new_peers(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setattr(peers, "haproxy_binary", lambda: None)
    monkeypatch.setattr(peers, "tinyproxy_binary", lambda: None)
    monkeypatch.delenv("DOCKERCERTS_REQUIRE_PEERS", raising=False)
    with pytest.raises(pytest.skip.Exception, match=f"{name} not installed: apt-get install"):
        require_peer(name)
    monkeypatch.setenv("DOCKERCERTS_REQUIRE_PEERS", "1")
    with pytest.raises(pytest.fail.Exception, match=r"\.ci/run"):
        require_peer(name)


# --- haproxy: rejection in TLS --------------------------------------------------------------


@pytest.mark.parametrize("cert", ["none", "wrong"])
def test_haproxy_rejects_with_a_tls_alert(haproxy: HAProxyPeer, pki: Pki, cert: str) -> None:
    tls = haproxy.tls_version
    assert tls is not None
    before = len(haproxy.handshake_failures())
    # TLS 1.3: the client's handshake is done before the server judges its certificate,
    # so the alert arrives on the first read (httpx.ReadError), not in connect.
    expected = httpx.ConnectError if tls == "1.2" else httpx.ReadError
    with pytest.raises(expected) as info:
        httpx.get(haproxy.url + "/v2/", verify=pki.context(cert), timeout=5.0)
    assert alert_in(info.value) == HAPROXY_ALERTS[tls, cert], repr(info.value)
    failures = haproxy.wait_for_handshake_failures(before + 1)[before:]
    assert [f["error_str"] for f in failures] == [HAPROXY_REASONS[cert]], haproxy.log_text()
    assert failures[0]["ssl_protocol"] == f"TLSv{tls}"
    assert failures[0]["ssl_client_s_dn"] == ("CN=mallory" if cert == "wrong" else "")


def test_haproxy_accepts_the_right_cert_and_logs_it(haproxy: HAProxyPeer, pki: Pki) -> None:
    path = f"/v2/?t=right-{haproxy.tls_version}"
    response = httpx.get(haproxy.url + path, verify=pki.context("right"), timeout=5.0)
    assert response.status_code == 200
    assert response.json() == {}
    assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    record = haproxy.record_for(path)
    assert record["status"] == "200"
    assert record["ssl_protocol"] == f"TLSv{haproxy.tls_version}"
    assert record["ssl_client_verify"] == "0"
    assert record["ssl_client_s_dn"] == pki.right.subject == "CN=alice"
    assert record["ssl_client_i_dn"] == pki.ca.subject
    assert record["ssl_client_sha1"] == hashlib.sha1(pki.right.der).hexdigest()
    assert record["ssl_client_serial"] == f"{pki.right.certificate.serial_number:x}".zfill(
        len(record["ssl_client_serial"])
    )
    # Anything outside /v2/ is not a registry.
    assert httpx.get(haproxy.url + "/", verify=pki.context("right")).status_code == 404


def test_haproxy_tls_version_is_enforced(haproxy: HAProxyPeer, pki: Pki) -> None:
    other = "1.3" if haproxy.tls_version == "1.2" else "1.2"
    with pytest.raises(httpx.ConnectError, match="PROTOCOL_VERSION"):
        httpx.get(haproxy.url + "/v2/", verify=pki.context("right", other), timeout=5.0)


def test_haproxy_counts_connections(haproxy_bin: str, pki: Pki) -> None:
    with HAProxyPeer(binary=haproxy_bin, **pki.peer_files()) as peer:
        with httpx.Client(verify=pki.context("right"), timeout=5.0) as client:
            for i in range(3):  # one keep-alive connection, three requests
                assert client.get(f"{peer.url}/v2/?n={i}").status_code == 200
        with pytest.raises((httpx.ConnectError, httpx.ReadError)):
            httpx.get(peer.url + "/v2/", verify=pki.context("wrong"), timeout=5.0)
        peer.record_for("/v2/?n=2")
        assert len(peer.wait_for_handshake_failures(1)) == 1
        assert len(peer.requests()) == 3
        assert len(peer.connections()) == 1
        # Every TLS connection the test opened, the refused one too: no readiness probe.
        assert peer.stats()["CumSslConns"] == "2"


def test_haproxy_h2_with_alpn(haproxy_bin: str, pki: Pki) -> None:
    with HAProxyPeer(alpn="h2,http/1.1", binary=haproxy_bin, **pki.peer_files()) as peer:
        with httpx.Client(http2=True, verify=pki.context("right"), timeout=5.0) as client:
            response = client.get(peer.url + "/v2/?t=h2")
        assert response.http_version == "HTTP/2"
        assert response.status_code == 200
        assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"
        record = peer.record_for("/v2/?t=h2")
        assert (record["alpn"], record["http_version"]) == ("h2", "HTTP/2.0")
    # Without alpn haproxy offers nothing, and the same client falls back to HTTP/1.1.
    with (
        HAProxyPeer(binary=haproxy_bin, **pki.peer_files()) as peer,
        httpx.Client(http2=True, verify=pki.context("right"), timeout=5.0) as client,
    ):
        assert client.get(peer.url + "/v2/").http_version == "HTTP/1.1"


def test_haproxy_upstream_and_outage(
    haproxy_bin: str, pki: Pki, token_registry: RegistryPeer, tokens: TokenServer
) -> None:
    with HAProxyPeer(
        upstream=token_registry.address, alpn="h2,http/1.1", binary=haproxy_bin,
        **pki.peer_files(),
    ) as peer:  # fmt: skip
        with httpx.Client(http2=True, verify=pki.context("right"), timeout=5.0) as client:
            anonymous = client.get(peer.url + "/v2/")
            assert anonymous.status_code == 401
            assert anonymous.headers["WWW-Authenticate"].startswith(
                f'Bearer realm="{tokens.realm}"'
            )
            token = tokens.token_for("repository:team/rw:pull,push")
            client.headers.update(bearer(token))
            # Through h2 and haproxy: the upload's Location points back at haproxy.
            started = client.post(peer.url + "/v2/team/rw/blobs/uploads/")
            assert started.status_code == 202, started.text
            assert started.headers["Location"].startswith(f"https://localhost:{peer.port}/")
        assert peer.record_for("/v2/team/rw/blobs/uploads/")["backend"] == "upstream"
    closed = free_port()
    with HAProxyPeer(
        upstream=f"127.0.0.1:{closed}", binary=haproxy_bin, **pki.peer_files()
    ) as peer:
        response = httpx.get(peer.url + "/v2/", verify=pki.context("right"), timeout=10.0)
        assert response.status_code == 503


# --- tinyproxy ------------------------------------------------------------------------------


def test_tinyproxy_carries_and_logs_connect(
    tinyproxy_bin: str, haproxy_bin: str, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    with (
        TinyproxyPeer(binary=tinyproxy_bin) as proxy,
        HAProxyPeer(binary=haproxy_bin, **pki.peer_files()) as target,
    ):
        assert proxy.url == f"http://127.0.0.1:{proxy.port}"
        assert "ConnectPort" not in proxy.config_text()
        response = httpx.get(
            target.url + "/v2/", verify=pki.context("right"), proxy=proxy.url, timeout=5.0
        )
        assert response.status_code == 200
        assert proxy.connects() == [target.host]
        # The environment's proxy, with the target in NO_PROXY: straight there.
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        monkeypatch.setenv("NO_PROXY", "localhost")
        with httpx.Client(verify=pki.context("right"), trust_env=True, timeout=5.0) as client:
            assert client.get(target.url + "/v2/?t=direct").status_code == 200
        target.record_for("/v2/?t=direct")
        assert proxy.connects() == [target.host]
        monkeypatch.setenv("NO_PROXY", "registry.invalid")
        with httpx.Client(verify=pki.context("right"), trust_env=True, timeout=5.0) as client:
            assert client.get(target.url + "/v2/?t=proxied").status_code == 200
        assert proxy.connects() == [target.host, target.host]


def test_tinyproxy_connect_ports(tinyproxy_bin: str) -> None:
    # With a ConnectPort list, CONNECT to any other port is refused with 403.
    with TinyproxyPeer(connect_ports=[443], binary=tinyproxy_bin) as proxy:
        assert "ConnectPort 443" in proxy.config_text()
        port = free_port()
        with pytest.raises(httpx.ProxyError, match="403"):
            httpx.get(f"https://localhost:{port}/v2/", proxy=proxy.url, timeout=5.0)
        # Logged all the same: the request line is read before the port is judged.
        assert proxy.connects() == [f"localhost:{port}"]


# --- docker-registry with token auth --------------------------------------------------------


def test_token_server_grants_what_the_table_says(tokens: TokenServer) -> None:
    assert tokens.granted(Scope.parse("repository:team/app:pull,push"), None) == ("pull",)
    assert tokens.granted(Scope.parse("repository:team/rw:push,pull"), None) == ("push", "pull")
    assert tokens.granted(Scope.parse("repository:other:pull"), None) == ()
    assert Scope.parse("repository:registry.test:5000/app:pull").name == "registry.test:5000/app"
    tokens.fetch("repository:team/app:pull,push")
    last = tokens.requests[-1]
    assert [str(s) for s in last.scopes] == ["repository:team/app:pull,push"]
    assert [a.actions for a in last.granted] == [("pull",)]


def test_token_server_over_https_with_basic_auth(pki: Pki) -> None:
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(str(pki.server_cert), str(pki.server_key))
    client_ctx = pki.context("none")
    with TokenServer(tls=server_ctx, users={"alice": "s3cret"}) as server:
        assert server.realm == f"https://localhost:{server.port}/token"
        with pytest.raises(httpx.HTTPStatusError, match="401"):
            server.fetch("repository:team/app:pull", verify=client_ctx)
        with pytest.raises(httpx.HTTPStatusError, match="401"):
            server.fetch("repository:team/app:pull", auth=("alice", "no"), verify=client_ctx)
        server.fetch("repository:team/app:pull", auth=("alice", "s3cret"), verify=client_ctx)
        assert [r.account for r in server.requests] == ["alice"]
        assert server.requests[0].granted[0].actions == ("pull",)


def test_token_registry_challenges_anonymous_requests(
    token_registry: RegistryPeer, tokens: TokenServer
) -> None:
    response = httpx.get(token_registry.url + "/v2/", timeout=5.0)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == (
        f'Bearer realm="{tokens.realm}",service="{tokens.service}"'
    )
    token = tokens.fetch()  # no scope: enough for /v2/ itself
    assert httpx.get(token_registry.url + "/v2/", headers=bearer(token)).status_code == 200


def test_token_registry_push_then_pull(token_registry: RegistryPeer, tokens: TokenServer) -> None:
    base = token_registry.url
    with httpx.Client(headers=bearer(tokens.fetch("repository:team/rw:pull,push"))) as client:
        digest = push_image(client, base, "team/rw", "v1")
    pull = bearer(tokens.fetch("repository:team/rw:pull"))
    response = httpx.get(f"{base}/v2/team/rw/manifests/v1", headers={**pull, "Accept": MANIFEST_V2})
    assert response.status_code == 200
    assert response.headers["Docker-Content-Digest"] == digest
    # A pull token for the (empty) pull-only repository: authorized, and nothing there.
    app = bearer(tokens.fetch("repository:team/app:pull"))
    missing = httpx.get(f"{base}/v2/team/app/manifests/v1", headers=app)
    assert missing.status_code == 404
    assert missing.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"


def test_token_registry_refuses_push_with_a_pull_only_token(
    token_registry: RegistryPeer, tokens: TokenServer
) -> None:
    token = tokens.fetch("repository:team/app:pull,push")  # the table grants pull only
    response = httpx.post(token_registry.url + "/v2/team/app/blobs/uploads/", headers=bearer(token))
    assert response.status_code == 401
    # e.g. Bearer realm="...",service="...",scope="repository:team/app:push,pull",
    # error="insufficient_scope"; the registry lists the actions in no fixed order.
    challenge = response.headers["WWW-Authenticate"]
    match = re.fullmatch(
        f'Bearer realm="{re.escape(tokens.realm)}",service="{tokens.service}",'
        'scope="repository:team/app:(?P<actions>[a-z,]+)",error="insufficient_scope"',
        challenge,
    )
    assert match, challenge
    assert sorted(match["actions"].split(",")) == ["pull", "push"]


def test_token_registry_refuses_an_expired_token(
    token_registry: RegistryPeer, tokens: TokenServer
) -> None:
    # Expired by more than distribution's 60 s leeway.
    token = tokens.token_for("repository:team/rw:pull", lifetime=-300)
    response = httpx.get(token_registry.url + "/v2/team/rw/tags/list", headers=bearer(token))
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == (
        f'Bearer realm="{tokens.realm}",service="{tokens.service}",'
        'scope="repository:team/rw:pull",error="invalid_token"'
    )


# --- nginx in front of a registry ----------------------------------------------------------


def test_nginx_upstream_registry_and_outage(
    nginx_bin: str, pki: Pki, token_registry: RegistryPeer, tokens: TokenServer
) -> None:
    with NginxPeer(upstream=token_registry.address, binary=nginx_bin, **pki.peer_files()) as nginx:
        assert f"proxy_pass http://{token_registry.address};" in nginx.config_text()
        with httpx.Client(verify=pki.context("right"), timeout=5.0) as client:
            # The registry's own challenge, through nginx.
            assert client.get(nginx.url + "/v2/").status_code == 401
            client.headers.update(bearer(tokens.fetch("repository:team/rw:pull,push")))
            # A whole push through nginx: Host and X-Forwarded-Proto make the registry's
            # upload Locations point back at nginx over https.
            digest = push_image(client, nginx.url, "team/rw", "via-nginx")
            response = client.get(
                nginx.url + "/v2/team/rw/manifests/via-nginx", headers={"Accept": MANIFEST_V2}
            )
            assert response.headers["Docker-Content-Digest"] == digest
        assert nginx.record_for("/v2/team/rw/manifests/via-nginx")["ssl_client_s_dn"] == "CN=alice"
        # nginx still checks the client certificate before proxying.
        assert httpx.get(nginx.url + "/v2/", verify=pki.context("wrong")).status_code == 400
    closed = free_port()
    with NginxPeer(upstream=f"127.0.0.1:{closed}", binary=nginx_bin, **pki.peer_files()) as nginx:
        response = httpx.get(nginx.url + "/v2/", verify=pki.context("right"), timeout=5.0)
        assert response.status_code == 502
        assert "Docker-Distribution-API-Version" not in response.headers


def test_upstream_must_be_loopback(pki: Pki) -> None:
    with pytest.raises(ValueError, match="upstream"):
        NginxPeer(upstream="example.com:80", **pki.peer_files())
    with pytest.raises(ValueError, match="upstream"):
        HAProxyPeer(upstream="127.0.0.1:80; evil", **pki.peer_files())
