"""containerd's endpoint walk without sockets: scripted answers per endpoint, every decision
checked.

As ``test_flow.py`` does for the certificate tries, each test drives
:meth:`dockercerts.flow.Exchange.flow` by hand over a real routed host state (a containerd
folder with a ``hosts.toml``: two mirrors and the server, one client pair each) and answers
each ``Send`` from a script keyed by the endpoint it is aimed at.
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import httpx
import pytest
from test_flow import PAGE, TIMEOUT, Answer, sent_of

from dockercerts import DOCKER, AsyncTransport, Transport
from dockercerts._hosts import Hosts, HostState
from dockercerts._options import options
from dockercerts.flow import Close, Decision, Exchange, Learn, Read, Send, Sent, settle, steady
from dockercerts.routing import Target, operation
from dockercerts.testing import CA

M1 = "https://m1:5000/v2"  # pull only
M2 = "https://m2:5000/cache/v2"  # pull and resolve, override_path
SERVER = "https://reg:5000/v2"

TAG = "/v2/team/app/manifests/v1"
BLOB = "/v2/team/app/blobs/sha256:" + "a" * 64

HOSTS_TOML = """\
server = "https://reg:5000"
client = "server.pem"

[host."https://m1:5000"]
capabilities = ["pull"]
client = "m1.pem"

[host."https://m2:5000/cache/v2"]
capabilities = ["pull", "resolve"]
override_path = true
client = "m2.pem"
"""


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ca = CA()
    root = tmp_path_factory.mktemp("routing")
    folder = root / "reg:5000"
    folder.mkdir()
    for name in ("server", "m1", "m2"):
        leaf = ca.issue_client(name)
        path = folder / f"{name}.pem"
        path.write_bytes(leaf.cert_pem + leaf.key_pem())
        path.chmod(0o600)
    (folder / "hosts.toml").write_text(HOSTS_TOML)
    return root


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The flow's clock, moved by hand: ``clock[0] += seconds``."""
    now = [1000.0]
    monkeypatch.setattr("dockercerts.flow.time.monotonic", lambda: now[0])
    return now


def routed(root: Path, recheck: float = 60.0) -> HostState[Any]:
    """A fresh routed host state for ``reg:5000`` (inner transports are never built)."""
    settings = options(root, "linux", None, None, DOCKER, 1000.0, recheck, runtime="containerd")
    hosts: Hosts[Any] = Hosts(settings, lambda url: lambda candidate: None, 8)
    state = hosts.get(httpx.URL("https://reg:5000/"))
    assert state.routes is not None
    return state


def exchange(
    state: HostState[Any],
    path: str,
    *,
    method: str = "GET",
    replayable: Callable[[], bool] = lambda: True,
    exhaustive: bool = False,
    begin: Optional[Target] = None,
) -> Exchange[Any]:
    return Exchange(
        state,
        DOCKER,
        method=method,
        replayable=replayable,
        exhaustive=exhaustive,
        path=path,
        begin=begin,
    )


@dataclass
class Walk:
    """One exchange driven: the endpoints tried, the answers closed, the decision."""

    endpoints: list[str]
    closed: list[Any]
    decision: Decision[Any]


def drive(
    flow: Generator[Any, Any, Decision[Any]],
    script: dict[str, Answer],
    *,
    first: Any = None,
) -> Walk:
    """A front end in a dozen lines: each try answered by the endpoint it is aimed at (the
    response is ``"<endpoint>|<status>"``); ``first``: what the flow is sent first."""
    endpoints: list[str] = []
    closed: list[Any] = []
    reply: Any = first
    try:
        while True:
            step = flow.send(reply)
            if isinstance(step, Send):
                assert step.target is not None, "a routed exchange aims every try"
                endpoints.append(step.target.name)
                reply = sent(step.target.name, script)
            elif isinstance(step, Read):
                reply = (script[step.response.split("|")[0]].body, step.response)
            else:
                assert isinstance(step, Close), step
                closed.append(step.response)
                reply = None
    except StopIteration as end:
        return Walk(endpoints, closed, end.value)


def sent(endpoint: str, script: dict[str, Answer]) -> Sent[Any]:
    answer = script[endpoint]
    return sent_of(answer, f"{endpoint}|{answer.status}")


def walk(state: HostState[Any], path: str, script: dict[str, Answer], **kwargs: Any) -> Walk:
    return drive(exchange(state, path, **kwargs).flow(), script)


def given_back(w: Walk) -> Optional[str]:
    response = w.decision.response
    return None if response is None else str(response)


# --- order by capability -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "endpoints"),
    [
        # A tag is resolved at endpoints with pull *and* resolve: the pull-only mirror is skipped.
        ("GET", TAG, [M2, SERVER]),
        ("HEAD", TAG, [M2, SERVER]),
        # A blob or a manifest by digest is a pull: every mirror in file order, then server.
        ("GET", BLOB, [M1, M2, SERVER]),
        ("GET", "/v2/team/app/manifests/sha256:" + "b" * 64, [M1, M2, SERVER]),
        # Everything else is a push: the server only.
        ("PUT", TAG, [SERVER]),
        ("POST", "/v2/team/app/blobs/uploads/", [SERVER]),
        ("GET", "/v2/", [SERVER]),
    ],
)
def test_endpoints_in_file_order_by_capability(
    root: Path, method: str, path: str, endpoints: list[str]
) -> None:
    every_404 = {M1: Answer(404), M2: Answer(404), SERVER: Answer(404)}
    w = walk(routed(root), path, every_404, method=method)
    assert w.endpoints == endpoints
    assert [a.endpoint for a in w.decision.attempts] == endpoints
    # Each endpoint with its own client pair (the certificate tries run inside each).
    names = {M1: "m1.pem", M2: "m2.pem", SERVER: "server.pem"}
    assert [a.candidate for a in w.decision.attempts] == [names[e] for e in endpoints]


# --- fallback ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "failure",
    [TIMEOUT, Answer(404), Answer(500), Answer(503), Answer(403), Answer(401), PAGE],
    ids=["transport-error", "404", "500", "503", "403", "401-no-challenge", "certificate-page"],
)
def test_a_failing_mirror_moves_on(root: Path, failure: Answer) -> None:
    state = routed(root, recheck=0)
    w = walk(state, BLOB, {M1: failure, M2: Answer(200), SERVER: Answer(200)})
    assert w.endpoints == [M1, M2]
    assert given_back(w) == f"{M2}|200"
    # The mirror's answer was closed; the one given back was not.
    assert w.closed == ([] if failure.error else [f"{M1}|{failure.status}"])
    assert w.decision.attempts[-1].verdict == "accepted"


def test_a_redirect_ends_the_walk(root: Path) -> None:
    w = walk(routed(root), BLOB, {M1: Answer(307), M2: Answer(200), SERVER: Answer(200)})
    assert (w.endpoints, given_back(w)) == ([M1], f"{M1}|307")


# --- ranking when every endpoint fails -----------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "answer"),
    [
        # containerd's rank: transport error < 404 < any other status > 399.
        ({M1: TIMEOUT, M2: Answer(404), SERVER: Answer(500)}, f"{SERVER}|500"),
        ({M1: Answer(500), M2: Answer(404), SERVER: TIMEOUT}, f"{M1}|500"),
        ({M1: TIMEOUT, M2: Answer(404), SERVER: TIMEOUT}, f"{M2}|404"),
        # The flow's certificate page sits between a transport error and a 404.
        ({M1: PAGE, M2: TIMEOUT, SERVER: TIMEOUT}, f"{M1}|400"),
        ({M1: PAGE, M2: Answer(404), SERVER: TIMEOUT}, f"{M2}|404"),
        # Among equals, the first tried.
        ({M1: Answer(404), M2: Answer(404), SERVER: Answer(404)}, f"{M1}|404"),
        ({M1: Answer(502), M2: Answer(403), SERVER: Answer(500)}, f"{M1}|502"),
    ],
)
def test_when_every_endpoint_fails_the_best_ranked_is_given_back(
    root: Path, script: dict[str, Answer], answer: str
) -> None:
    w = walk(routed(root), BLOB, script)
    assert w.endpoints == [M1, M2, SERVER]
    assert given_back(w) == answer
    chosen = w.decision.attempts[w.decision.chosen or 0]
    assert f"{chosen.endpoint}|{chosen.status}" == answer
    # Every other answer closed once, the one given back not at all.
    others = [f"{e}|{a.status}" for e, a in script.items() if a.error is None]
    assert sorted(w.closed) == sorted(o for o in others if o != answer)


def test_every_endpoint_unreachable_raises_the_first_error(root: Path) -> None:
    first = Answer(error=httpx.ConnectError("refused"))
    w = walk(routed(root), BLOB, {M1: first, M2: TIMEOUT, SERVER: TIMEOUT})
    assert w.decision.response is None
    assert w.decision.error is first.error
    assert not w.decision.rejected
    assert [a.verdict for a in w.decision.attempts] == ["error"] * 3


# --- a 401 challenge -----------------------------------------------------------------------------


def test_a_challenge_is_returned_at_once_and_sticks(root: Path, clock: list[float]) -> None:
    """Token auth is the caller's: the challenge is given back, and the request retried
    with the token goes to the endpoint that asked for it."""
    state = routed(root, recheck=60)
    challenge = Answer(401, challenge=True)
    script = {M1: Answer(404), M2: challenge, SERVER: Answer(200)}
    w = walk(state, BLOB, script)
    assert (w.endpoints, given_back(w)) == ([M1, M2], f"{M2}|401")
    assert w.decision.attempts[-1].outcome == "HTTP 401 (token challenge)"
    assert w.closed == [f"{M1}|404"]
    # With the token: straight to the endpoint that challenged.
    again = walk(state, BLOB, {M1: Answer(404), M2: Answer(200), SERVER: Answer(200)})
    assert (again.endpoints, given_back(again)) == ([M2], f"{M2}|200")
    # A resolve has its own sticky endpoint: not moved by the pull's.
    resolved = walk(state, TAG, {M2: Answer(200), SERVER: Answer(200)})
    assert resolved.endpoints == [M2]
    pushed = walk(state, "/v2/team/app/blobs/uploads/", {SERVER: Answer(202)}, method="POST")
    assert pushed.endpoints == [SERVER]


def test_a_challenge_at_the_first_endpoint_sticks_nothing(root: Path) -> None:
    state = routed(root)
    walk(state, BLOB, {M1: Answer(401, challenge=True)})
    assert state.routes is not None
    assert state.routes.sticky == {}


# --- a body that cannot be replayed ---------------------------------------------------------------


def test_a_body_already_sent_stops_at_the_first_endpoint(root: Path) -> None:
    w = walk(
        routed(root),
        BLOB,
        {M1: Answer(404), M2: Answer(200), SERVER: Answer(200)},
        replayable=lambda: False,
    )
    assert (w.endpoints, given_back(w)) == ([M1], f"{M1}|404")
    assert "could not be replayed" in w.decision.note
    assert w.closed == []


def test_a_body_not_yet_read_goes_on(root: Path) -> None:
    # A transport error before the body was read: still replayable, the walk goes on.
    w = walk(routed(root), BLOB, {M1: TIMEOUT, M2: Answer(200)}, replayable=lambda: True)
    assert w.endpoints == [M1, M2]


# --- the sticky endpoint -------------------------------------------------------------------------


def test_the_sticky_endpoint_holds_for_recheck_seconds(root: Path, clock: list[float]) -> None:
    state = routed(root, recheck=60)
    down = {M1: TIMEOUT, M2: Answer(404), SERVER: Answer(200)}
    assert walk(state, BLOB, down).endpoints == [M1, M2, SERVER]
    assert walk(state, BLOB, down).endpoints == [SERVER]
    clock[0] += 59
    assert walk(state, BLOB, down).endpoints == [SERVER]
    # Held from the first success, not renewed by the next ones: the mirrors get a new try.
    clock[0] += 2
    assert walk(state, BLOB, down).endpoints == [M1, M2, SERVER]


def test_the_sticky_endpoint_failing_walks_on_then_wraps(root: Path) -> None:
    state = routed(root, recheck=60)
    walk(state, BLOB, {M1: TIMEOUT, M2: Answer(200)})
    # M2 sticks; when it fails, those after it, then those before it (failed recently:
    # tried last, not dropped).
    w = walk(state, BLOB, {M1: Answer(200), M2: TIMEOUT, SERVER: TIMEOUT})
    assert (w.endpoints, given_back(w)) == ([M2, SERVER, M1], f"{M1}|200")
    # M1, the first endpoint, answered: the default order again.
    assert state.routes is not None
    assert state.routes.sticky == {}


def test_recheck_zero_never_sticks(root: Path) -> None:
    state = routed(root, recheck=0)
    down = {M1: TIMEOUT, M2: TIMEOUT, SERVER: Answer(200)}
    assert walk(state, BLOB, down).endpoints == [M1, M2, SERVER]
    assert walk(state, BLOB, down).endpoints == [M1, M2, SERVER]


def test_the_probes_walk_changes_nothing(root: Path) -> None:
    state = routed(root)
    script = {M1: TIMEOUT, M2: Answer(404), SERVER: Answer(200)}
    probe = walk(state, BLOB, script, exhaustive=True)
    assert probe.endpoints == [M1, M2, SERVER]
    assert given_back(probe) == f"{SERVER}|200"
    assert state.routes is not None
    assert state.routes.sticky == {}
    assert walk(state, BLOB, script).endpoints == [M1, M2, SERVER]


def test_the_steady_lane_goes_to_the_sticky_endpoints_winner(root: Path) -> None:
    state = routed(root)
    walk(state, BLOB, {M1: TIMEOUT, M2: Answer(404), SERVER: Answer(200)})
    lane = steady(state, "GET", BLOB)
    assert lane is not None
    slot, target, owner = lane
    assert target is not None
    assert (target.name, slot.name, owner is state) == (SERVER, "server.pem", True)
    records = settle(lane, sent(SERVER, {SERVER: Answer(200)}))
    assert records is not None
    assert [a.endpoint for a in records] == [SERVER]
    # A failure of the lane's try is judged by the walk, which goes on from there.
    lane = steady(state, "GET", BLOB)
    assert lane is not None
    failing = sent(SERVER, {SERVER: Answer(404)})
    assert settle(lane, failing) is None
    ex = exchange(state, BLOB, begin=lane[1])
    rest = drive(ex.flow((lane[0], failing)), {M1: Answer(200), M2: Answer(200)})
    assert rest.endpoints == [M1]
    assert [a.endpoint for a in rest.decision.attempts] == [SERVER, M1]


def test_the_walk_goes_on_from_the_lanes_endpoint_even_if_the_memory_changed(root: Path) -> None:
    """Another request may change which endpoint a walk starts from between the lane's try
    and its exchange: the exchange judges the try as the lane's endpoint's all the same."""
    state = routed(root)
    walk(state, BLOB, {M1: TIMEOUT, M2: Answer(404), SERVER: Answer(200)})
    lane = steady(state, "GET", BLOB)
    assert lane is not None
    assert state.routes is not None
    state.routes.sticky.clear()  # meanwhile: walks start at the first mirror again
    failing = sent(SERVER, {SERVER: Answer(404)})
    ex = exchange(state, BLOB, begin=lane[1])
    rest = drive(ex.flow((lane[0], failing)), {M1: Answer(200), M2: Answer(200)})
    assert [a.endpoint for a in rest.decision.attempts] == [SERVER, M1]


def test_no_endpoint_for_the_operation(tmp_path: Path) -> None:
    folder = tmp_path / "reg:5000"
    folder.mkdir()
    (folder / "hosts.toml").write_text(
        'server = "https://reg:5000"\ncapabilities = ["pull"]\n'
        '[host."https://m1:5000"]\ncapabilities = ["pull"]\n'
    )
    state = routed(tmp_path)
    assert steady(state, "POST", "/v2/team/app/blobs/uploads/") is None
    ex = exchange(state, "/v2/team/app/blobs/uploads/", method="POST")
    w = drive(ex.flow(), {})
    assert w.endpoints == []
    assert type(w.decision.error).__name__ == "NoEndpointError"
    assert "push" in str(w.decision.error)


@pytest.mark.parametrize(
    ("method", "path", "op"),
    [
        ("GET", "/v2/a/b/c/manifests/latest", "resolve"),
        ("HEAD", "/v2/team/app/manifests/sha256:" + "b" * 64, "pull"),
        ("GET", "/v2/team/app/manifests/v1.2-rc.3", "resolve"),
        ("GET", "/v2/team/app/blobs/sha256:" + "c" * 64, "pull"),
        ("GET", "/v2/team/app/referrers/sha256:" + "d" * 64, "referrers"),
        ("GET", "/v2/team/app/blobs/uploads/abc", "push"),
        ("GET", "/v2/team/app/tags/list", "push"),
        ("GET", "/v2/_catalog", "push"),
        ("GET", "/v2/blobs/sha256:x", "push"),  # no name
        ("DELETE", "/v2/team/app/blobs/sha256:" + "c" * 64, "push"),
        ("PATCH", "/v2/team/app/blobs/uploads/abc", "push"),
    ],
)
def test_the_operation_of_a_request(method: str, path: str, op: str) -> None:
    assert operation(method, path) == op


def test_the_ca_names_learned_are_the_endpoints(tmp_path: Path) -> None:
    """order="ca-names": the names are read from the server the next try goes to (the
    mirror), not from the registry in the URL."""
    ca = CA()
    folder = tmp_path / "reg:5000"
    folder.mkdir()
    for name in ("one", "two"):
        leaf = ca.issue_client(name)
        (folder / f"{name}.pem").write_bytes(leaf.cert_pem + leaf.key_pem())
        (folder / f"{name}.pem").chmod(0o600)
    (folder / "hosts.toml").write_text(
        'server = "https://reg:5000"\n[host."https://m1:5000"]\ncapabilities = ["pull"]\n'
        'client = ["one.pem", "two.pem"]\n'
    )
    settings = options(
        tmp_path, "linux", None, None, DOCKER, 1000.0, runtime="containerd", order="ca-names"
    )
    hosts: Hosts[Any] = Hosts(settings, lambda url: lambda candidate: None, 8)
    flow = exchange(hosts.get(httpx.URL("https://reg:5000/")), BLOB).flow()
    step = next(flow)
    assert isinstance(step, Learn)
    assert step.target is not None
    assert step.target.name == M1
    step = flow.send(())
    assert isinstance(step, Send)
    assert step.target is not None
    assert step.target.name == M1
    flow.close()


@pytest.mark.parametrize("twin", ["sync", "async"])
def test_the_transports_learn_from_the_endpoint(
    root: Path, twin: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The drivers apply Learn's target: the names are read from the mirror's host."""
    # Two pairs at the mirror, so that there is an order to learn.
    folder = root.parent / "ca-names" / "reg:5000"
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("m1.pem", "server.pem"):
        (folder / name).write_bytes((root / "reg:5000" / name).read_bytes())
        (folder / name).chmod(0o600)
    (folder / "hosts.toml").write_text(
        'server = "https://reg:5000"\nclient = "server.pem"\n'
        '[host."https://m1:5000"]\ncapabilities = ["pull"]\nclient = ["m1.pem", "server.pem"]\n'
    )
    asked: list[str] = []

    def learn(url: httpx.URL, proxy: Any, timeout: Any) -> tuple[bytes, ...]:
        asked.append(str(url))
        return ()

    monkeypatch.setattr("dockercerts.transport.canames.learn", learn)
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200)

    settings: dict[str, Any] = {
        "runtime": "containerd",
        "root": folder.parent,
        "order": "ca-names",
        "trust_env": False,
    }
    url = "https://reg:5000" + BLOB
    if twin == "sync":
        transport = Transport(inner=lambda **_: httpx.MockTransport(answer), **settings)
        with httpx.Client(transport=transport) as client:
            assert client.get(url).status_code == 200
    else:

        async def main() -> None:
            transport = AsyncTransport(inner=lambda **_: httpx.MockTransport(answer), **settings)
            async with httpx.AsyncClient(transport=transport) as client:
                assert (await client.get(url)).status_code == 200

        asyncio.run(main())
    assert [httpx.URL(u).netloc for u in asked] == [b"m1:5000"]
    assert seen == ["https://m1:5000" + BLOB + "?ns=reg%3A5000"]
