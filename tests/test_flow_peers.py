"""The one-attempt flow (:mod:`dockercerts.flow`) against real servers and real handshakes.

Every scenario runs with :class:`dockercerts.Transport` under ``httpx.Client``, with
:class:`dockercerts.AsyncTransport` under ``httpx.AsyncClient`` (in an asyncio loop of its
own, reached through an anyio blocking portal) and with :class:`dockercerts.requests.Adapter`
under ``requests.Session``, so one test body drives the three front ends of the flow (requests
speaks HTTP/1.1 only: its HTTP/2 cases skip). The certs.d
folder holds a pair the server does not trust first (``a-wrong``) and the right one second
(``b-right``) unless a case says otherwise. What the servers saw is read from their own
records: nginx's access log (``$connection`` tells TLS connections apart), haproxy's
``CumSslConns`` counter and handshake-failure log, docker-registry's request log, and
tinyproxy's CONNECT log.

1. Token errors (docker-registry with token auth, mTLS on the registry itself or on nginx in
   front of it) are returned, never rotated: the Bearer challenge, ``invalid_token``,
   ``insufficient_scope``.
2. Outages: a 502 outranks a certificate page at first contact; from a known winner a 5xx is
   returned at once, with no new handshake, and the winner is kept.
3. Cold concurrency: N first requests cost at most N + k - 1 handshakes.
4. Denials (a 403 for the right pair) with remembered certificate rejections: no handshake
   after the first request.
5. haproxy's TLS alerts: TLS 1.2, 1.3, HTTP/2; every pair refused raises each front end's
   ``ClientCertificateRejected``, worded the same by all three.
6. Proxies (tinyproxy CONNECT): environment, ``NO_PROXY``, ``trust_env=False``, ``proxy=``.
7. Options checked when the transport is made.
"""

from __future__ import annotations

import functools
import ssl
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Callable, Optional, Union

import anyio
import anyio.from_thread
import httpx
import pytest
import requests
from peers import (
    HAProxyPeer,
    NginxPeer,
    RegistryPeer,
    TinyproxyPeer,
    free_port,
)
from tokenserver import TokenServer

import dockercerts.requests
from dockercerts import AsyncTransport, Transport
from dockercerts.errors import Attempt, EveryCertificateRejected
from dockercerts.rejection import TLS13_REFUSAL
from dockercerts.testing import CA, CertsD, Leaf

# Every test but the last group starts real servers.
peers = pytest.mark.peers

MODES = ("sync", "async", "requests")
# What each front end's errors derive from, as its library expects of it.
LIBRARY_ERROR = {
    "sync": httpx.TransportError,
    "async": httpx.TransportError,
    "requests": requests.exceptions.SSLError,
}
TLS_VERSIONS = ("1.2", "1.3")
PROXY_VARIABLES = (
    "HTTPS_PROXY",
    "HTTP_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "https_proxy",
    "http_proxy",
    "all_proxy",
    "no_proxy",
)


# --- certificates ---------------------------------------------------------------------------


@dataclass
class Pki:
    server_ca: CA
    right: Leaf  # issued by the CA every peer trusts (CN=right)
    wrong: Leaf  # issued by a CA no peer trusts (CN=wrong)
    wrong2: Leaf  # another untrusted one (CN=wrong2)
    peer: dict[str, Path]  # server_cert, server_key, client_ca: what a peer is started with


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory, mtls_ca: CA, mtls_ca_factory: Any) -> Pki:
    d = tmp_path_factory.mktemp("flow-peers")
    server_ca = mtls_ca_factory(name="flow peers server CA")
    cert, key = server_ca.issue_server().write(d / "server.pem", d / "server.key")
    stranger = mtls_ca_factory(name="flow peers refused CA")
    return Pki(
        server_ca=server_ca,
        right=mtls_ca.issue_client("right"),
        wrong=stranger.issue_client("wrong"),
        wrong2=stranger.issue_client("wrong2"),
        peer={"server_cert": cert, "server_key": key, "client_ca": mtls_ca.write(d / "ca.pem")},
    )


def folder(certs_d: CertsD, host: str, pki: Pki, *pairs: str) -> None:
    """The host's folder: the server's CA, then ``pairs`` by name; a name containing
    "right" gets the trusted leaf, "wrong2" the second stranger, others the first one.
    Default: ``a-wrong``, ``b-right``."""
    hostdir = certs_d.host(host).ca(pki.server_ca)
    for name in pairs or ("a-wrong", "b-right"):
        if "right" in name:
            leaf = pki.right
        elif "wrong2" in name:
            leaf = pki.wrong2
        else:
            leaf = pki.wrong
        hostdir.pair(name, leaf)


# --- one test body, sync and async ------------------------------------------------------------


def _pin(context: ssl.SSLContext, tls: Optional[str]) -> None:
    if tls == "1.2":
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    elif tls == "1.3":
        context.minimum_version = ssl.TLSVersion.TLSv1_3


def pinned(make: Callable[..., Any], tls: Optional[str]) -> Callable[..., Any]:
    """An ``inner=`` factory: ``make``, each candidate's context first made to offer exactly
    ``tls`` (docker-registry only has a minimum). The context comes as ``verify`` (the
    transports; absent for plain ``http://``) or ``ssl_context`` (the requests adapter)."""

    @functools.wraps(make)  # its signature: the front end checks the options against it
    def inner(**options: Any) -> Any:
        context = options.get("verify", options.get("ssl_context"))
        if context is not None:
            _pin(context, tls)
        return make(**options)

    return inner


# Each front end, and the inner factory it uses by default.
FRONT_ENDS: dict[str, tuple[Callable[..., Any], Callable[..., Any]]] = {
    "sync": (Transport, httpx.HTTPTransport),
    "async": (AsyncTransport, httpx.AsyncHTTPTransport),
    "requests": (dockercerts.requests.Adapter, dockercerts.requests.CandidateAdapter),
}


Response = Union[httpx.Response, requests.Response]
RESPONSES = (httpx.Response, requests.Response)
Outcome = Union[Response, BaseException]
TIMEOUT = 10.0


class Driver:
    """An ``httpx.Client`` over :class:`Transport` (``mode="sync"``), an ``httpx.AsyncClient``
    over :class:`AsyncTransport` (``"async"``: it lives in an asyncio loop in a thread of its
    own and is called through an anyio blocking portal) or a ``requests.Session`` over
    :class:`dockercerts.requests.Adapter` (``"requests"``: ``trust_env`` and ``proxy`` become
    the session's ``trust_env`` and ``proxies``; ``http2=True`` skips), with the same blocking
    methods, so one test body proves the three front ends."""

    def __init__(self, mode: str, *, tls: Optional[str] = None, **options: Any) -> None:
        self.mode = mode
        self._session: dict[str, Any] = {}
        if mode == "requests":
            if options.pop("http2", False):
                pytest.skip("requests speaks HTTP/1.1 only")
            self._session["trust_env"] = options.get("trust_env", True)  # the adapter's too
            proxy = options.pop("proxy", None)
            self._session["proxies"] = {} if proxy is None else {"https": proxy}
        front, default = FRONT_ENDS[mode]
        inner = pinned(options.pop("inner", default), tls)
        self.transport: Any = front(inner=inner, **options)
        self._portal_cm: Any = None
        self._portal: Optional[anyio.from_thread.BlockingPortal] = None
        self._client: Any = None

    def __enter__(self) -> Driver:
        if self.mode == "sync":
            self._client = httpx.Client(transport=self.transport, timeout=TIMEOUT)
        elif self.mode == "requests":
            self._client = requests.Session()
            self._client.mount("https://", self.transport)
            self._client.trust_env = self._session["trust_env"]
            self._client.proxies.update(self._session["proxies"])
        else:
            assert isinstance(self.transport, AsyncTransport)
            self._portal_cm = anyio.from_thread.start_blocking_portal("asyncio")
            self._portal = self._portal_cm.__enter__()
            self._client = httpx.AsyncClient(transport=self.transport, timeout=TIMEOUT)
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        if self._portal is None:
            self._client.close()
            return
        try:
            self._portal.call(self._client.aclose)
        finally:
            self._portal_cm.__exit__(exc_type, exc, tb)

    def request(self, method: str, url: str, **kwargs: Any) -> Response:
        if self.mode == "requests":
            kwargs.setdefault("timeout", TIMEOUT)
        call = functools.partial(self._client.request, method, url, **kwargs)
        if self._portal is None:
            response: Response = call()
        else:
            response = self._portal.call(call)
        return response

    def get(self, url: str, **kwargs: Any) -> Response:
        return self.request("GET", url, **kwargs)

    def winner(self, url: str) -> Optional[str]:
        return self.transport.winner(url)

    def many(self, urls: list[str]) -> list[Outcome]:
        """GET every URL at once: one thread each (sync), one task each (async)."""
        if self._portal is None:
            start = threading.Barrier(len(urls))

            def one(url: str) -> Outcome:
                start.wait(timeout=10)
                try:
                    return self.get(url)
                except Exception as exc:
                    return exc

            with ThreadPoolExecutor(max_workers=len(urls)) as pool:
                return list(pool.map(one, urls))

        async def gather() -> list[Outcome]:
            results: list[Outcome] = [RuntimeError("not run")] * len(urls)

            async def one(index: int) -> None:
                try:
                    results[index] = await self._client.get(urls[index])
                except Exception as exc:
                    results[index] = exc

            async with anyio.create_task_group() as group:
                for index in range(len(urls)):
                    group.start_soon(one, index)
            return results

        return self._portal.call(gather)


def attempts_of(response: Response) -> tuple[Attempt, ...]:
    if isinstance(response, requests.Response):
        attempts = dockercerts.requests.attempts(response)
    else:
        attempts = response.extensions["dockercerts.attempts"]
    assert isinstance(attempts, tuple)
    assert attempts
    assert all(isinstance(a, Attempt) for a in attempts)
    return attempts


def summary(attempts: tuple[Attempt, ...]) -> list[tuple[Optional[str], str, Optional[str]]]:
    """``(candidate, verdict, layer)`` per attempt."""
    return [(a.candidate, a.verdict, a.layer) for a in attempts]


def clear_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def nginx_connections(peer: NginxPeer, uris: list[str]) -> list[str]:
    """nginx's connection serial number of each request (one per URI, waited for)."""
    return [peer.record_for(uri)["connection"] for uri in uris]


def registry_remote(peer: RegistryPeer, uri: str) -> str:
    """The client address (``127.0.0.1:<port>``: one per TLS connection) of the request for
    ``uri``, from any registry record naming it (a refused request has no "response
    completed" record, only its authorization warning)."""
    found: list[str] = []

    def look() -> bool:
        found[:] = [
            str(r["http.request.remoteaddr"])
            for r in peer.log_records()
            if r.get("http.request.uri") == uri and "http.request.remoteaddr" in r
        ]
        return bool(found)

    assert peer.wait_for(look), peer.log_text()
    return found[0]


def ssl_conns(peer: HAProxyPeer) -> int:
    return int(peer.stats()["CumSslConns"])


# --- peers ----------------------------------------------------------------------------------


def nginx_with(tls: str, nginx_bin: str, pki: Pki, **options: Any) -> NginxPeer:
    """nginx offering TLS ``tls`` only, with the flow peers' server and client CA files."""
    return NginxPeer(protocols=(f"TLSv{tls}",), binary=nginx_bin, **pki.peer, **options)


@pytest.fixture(scope="module", params=TLS_VERSIONS)
def haproxy(request: pytest.FixtureRequest, haproxy_bin: str, pki: Pki) -> Iterator[HAProxyPeer]:
    """haproxy (``verify required``: TLS alerts) pinned to one TLS version."""
    with HAProxyPeer(tls_version=request.param, binary=haproxy_bin, **pki.peer) as peer:
        yield peer


@pytest.fixture(scope="module")
def haproxy_h2(haproxy_bin: str, pki: Pki) -> Iterator[HAProxyPeer]:
    """haproxy offering h2 and http/1.1 (TLS 1.2 and 1.3: 1.3 is negotiated)."""
    with HAProxyPeer(alpn="h2,http/1.1", binary=haproxy_bin, **pki.peer) as peer:
        yield peer


@pytest.fixture(scope="module")
def tinyproxy(tinyproxy_bin: str) -> Iterator[TinyproxyPeer]:
    with TinyproxyPeer(binary=tinyproxy_bin) as peer:
        yield peer


@dataclass
class TokenFront:
    """Where the transport connects for the token registry, and how that refuses a pair."""

    kind: str  # "registry": mTLS on the registry (TLS alerts); "nginx": nginx's 400 page
    tls: str
    peer: Union[RegistryPeer, NginxPeer]

    @property
    def url(self) -> str:
        return self.peer.url

    def connections(self, uris: list[str]) -> list[str]:
        """A server-side name of the TLS connection that carried each request."""
        if isinstance(self.peer, NginxPeer):
            return nginx_connections(self.peer, uris)
        return [registry_remote(self.peer, uri) for uri in uris]

    def refused_handshakes(self) -> int:
        """Handshakes the front refused so far (nginx refuses none: it answers 400)."""
        if isinstance(self.peer, RegistryPeer):
            return len(self.peer.handshake_errors())
        return 0


@pytest.fixture(
    scope="module",
    params=[(kind, tls) for kind in ("registry", "nginx") for tls in TLS_VERSIONS],
    ids=lambda p: f"{p[0]}-tls{p[1]}",
)
def token_front(
    request: pytest.FixtureRequest,
    pki: Pki,
    tokens: TokenServer,
    registry_bin: str,
    nginx_bin: str,
    token_registry: RegistryPeer,
) -> Iterator[TokenFront]:
    kind, tls = request.param
    peer: Union[RegistryPeer, NginxPeer]
    if kind == "registry":
        peer = RegistryPeer(token_auth=tokens.auth, binary=registry_bin, **pki.peer)
    else:
        peer = nginx_with(tls, nginx_bin, pki, upstream=token_registry.address)
    with peer:
        yield TokenFront(kind, tls, peer)


def check_wrong_then_right(attempts: tuple[Attempt, ...], front: TokenFront) -> None:
    """``a-wrong`` refused at the certificate layer once, ``b-right``'s answer given back."""
    assert summary(attempts) == [
        ("a-wrong", "rejected", "certificate"),
        ("b-right", "accepted", None),
    ]
    wrong, right = attempts
    if front.kind == "nginx":
        # nginx completes the handshake and answers its page.
        assert (wrong.status, wrong.outcome) == (400, "HTTP 400 The SSL certificate error")
        assert (wrong.fresh, wrong.tls_version) == (True, f"TLSv{front.tls}")
    elif front.tls == "1.2":
        # Go refuses inside the TLS 1.2 handshake: no connection was opened for the try.
        assert (wrong.outcome, wrong.alert, wrong.fresh) == (
            "TLS alert bad_certificate",
            "bad_certificate",
            False,
        )
    else:
        # TLS 1.3: the client's handshake was done before Go judged the certificate.
        assert (wrong.outcome, wrong.fresh, wrong.tls_version) == (TLS13_REFUSAL, True, "TLSv1.3")
    assert wrong.layer == "certificate"
    assert (right.fresh, right.tls_version) == (True, f"TLSv{front.tls}")
    assert right.status == 401
    assert right.outcome == "HTTP 401 (token challenge)"


# --- 1. token errors are returned, not rotated ------------------------------------------------


@peers
@pytest.mark.parametrize("mode", MODES)
def test_anonymous_request_gets_the_bearer_challenge(
    mode: str, token_front: TokenFront, tokens: TokenServer, pki: Pki, certs_d: CertsD
) -> None:
    folder(certs_d, token_front.peer.host, pki)
    with Driver(mode, tls=token_front.tls, root=certs_d.root) as http:
        response = http.get(token_front.url + "/v2/")
        assert http.winner(token_front.url) == "b-right"
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == (
        f'Bearer realm="{tokens.realm}",service="{tokens.service}"'
    )
    check_wrong_then_right(attempts_of(response), token_front)


@peers
@pytest.mark.parametrize("mode", MODES)
def test_expired_token_is_returned_and_costs_no_new_handshake(
    mode: str, token_front: TokenFront, tokens: TokenServer, pki: Pki, certs_d: CertsD
) -> None:
    folder(certs_d, token_front.peer.host, pki)
    # Expired by more than distribution's 60 s leeway.
    token = tokens.token_for("repository:team/rw:pull", lifetime=-300)
    headers = {"Authorization": f"Bearer {token}"}
    challenge = (
        f'Bearer realm="{tokens.realm}",service="{tokens.service}",'
        'scope="repository:team/rw:pull",error="invalid_token"'
    )
    uris = [f"/v2/team/rw/tags/list?t={mode}-{n}" for n in range(2)]
    with Driver(mode, tls=token_front.tls, root=certs_d.root) as http:
        refused_before = token_front.refused_handshakes()
        first = http.get(token_front.url + uris[0], headers=headers)
        second = http.get(token_front.url + uris[1], headers=headers)
        assert http.winner(token_front.url) == "b-right"
    for response in (first, second):
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == challenge
    check_wrong_then_right(attempts_of(first), token_front)
    # The next request: the winner first, on its kept-alive connection, and its 401 given
    # back as is; a-wrong is not tried again.
    (again,) = attempts_of(second)
    assert (again.candidate, again.verdict, again.status, again.fresh) == (
        "b-right",
        "accepted",
        401,
        False,
    )
    # Server side: both requests on one TLS connection, no refused handshake after the first.
    first_conn, second_conn = token_front.connections(uris)
    assert first_conn == second_conn
    if token_front.kind == "registry":
        assert token_front.peer.wait_for(
            lambda: token_front.refused_handshakes() >= refused_before + 1
        )
        # Only a-wrong's, during the first request.
        assert token_front.refused_handshakes() == refused_before + 1


@peers
@pytest.mark.parametrize("mode", MODES)
def test_push_with_pull_only_token_is_insufficient_scope(
    mode: str, token_front: TokenFront, tokens: TokenServer, pki: Pki, certs_d: CertsD
) -> None:
    folder(certs_d, token_front.peer.host, pki)
    token = tokens.token_for("repository:team/app:pull,push")  # the table grants pull only
    with Driver(mode, tls=token_front.tls, root=certs_d.root) as http:
        # Not ClientCertificateRejected, not the wrong pair's answer: the registry's 401.
        response = http.request(
            "POST",
            token_front.url + "/v2/team/app/blobs/uploads/",
            headers={"Authorization": f"Bearer {token}"},
        )
        assert http.winner(token_front.url) == "b-right"
    assert response.status_code == 401
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith(f'Bearer realm="{tokens.realm}",service="{tokens.service}",')
    assert 'scope="repository:team/app:' in challenge
    assert challenge.endswith('error="insufficient_scope"')
    assert response.json()["errors"][0]["code"] == "UNAUTHORIZED"
    check_wrong_then_right(attempts_of(response), token_front)


# --- 2. outages -------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=TLS_VERSIONS)
def nginx_outage(request: pytest.FixtureRequest, nginx_bin: str, pki: Pki) -> Iterator[NginxPeer]:
    """nginx mTLS (verify) whose upstream nobody listens on: 502 for a trusted pair."""
    with nginx_with(request.param, nginx_bin, pki, upstream=f"127.0.0.1:{free_port()}") as peer:
        yield peer


@peers
@pytest.mark.parametrize("mode", MODES)
def test_first_contact_502_outranks_the_certificate_page(
    mode: str, nginx_outage: NginxPeer, pki: Pki, certs_d: CertsD
) -> None:
    folder(certs_d, nginx_outage.host, pki, "a-right", "b-wrong")
    uri = f"/v2/?t=outage-{mode}"
    with Driver(mode, root=certs_d.root) as http:
        response = http.get(nginx_outage.url + uri)
        # Nothing worked: no winner.
        assert http.winner(nginx_outage.url) is None
    assert response.status_code == 502
    assert b"502 Bad Gateway" in response.content
    assert "Docker-Distribution-API-Version" not in response.headers
    attempts = attempts_of(response)
    assert summary(attempts) == [
        ("a-right", "rejected", "server"),
        ("b-wrong", "rejected", "certificate"),
    ]
    assert [(a.status, a.outcome) for a in attempts] == [
        (502, "HTTP 502"),
        (400, "HTTP 400 The SSL certificate error"),
    ]
    # Both were really asked, in that order.
    assert nginx_outage.wait_for(
        lambda: len([r for r in nginx_outage.records() if r["uri"] == uri]) == 2
    )
    records = [r for r in nginx_outage.records() if r["uri"] == uri]
    assert [(r["status"], r["ssl_client_s_dn"]) for r in records] == [
        ("502", "CN=right"),
        ("400", "CN=wrong"),
    ]


# The front's own answer when the registry behind it is down.
OUTAGE_STATUS = {"nginx": 502, "haproxy": 503}


@peers
@pytest.mark.parametrize("kind", sorted(OUTAGE_STATUS))
@pytest.mark.parametrize("mode", MODES)
def test_5xx_from_the_known_winner_is_returned_at_once(
    mode: str,
    kind: str,
    nginx_bin: str,
    haproxy_bin: str,
    registry_bin: str,
    pki: Pki,
    certs_d: CertsD,
) -> None:
    """A TLS front (nginx: certificate pages; haproxy: TLS alerts) in front of a registry
    that goes down after the winner is known: the front's 5xx, given back at once on the
    winner's connection; no handshake, the winner kept."""
    front_type, binary = (NginxPeer, nginx_bin) if kind == "nginx" else (HAProxyPeer, haproxy_bin)
    status = OUTAGE_STATUS[kind]
    with (
        RegistryPeer(binary=registry_bin) as backend,
        front_type(upstream=backend.address, binary=binary, **pki.peer) as front,
    ):
        folder(certs_d, front.host, pki)
        uris = [f"/v2/?t=winner-{mode}-{n}" for n in range(4)]
        with Driver(mode, root=certs_d.root) as http:
            up = http.get(front.url + uris[0])
            assert up.status_code == 200
            assert summary(attempts_of(up)) == [
                ("a-wrong", "rejected", "certificate"),
                ("b-right", "accepted", None),
            ]
            assert http.winner(front.url) == "b-right"
            backend.stop()  # the outage
            down = [http.get(front.url + uri) for uri in uris[1:]]
            assert http.winner(front.url) == "b-right"
        for response in down:
            assert response.status_code == status
            assert [
                (a.candidate, a.verdict, a.layer, a.status, a.fresh) for a in attempts_of(response)
            ] == [("b-right", "returned", None, status, False)]
        # Server side: a-wrong refused once, every request on b-right's one connection.
        if isinstance(front, NginxPeer):
            assert len(set(nginx_connections(front, uris))) == 1
            subjects = [r["ssl_client_s_dn"] for r in front.records() if r["uri"] in uris]
            assert (subjects.count("CN=wrong"), len(subjects)) == (1, 5)
        else:
            assert len({front.record_for(uri)["client"] for uri in uris}) == 1
            assert len(front.wait_for_handshake_failures(1)) == 1
            assert ssl_conns(front) == 2


# --- 3. cold concurrency ----------------------------------------------------------------------

CONCURRENT = 32
# The right pair k-th: the k - 1 wrong ones sort before it.
ORDERS = {2: ("a-wrong", "b-right"), 3: ("a-wrong", "b-wrong2", "c-right")}


@peers
@pytest.mark.parametrize("k", sorted(ORDERS))
@pytest.mark.parametrize("mode", MODES)
def test_cold_concurrent_requests_search_once(
    mode: str, k: int, haproxy: HAProxyPeer, pki: Pki, certs_d: CertsD
) -> None:
    folder(certs_d, haproxy.host, pki, *ORDERS[k])
    right = ORDERS[k][-1]
    tag = f"cold-{mode}-{k}"
    urls = [f"{haproxy.url}/v2/?t={tag}-{n}" for n in range(CONCURRENT)]
    conns_before = ssl_conns(haproxy)
    failures_before = len(haproxy.handshake_failures())
    with Driver(mode, root=certs_d.root) as http:
        results = http.many(urls)
        assert http.winner(haproxy.url) == right
    errors = [r for r in results if not isinstance(r, RESPONSES)]
    assert not errors, errors
    responses = [r for r in results if isinstance(r, RESPONSES)]
    assert [r.status_code for r in responses] == [200] * CONCURRENT
    # Exactly one request searched: it alone tried the wrong pairs.
    searches = [r for r in responses if len(attempts_of(r)) > 1]
    assert len(searches) == 1
    assert summary(attempts_of(searches[0])) == [
        *[(name, "rejected", "certificate") for name in ORDERS[k][:-1]],
        (right, "accepted", None),
    ]
    for response in responses:
        assert attempts_of(response)[-1].candidate == right
    # Server side: k - 1 refused handshakes, and at most N + k - 1 in all.
    assert haproxy.wait_for(lambda: len(haproxy.handshake_failures()) >= failures_before + k - 1)
    haproxy.wait_for(
        lambda: sum(r["uri"].startswith(f"/v2/?t={tag}-") for r in haproxy.requests()) >= CONCURRENT
    )
    refused = len(haproxy.handshake_failures()) - failures_before
    handshakes = ssl_conns(haproxy) - conns_before
    print(
        f"cold concurrency TLS {haproxy.tls_version} {mode}: N={CONCURRENT} k={k} "
        f"handshakes={handshakes} refused={refused}"
    )
    assert refused == k - 1
    assert k <= handshakes <= CONCURRENT + k - 1
    served = [r for r in haproxy.requests() if r["uri"].startswith(f"/v2/?t={tag}-")]
    assert len(served) == CONCURRENT
    assert {r["ssl_client_s_dn"] for r in served} == {"CN=right"}


# --- 4. denials with remembered rejections ----------------------------------------------------


@pytest.fixture(scope="module", params=TLS_VERSIONS)
def nginx_denies(request: pytest.FixtureRequest, nginx_bin: str, pki: Pki) -> Iterator[NginxPeer]:
    """``optional``: an untrusted pair gets nginx's 400 page; a trusted one reaches the rule,
    which allows no subject: 403."""
    denies = {"mode": "status", "verify_client": "optional", "allowed_subjects": []}
    with nginx_with(request.param, nginx_bin, pki, **denies) as peer:
        yield peer


@peers
@pytest.mark.parametrize("mode", MODES)
def test_denial_with_remembered_rejection_costs_no_handshake(
    mode: str, nginx_denies: NginxPeer, pki: Pki, certs_d: CertsD
) -> None:
    folder(certs_d, nginx_denies.host, pki)
    uris = [f"/v2/?t=deny-{mode}-{n}" for n in range(4)]
    with Driver(mode, root=certs_d.root) as http:
        responses = [http.get(nginx_denies.url + uri) for uri in uris]
        assert http.winner(nginx_denies.url) is None
    assert [r.status_code for r in responses] == [403] * len(uris)
    first = attempts_of(responses[0])
    assert summary(first) == [
        ("a-wrong", "rejected", "certificate"),
        ("b-right", "rejected", "authorization"),
    ]
    assert [(a.status, a.fresh) for a in first] == [(400, True), (403, True)]
    for response in responses[1:]:
        # a-wrong skipped (refused at the certificate layer moments ago), b-right's 403 again
        # on its kept-alive connection.
        assert [
            (a.candidate, a.verdict, a.layer, a.status, a.fresh) for a in attempts_of(response)
        ] == [("b-right", "rejected", "authorization", 403, False)]
    # Server side: a-wrong asked once; every later request on b-right's first connection.
    connections = nginx_connections(nginx_denies, uris)
    assert len(set(connections)) == 1, connections
    records = [r for r in nginx_denies.records() if r["uri"] in uris]
    assert [(r["status"], r["ssl_client_s_dn"]) for r in records] == [
        ("400", "CN=wrong"),
        *[("403", "CN=right")] * len(uris),
    ]
    assert records[0]["connection"] != connections[0]


# --- 5. haproxy: rejection by TLS alert -------------------------------------------------------


@peers
@pytest.mark.parametrize("mode", MODES)
def test_haproxy_wrong_first_right_wins(
    mode: str, haproxy: HAProxyPeer, pki: Pki, certs_d: CertsD
) -> None:
    folder(certs_d, haproxy.host, pki)
    uri = f"/v2/?t=alert-{mode}"
    before = len(haproxy.handshake_failures())
    with Driver(mode, root=certs_d.root) as http:
        response = http.get(haproxy.url + uri)
        assert http.winner(haproxy.url) == "b-right"
    assert response.status_code == 200
    wrong, right = attempts = attempts_of(response)
    assert summary(attempts) == [
        ("a-wrong", "rejected", "certificate"),
        ("b-right", "accepted", None),
    ]
    tls = f"TLSv{haproxy.tls_version}"
    assert (right.tls_version, right.fresh, right.status) == (tls, True, 200)
    if haproxy.tls_version == "1.2":
        # Refused inside the handshake: no connection was opened for the try.
        assert (wrong.outcome, wrong.alert, wrong.fresh, wrong.tls_version) == (
            "TLS alert unknown_ca",
            "unknown_ca",
            False,
            None,
        )
    else:
        # The client's handshake was done before haproxy judged the certificate.
        assert (wrong.outcome, wrong.fresh, wrong.tls_version) == (TLS13_REFUSAL, True, tls)
    assert haproxy.record_for(uri)["ssl_client_s_dn"] == "CN=right"
    failures = haproxy.wait_for_handshake_failures(before + 1)[before:]
    assert [f["ssl_client_s_dn"] for f in failures] == ["CN=wrong"]


@peers
@pytest.mark.parametrize("mode", MODES)
def test_haproxy_wrong_first_right_wins_over_http2(
    mode: str, haproxy_h2: HAProxyPeer, pki: Pki, certs_d: CertsD
) -> None:
    folder(certs_d, haproxy_h2.host, pki)
    uris = [f"/v2/?t=h2-{mode}-{n}" for n in range(2)]
    with Driver(mode, root=certs_d.root, http2=True) as http:
        responses = [http.get(haproxy_h2.url + uri) for uri in uris]
        assert http.winner(haproxy_h2.url) == "b-right"
    assert [(r.status_code, http_version(r)) for r in responses] == [(200, "HTTP/2")] * 2
    assert summary(attempts_of(responses[0])) == [
        ("a-wrong", "rejected", "certificate"),
        ("b-right", "accepted", None),
    ]
    assert [(a.candidate, a.fresh) for a in attempts_of(responses[1])] == [("b-right", False)]
    for uri in uris:
        record = haproxy_h2.record_for(uri)
        assert (record["alpn"], record["http_version"]) == ("h2", "HTTP/2.0")
        assert record["ssl_client_s_dn"] == "CN=right"
    assert len({haproxy_h2.record_for(uri)["client"] for uri in uris}) == 1


@peers
def test_haproxy_every_pair_refused_raises_the_same_in_every_front_end(
    haproxy: HAProxyPeer, pki: Pki, certs_d: CertsD
) -> None:
    folder(certs_d, haproxy.host, pki, "a-wrong", "b-wrong2")
    raised: dict[str, EveryCertificateRejected] = {}
    for mode in MODES:
        with Driver(mode, root=certs_d.root) as http:
            with pytest.raises(EveryCertificateRejected) as info:
                http.get(haproxy.url + "/v2/")
            assert http.winner(haproxy.url) is None
        raised[mode] = info.value
    for mode, exc in raised.items():
        assert isinstance(exc, LIBRARY_ERROR[mode])
        assert exc.directory == certs_d.root / haproxy.host
        assert summary(exc.attempts) == [
            ("a-wrong", "rejected", "certificate"),
            ("b-wrong2", "rejected", "certificate"),
        ]
        expected = "TLS alert unknown_ca" if haproxy.tls_version == "1.2" else TLS13_REFUSAL
        assert [a.outcome for a in exc.attempts] == [expected, expected]
        assert f"a-wrong: {expected}; b-wrong2: {expected}" in str(exc)
    sync = raised["sync"]
    for other in (raised["async"], raised["requests"]):
        assert [a.describe() for a in sync.attempts] == [a.describe() for a in other.attempts]
        assert str(sync) == str(other)


# --- 6. proxies ---------------------------------------------------------------------------------


@dataclass
class Target:
    """The server behind the proxy (haproxy offering h2 and http/1.1), the HTTP version the
    client asks for and the TLS version it offers."""

    peer: HAProxyPeer
    http2: bool
    tls: str


@pytest.fixture(
    params=[(http2, tls) for http2 in (False, True) for tls in TLS_VERSIONS],
    ids=lambda p: f"{'http2' if p[0] else 'http1'}-tls{p[1]}",
)
def target(request: pytest.FixtureRequest, haproxy_h2: HAProxyPeer) -> Target:
    http2, tls = request.param
    return Target(haproxy_h2, http2, tls)


def http_version(response: Response) -> str:
    if isinstance(response, requests.Response):
        return {10: "HTTP/1.0", 11: "HTTP/1.1"}[response.raw.version]
    return response.http_version


def check_through(response: Response, target: Target) -> None:
    """The rotation worked in the tunnel: a-wrong refused, b-right's 200 in the asked
    HTTP and TLS versions."""
    assert response.status_code == 200
    assert http_version(response) == ("HTTP/2" if target.http2 else "HTTP/1.1")
    attempts = attempts_of(response)
    assert summary(attempts) == [
        ("a-wrong", "rejected", "certificate"),
        ("b-right", "accepted", None),
    ]
    assert attempts[-1].tls_version == f"TLSv{target.tls}"


@peers
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("how", ["environment", "no_proxy", "trust_env_false", "explicit"])
def test_proxies(
    mode: str,
    how: str,
    target: Target,
    tinyproxy: TinyproxyPeer,
    pki: Pki,
    certs_d: CertsD,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``HTTPS_PROXY`` carries the rotation: one CONNECT per TLS connection (a-wrong's and
    b-right's), none for the next request on the winner's kept-alive tunnel. ``NO_PROXY``
    and ``trust_env=False`` bypass it; ``proxy=`` works without the environment."""
    server, http2 = target.peer, target.http2
    folder(certs_d, server.host, pki)
    clear_proxy_env(monkeypatch)
    options: dict[str, Any] = {}
    if how == "explicit":
        options["proxy"] = tinyproxy.url
    else:
        monkeypatch.setenv("HTTPS_PROXY", tinyproxy.url)
    if how == "no_proxy":
        monkeypatch.setenv("NO_PROXY", "localhost")
    elif how == "trust_env_false":
        options["trust_env"] = False
    before = len(tinyproxy.connects())
    uris = [f"/v2/?t=proxy-{how}-{mode}-{http2}-{target.tls}-{n}" for n in range(2)]
    with Driver(mode, tls=target.tls, root=certs_d.root, http2=http2, **options) as http:
        responses = [http.get(server.url + uri) for uri in uris]
        assert http.winner(server.url) == "b-right"
    check_through(responses[0], target)
    assert [(a.candidate, a.fresh) for a in attempts_of(responses[1])] == [("b-right", False)]
    assert server.record_for(uris[0])["ssl_client_s_dn"] == "CN=right"
    proxied = how in ("environment", "explicit")
    assert tinyproxy.connects()[before:] == ([server.host] * 2 if proxied else [])


# --- 7. options checked at construction ---------------------------------------------------------


@pytest.mark.parametrize("cls", [Transport, AsyncTransport])
@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"trust": "Merge"}, ValueError, "trust must be"),
        ({"recheck": -1}, ValueError, "recheck must be"),
        ({"recheck": float("nan")}, ValueError, "recheck must be"),
        ({"max_hosts": 0}, ValueError, "max_hosts must be"),
        ({"trust_env": "yes"}, TypeError, "trust_env must be"),
    ],
    ids=["trust-Merge", "recheck-negative", "recheck-nan", "max_hosts-0", "trust_env-str"],
)
def test_options_are_checked_at_construction(
    cls: Callable[..., Any],
    options: dict[str, Any],
    error: type[Exception],
    match: str,
    tmp_path: Path,
) -> None:
    with pytest.raises(error, match=match):
        cls(root=tmp_path, **options)
