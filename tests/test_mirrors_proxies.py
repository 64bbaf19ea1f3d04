"""containerd routing through a proxy: each endpoint gets the proxy its own URL calls for.

The mirror world of ``test_mirrors_peers.py`` (docker-registry behind nginx with mTLS) with
one mirror, ``A`` (``pull`` only, which lacks the extra blob), and the upstream as ``server``:
a pull of the extra blob tries ``A`` (404) and falls back to the server (200). tinyproxy's log
says which endpoints were reached through it (one ``CONNECT`` per TLS connection); nginx's
logs say that ``A`` was reached at all.

``NO_PROXY`` names one endpoint (``localhost:<port>``, which requests and httpx both match
against the host and port): that one is reached directly, the other through the proxy, with
``HTTPS_PROXY`` from the environment. For the requests adapter the ``NO_PROXY`` list may also
come from ``proxies={"no_proxy": ...}``, as requests reads it; an explicit
``proxies={"https": ...}`` entry keeps winning over ``NO_PROXY``, as in requests; a session
that does not trust the environment uses no proxy at all. The httpx transport, which has
always chosen the proxy per endpoint, runs the environment cases for parity.

Without peers: :func:`dockercerts._prepared.endpoint_proxies`, given what requests chose for
the request's own URL, picks the proxy requests picks for a request made to the endpoint
itself, over combinations of the environment, ``proxies=`` and ``trust_env``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import httpx
import pytest
import requests
from peers import TinyproxyPeer
from requests.models import PreparedRequest
from requests.utils import resolve_proxies, select_proxy
from test_flow_peers import PROXY_VARIABLES
from test_mirrors_peers import World, world

import dockercerts.requests
from dockercerts import Transport
from dockercerts._prepared import EndpointProxies, endpoint_proxies
from dockercerts.routing import Target

peers = pytest.mark.peers

__all__ = ["world"]  # the mirror world, one per module


@pytest.fixture(scope="module")
def tinyproxy(tinyproxy_bin: str) -> Iterator[TinyproxyPeer]:
    with TinyproxyPeer(binary=tinyproxy_bin) as peer:
        yield peer


def one_mirror(world: World, root: Path, *, two_pairs: bool = False) -> Path:
    """A ``hosts.toml`` for the registry with ``A`` as its only mirror, with its own pair.
    ``two_pairs``: the upstream's pair (which ``A``'s nginx refuses) comes first, so that
    ``order="ca-names"`` has something to learn."""
    work = world.work
    pairs = [("up", "a")] if two_pairs else [("a",)]
    client = ", ".join(f'["{work / n}.crt", "{work / n}.key"]' for n in pairs[0])
    return world.hosts_toml(
        root,
        f'[host."{world.endpoint(world.a)}"]\ncapabilities = ["pull"]\n'
        f'ca = "{work / "server-ca.crt"}"\nclient = [{client}]\n',
    )


def proxy_env(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in values.items():
        monkeypatch.setenv(name, value)


def netloc(world: World, which: str) -> str:
    """``localhost:<port>`` of the mirror (``"mirror"``) or the registry (``"server"``)."""
    return f"localhost:{(world.a if which == 'mirror' else world.up).port}"


def pull_extra(
    world: World,
    root: Path,
    mode: str,
    *,
    session_options: Optional[dict[str, Any]] = None,
    proxies: Optional[dict[str, str]] = None,
    order: str = "docker",
) -> list[tuple[str, str]]:
    """GET the blob only the server holds (``A`` 404, the server 200) through the requests
    adapter (``mode="requests"``; ``proxies=`` on the request) or the httpx transport; the
    walk, ``(endpoint, outcome)`` per attempt."""
    url = world.url(f"team/app/blobs/{world.extra}")
    options: dict[str, Any] = {"runtime": "containerd", "root": root, "order": order}
    if mode == "requests":
        with dockercerts.requests.session(**options, **(session_options or {})) as session:
            response = session.get(url, proxies=proxies, timeout=10)
            attempts = dockercerts.requests.attempts(response)
            content = response.content
    else:
        with httpx.Client(transport=Transport(**options), timeout=10) as client:
            answer = client.get(url)
            attempts = answer.extensions["dockercerts.attempts"]
            content = answer.content
    assert content == b"a blob only the upstream holds"
    return [(str(a.endpoint), a.outcome) for a in attempts]


def check_walk(world: World, walk: list[tuple[str, str]]) -> None:
    assert walk[0] == (world.endpoint(world.a), "HTTP 404")
    assert walk[-1] == (world.endpoint(world.up), "HTTP 200")


@peers
@pytest.mark.parametrize("mode", ["requests", "httpx"])
@pytest.mark.parametrize("direct", ["mirror", "server"])
def test_no_proxy_from_the_environment_is_applied_per_endpoint(
    world: World,
    tinyproxy: TinyproxyPeer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
    direct: str,
) -> None:
    """``HTTPS_PROXY`` and ``NO_PROXY`` naming the mirror: the mirror is reached directly and
    the fallback to the server goes through the proxy; naming the server: the reverse."""
    proxied = "server" if direct == "mirror" else "mirror"
    proxy_env(monkeypatch, HTTPS_PROXY=tinyproxy.url, NO_PROXY=netloc(world, direct))
    before = len(tinyproxy.connects())
    check_walk(world, pull_extra(world, one_mirror(world, tmp_path), mode))
    assert tinyproxy.connects()[before:] == [netloc(world, proxied)]


@peers
@pytest.mark.parametrize("direct", ["mirror", "server"])
def test_no_proxy_from_proxies_is_applied_per_endpoint(
    world: World,
    tinyproxy: TinyproxyPeer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    direct: str,
) -> None:
    """requests' ``proxies={"no_proxy": ...}`` in place of the ``NO_PROXY`` variable."""
    proxied = "server" if direct == "mirror" else "mirror"
    proxy_env(monkeypatch, HTTPS_PROXY=tinyproxy.url)
    before = len(tinyproxy.connects())
    root = one_mirror(world, tmp_path)
    walk = pull_extra(world, root, "requests", proxies={"no_proxy": netloc(world, direct)})
    check_walk(world, walk)
    assert tinyproxy.connects()[before:] == [netloc(world, proxied)]


@peers
@pytest.mark.parametrize("mode", ["requests", "httpx"])
@pytest.mark.parametrize("direct", ["mirror", "server"])
def test_ca_names_are_read_through_the_endpoints_proxy(
    world: World,
    tinyproxy: TinyproxyPeer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
    direct: str,
) -> None:
    """``order="ca-names"``: the mirror's CA names (its two pairs) are read as its tries are
    sent, directly when ``NO_PROXY`` names it, else through the proxy (the read's CONNECT,
    then the one of the pair its names chose)."""
    pytest.importorskip("OpenSSL")
    proxy_env(monkeypatch, HTTPS_PROXY=tinyproxy.url, NO_PROXY=netloc(world, direct))
    before = len(tinyproxy.connects())
    root = one_mirror(world, tmp_path, two_pairs=True)
    walk = pull_extra(world, root, mode, order="ca-names")
    assert walk == [
        (world.endpoint(world.a), "HTTP 404"),
        (world.endpoint(world.up), "HTTP 200"),
    ]
    expected = [netloc(world, "server")] if direct == "mirror" else [netloc(world, "mirror")] * 2
    assert tinyproxy.connects()[before:] == expected


@peers
def test_explicit_proxies_keep_winning_over_no_proxy(
    world: World, tinyproxy: TinyproxyPeer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``proxies={"https": ...}`` (no proxy in the environment) is used for every endpoint,
    the one ``NO_PROXY`` names too: requests applies ``NO_PROXY`` to the environment's
    proxies only."""
    proxy_env(monkeypatch, NO_PROXY=netloc(world, "mirror"))
    before = len(tinyproxy.connects())
    root = one_mirror(world, tmp_path)
    check_walk(world, pull_extra(world, root, "requests", proxies={"https": tinyproxy.url}))
    assert tinyproxy.connects()[before:] == [netloc(world, "mirror"), netloc(world, "server")]


@peers
@pytest.mark.parametrize("direct", ["mirror", "server"])
def test_a_session_that_does_not_trust_the_environment_uses_no_proxy(
    world: World,
    tinyproxy: TinyproxyPeer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    direct: str,
) -> None:
    """``session(trust_env=False)``: the session and its adapter ignore ``HTTPS_PROXY`` for
    every endpoint."""
    proxy_env(monkeypatch, HTTPS_PROXY=tinyproxy.url, NO_PROXY=netloc(world, direct))
    before = len(tinyproxy.connects())
    root = one_mirror(world, tmp_path)
    walk = pull_extra(world, root, "requests", session_options={"trust_env": False})
    check_walk(world, walk)
    assert tinyproxy.connects()[before:] == []


# --- without peers: the same choice as requests makes for the endpoint's own URL -------------

REGISTRY = "https://registry.example:5000/v2/team/app/blobs/sha256:ab"
MIRROR = "https://mirror.example:6000/v2/team/app/blobs/sha256:ab?ns=registry.example%3A5000"
P, Q = "http://env-proxy:3128", "http://explicit-proxy:3128"
ENVIRONMENTS = {
    "none": {},
    "https": {"HTTPS_PROXY": P},
    "https-no-mirror": {"HTTPS_PROXY": P, "NO_PROXY": "mirror.example"},
    "https-no-registry": {"HTTPS_PROXY": P, "NO_PROXY": "registry.example:5000"},
    "lower-case-wins": {"HTTPS_PROXY": Q, "https_proxy": P, "no_proxy": "mirror.example:6000"},
    "all-no-mirror": {"ALL_PROXY": P, "NO_PROXY": ".example:6000"},
    "no-everything": {"HTTPS_PROXY": P, "NO_PROXY": "*"},
}
EXPLICIT = {
    "none": {},
    "https": {"https": Q},
    "no_proxy-mirror": {"no_proxy": "mirror.example"},
    "no_proxy-registry": {"no_proxy": "registry.example"},
    "per-host": {"all://mirror.example": Q},
}


def prepared(url: str) -> PreparedRequest:
    made = PreparedRequest()
    made.prepare(method="GET", url=url)
    return made


def requests_choice(url: str, explicit: dict[str, str], trust_env: bool, how: str) -> Any:
    """The proxies requests gives an adapter for ``url``: through ``Session.request``
    (``proxies=`` merged with the environment) or ``Session.send`` (the session's
    ``proxies``, resolved)."""
    if how == "send":
        return resolve_proxies(prepared(url), dict(explicit), trust_env)
    with requests.Session() as session:
        session.trust_env = trust_env
        settings = session.merge_environment_settings(url, dict(explicit), None, None, None)
    return settings["proxies"]


def endpoint(url: str) -> Target:
    netloc = url.split("/")[2]
    host, _, port = netloc.partition(":")
    return Target(
        f"https://{netloc}/v2", "https", host, int(port), netloc, "/v2", None, "", (),
        frozenset(), False,
    )  # fmt: skip


@pytest.mark.parametrize("how", ["request", "send"])
@pytest.mark.parametrize("trust_env", [True, False], ids=["trust_env", "no-trust_env"])
@pytest.mark.parametrize("explicit", EXPLICIT, ids=str)
@pytest.mark.parametrize("environment", ENVIRONMENTS, ids=str)
def test_endpoint_proxies_pick_what_requests_picks_for_the_endpoint(
    monkeypatch: pytest.MonkeyPatch, environment: str, explicit: str, trust_env: bool, how: str
) -> None:
    proxy_env(monkeypatch, **ENVIRONMENTS[environment])
    given = EXPLICIT[explicit]
    remembered = EndpointProxies(8)
    for own, aimed in ((REGISTRY, MIRROR), (MIRROR, REGISTRY)):
        expected = select_proxy(aimed, requests_choice(aimed, given, trust_env, how))
        chosen = requests_choice(own, given, trust_env, how)
        assert select_proxy(aimed, endpoint_proxies(prepared(aimed), own, chosen, trust_env)) == (
            expected
        )
        for _ in range(2):  # computed, then remembered
            found = remembered.get(prepared(aimed), own, endpoint(aimed), chosen, trust_env)
            assert select_proxy(aimed, found) == expected


def test_remembered_proxies_follow_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    remembered = EndpointProxies(8)
    aimed = endpoint(MIRROR)
    proxy_env(monkeypatch, HTTPS_PROXY=P)
    assert select_proxy(MIRROR, remembered.get(prepared(MIRROR), REGISTRY, aimed, {}, True)) == P
    monkeypatch.setenv("NO_PROXY", "mirror.example")
    assert select_proxy(MIRROR, remembered.get(prepared(MIRROR), REGISTRY, aimed, {}, True)) is None


def test_session_and_adapter_agree_on_trust_env() -> None:
    with dockercerts.requests.session() as made:
        assert made.trust_env is made.get_adapter("https://x/").trust_env is True
    with dockercerts.requests.session(trust_env=False) as made:
        assert made.trust_env is made.get_adapter("https://x/").trust_env is False
    with pytest.raises(TypeError, match="trust_env must be"):
        dockercerts.requests.Adapter(trust_env="no")
