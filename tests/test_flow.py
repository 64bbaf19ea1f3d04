"""The attempt flow without sockets: scripted answers per candidate, every decision checked.

Each test drives :meth:`dockercerts.flow.Exchange.flow` by hand, as a front end does, over
a real host state loaded from a certs.d folder (so order, winner and memory are the real
ones) and answers each ``Send`` from a script: an HTTP status (with a body for nginx's page,
a challenge) or an exception.
"""

from __future__ import annotations

import dataclasses
import inspect
import ssl
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Union

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dockercerts import DOCKER, DOCKER_LEGACY
from dockercerts._hosts import Hosts, HostState
from dockercerts._layouts import Layout
from dockercerts._options import options
from dockercerts.errors import Attempt
from dockercerts.flow import Close, Decision, Exchange, Read, Send, Sent, Wait, settle, steady
from dockercerts.rejection import TLS13_REFUSAL, RejectionPolicy
from dockercerts.testing import CA, CertsD

NGINX_PAGE = b"<html><head><title>400 The SSL certificate error</title></head></html>"


@dataclass(frozen=True)
class Answer:
    """What the server does with one candidate."""

    status: int = 200
    challenge: bool = False
    body: bytes = b""
    error: Optional[Exception] = None
    fresh: bool = True
    tls_version: str = "TLSv1.2"

    def headers(self) -> httpx.Headers:
        """What a server sends with it (names in mixed case, as the flow must not care)."""
        headers = httpx.Headers({"Content-Length": str(len(self.body))})
        if self.challenge:
            headers["WWW-Authenticate"] = 'Bearer realm="https://auth.test/token"'
        return headers


def alert(name: str = "UNKNOWN_CA") -> Answer:
    return Answer(error=httpx.ConnectError(f"[SSL: TLSV1_ALERT_{name}] alert"))


PAGE = Answer(400, body=NGINX_PAGE)
TIMEOUT = Answer(error=httpx.ConnectTimeout("timed out"))


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four pairs, a b c d, in Docker's order."""
    ca = CA()
    certs_d = CertsD(tmp_path_factory.mktemp("flow"))
    host = certs_d.host("reg:5000")
    for name in "abcd":
        host.pair(name, ca.issue_client(name))
    return certs_d.path


def host(folder: Path, recheck: float = 60.0) -> HostState[Any]:
    state: HostState[Any] = HostState(
        ("reg:5000",), options(folder, "linux", None, None, DOCKER, 0.0, recheck), lambda c: None
    )
    state.refresh(0.0)
    return state


Script = dict[str, Union[Answer, Callable[[], Answer]]]


@dataclass
class Run:
    decision: Decision[Any]
    tried: list[str]
    closed: list[Any]
    waits: int


def drive(
    flow: Generator[Any, Any, Decision[Any]], script: Script, *, wait: Callable[[], bool] = bool
) -> Run:
    """A front end in a dozen lines: the response is the candidate's name."""
    tried: list[str] = []
    closed: list[Any] = []
    waits = 0
    reply: Any = None
    try:
        while True:
            step = flow.send(reply)
            if isinstance(step, Send):
                name = step.slot.candidate.name
                tried.append(name)
                reply = sent_for(name, script)
            elif isinstance(step, Read):
                reply = (script_body(script, step.response), step.response)
            elif isinstance(step, Close):
                closed.append(step.response)
                reply = None
            else:
                assert isinstance(step, Wait)
                waits += 1
                reply = wait()
    except StopIteration as end:
        return Run(end.value, tried, closed, waits)


def sent_for(name: str, script: Script) -> Sent[Any]:
    """What a try with ``name`` produces under ``script``."""
    entry = script[name]
    answer = entry() if callable(entry) else entry
    return sent_of(answer, f"{name}:{answer.status}")


def sent_of(answer: Answer, response: Any) -> Sent[Any]:
    """What a try answered with ``answer`` produces (``response``: the answer's object)."""
    if answer.error is not None:
        return Sent.of(error=answer.error, fresh=answer.fresh, tls_version=answer.tls_version)
    return Sent.of(
        response=response,
        status=answer.status,
        headers=answer.headers(),
        fresh=answer.fresh,
        responded=True,
        tls_version=answer.tls_version,
    )


def script_body(script: Script, response: str) -> bytes:
    entry = script[response.split(":")[0]]
    return (entry() if callable(entry) else entry).body


def exchange(
    state: HostState[Any],
    policy: RejectionPolicy = DOCKER,
    *,
    method: str = "GET",
    replayable: Callable[[], bool] = lambda: True,
    exhaustive: bool = False,
) -> Exchange[Any]:
    return Exchange(state, policy, method=method, replayable=replayable, exhaustive=exhaustive)


def run(state: HostState[Any], script: Script, **kwargs: Any) -> Run:
    return drive(exchange(state, **kwargs).flow(), script)


# --- the answer when every candidate is rejected -------------------------------------------------


@pytest.mark.parametrize(
    ("answers", "given_back"),
    [
        # An HTTP answer that is no certificate page beats a page, which beats a TLS failure.
        ({"a": alert(), "b": PAGE, "c": Answer(403), "d": alert()}, "c:403"),
        ({"a": Answer(502), "b": PAGE, "c": PAGE, "d": PAGE}, "a:502"),
        ({"a": alert(), "b": PAGE, "c": alert(), "d": alert()}, "b:400"),
        # Among equals, the first tried.
        ({"a": Answer(403), "b": Answer(401), "c": Answer(403), "d": PAGE}, "a:403"),
    ],
)
def test_the_most_useful_answer_is_given_back(
    folder: Path, answers: Script, given_back: str
) -> None:
    result = run(host(folder), answers)
    assert result.decision.response == given_back
    assert result.tried == ["a", "b", "c", "d"]
    # Every other answer was closed, none twice, the one given back not at all.
    others = [
        f"{n}:{a.status}" for n, a in answers.items() if isinstance(a, Answer) and not a.error
    ]
    assert sorted(result.closed) == sorted(o for o in others if o != given_back)
    chosen = result.decision.attempts[result.decision.chosen or 0]
    assert f"{chosen.candidate}:{chosen.status}" == given_back


def test_every_candidate_refused_in_tls_is_a_rejection_error(folder: Path) -> None:
    first = alert("UNKNOWN_CA")
    result = run(host(folder), {"a": first, "b": alert(), "c": alert(), "d": alert()})
    decision = result.decision
    assert (decision.rejected, decision.response, decision.chosen) == (True, None, 0)
    assert decision.error is first.error  # the first of equals: chained to the error raised
    assert [a.outcome for a in decision.attempts] == ["TLS alert unknown_ca"] * 4
    assert {a.layer for a in decision.attempts} == {"certificate"}


def test_failing_every_candidate_keeps_the_winner(folder: Path) -> None:
    state = host(folder)
    run(state, {"a": alert(), "b": Answer(200)})
    assert state.winner == "b"
    result = run(state, {"a": alert(), "b": alert(), "c": PAGE, "d": alert()})
    assert result.decision.response == "c:400"
    assert state.winner == "b"


# --- the three layers ----------------------------------------------------------------------------


@pytest.mark.parametrize("authorization", [False, True])
def test_a_challenge_is_returned_at_once(folder: Path, authorization: bool) -> None:
    """Token auth: 401 + WWW-Authenticate is never a verdict, whatever the request carried
    (the transport does not even look: an expired token gets the same answer)."""
    state = host(folder)
    challenge = Answer(401, challenge=True)
    result = run(state, {"a": challenge})
    assert (result.tried, result.decision.response) == (["a"], "a:401")
    [attempt] = result.decision.attempts
    assert (attempt.verdict, attempt.outcome) == ("accepted", "HTTP 401 (token challenge)")
    assert state.winner == "a"


def test_a_401_without_a_challenge_moves_on(folder: Path) -> None:
    result = run(host(folder), {"a": Answer(401), "b": Answer(200)})
    assert result.tried == ["a", "b"]
    assert result.decision.attempts[0].layer == "authorization"


def test_a_server_error_from_the_winner_is_the_servers_state(folder: Path) -> None:
    state = host(folder)
    run(state, {"a": PAGE, "b": Answer(200)})
    result = run(state, {"a": PAGE, "b": Answer(502)})
    assert (result.tried, result.decision.response) == (["b"], "b:502")
    [attempt] = result.decision.attempts
    assert (attempt.verdict, attempt.layer, attempt.status) == ("returned", None, 502)
    assert state.winner == "b"


def test_a_server_error_on_first_contact_moves_on_for_get_only(folder: Path) -> None:
    answers: Script = {"a": Answer(503), "b": PAGE, "c": PAGE, "d": PAGE}
    got = run(host(folder), answers)
    # Moved on, found nothing better: the 503 is the answer, and nobody became the winner.
    assert (got.tried, got.decision.response) == (["a", "b", "c", "d"], "a:503")
    post = run(host(folder), answers, method="POST")
    assert (post.tried, post.decision.response) == (["a"], "a:503")


def test_legacy_policy_moves_on_for_any_server_error(folder: Path) -> None:
    result = run(host(folder), {"a": Answer(500), "b": Answer(200)}, method="POST",
                 policy=DOCKER_LEGACY)  # fmt: skip
    assert result.tried == ["a", "b"]


@pytest.mark.parametrize("error", [TIMEOUT, Answer(error=ssl.SSLCertVerificationError("x"))])
def test_an_error_no_certificate_can_help_ends_the_exchange(folder: Path, error: Answer) -> None:
    state = host(folder)
    result = run(state, {"a": error})
    assert result.tried == ["a"]
    assert result.decision.error is error.error
    assert not result.decision.rejected
    assert result.decision.attempts[0].verdict == "error"
    assert state.winner is None


def test_a_tls13_refusal_reads_the_same_with_or_without_the_alert(folder: Path) -> None:
    """The alert of a TLS 1.3 refusal races the reset; either way one text, alert kept."""
    seen = Answer(
        error=httpx.ReadError("[SSL: SSLV3_ALERT_BAD_CERTIFICATE] alert"), tls_version="TLSv1.3"
    )
    lost = Answer(error=httpx.ReadError(""), tls_version="TLSv1.3")
    lost.error.__context__ = ConnectionResetError(104, "reset")  # type: ignore[union-attr]
    one = run(host(folder), {"a": seen, "b": Answer()}).decision.attempts[0]
    two = run(host(folder), {"a": lost, "b": Answer()}).decision.attempts[0]
    assert one.outcome == two.outcome == TLS13_REFUSAL
    assert (one.alert, two.alert) == ("bad_certificate", None)


# --- remembered rejections -----------------------------------------------------------------------


def test_a_certificate_rejection_is_skipped_until_recheck(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    monkeypatch.setattr("dockercerts.flow.time.monotonic", lambda: now[0])
    state = host(folder, recheck=60)
    denied: Script = {"a": PAGE, "b": alert(), "c": Answer(403), "d": Answer(403)}
    assert run(state, denied).tried == ["a", "b", "c", "d"]
    # a and b were refused at the certificate layer; c and d only denied (not remembered).
    assert run(state, denied).tried == ["c", "d"]
    now[0] += 59
    assert run(state, denied).tried == ["c", "d"]
    now[0] += 2
    assert run(state, denied).tried == ["a", "b", "c", "d"]


def test_when_every_candidate_was_rejected_all_are_tried_again(folder: Path) -> None:
    state = host(folder)
    refused: Script = {n: alert() for n in "abcd"}
    assert run(state, refused).tried == list("abcd")
    assert run(state, refused).tried == list("abcd")


def test_recheck_zero_remembers_nothing(folder: Path) -> None:
    state = host(folder, recheck=0)
    script: Script = {"a": PAGE, "b": Answer()}
    run(state, script)
    state.winner = None  # as after the winner's files changed
    state._rank()
    assert run(state, script).tried == ["a", "b"]


# --- replay ---------------------------------------------------------------------------------------


def test_a_body_already_sent_stops_the_exchange(folder: Path) -> None:
    result = run(host(folder), {"a": Answer(403), "b": Answer()}, replayable=lambda: False)
    assert (result.tried, result.decision.response) == (["a"], "a:403")
    assert "could not be replayed" in result.decision.note


# --- one search per cold host --------------------------------------------------------------------


def test_a_cold_host_is_searched_by_one_exchange_at_a_time(folder: Path) -> None:
    state = host(folder)
    script: Script = {"a": alert(), "b": alert(), "c": Answer(200), "d": Answer(200)}
    searcher = exchange(state).flow()
    assert isinstance(next(searcher), Send)  # holds the turn, trying a
    waiter = exchange(state).flow()
    step = next(waiter)
    assert isinstance(step, Wait)
    assert not step.turn.is_set()
    # The searcher finds c; the turn is handed back and the waiter goes straight to c.
    searcher_run = drive_from(searcher, script, first=Sent.of(error=script_error(script, "a")))
    assert searcher_run.tried == ["b", "c"]
    assert step.turn.is_set()
    assert drive_from(waiter, script, first=True).tried == ["c"]


def test_a_failed_search_hands_the_turn_over(folder: Path) -> None:
    state = host(folder)
    searcher = exchange(state).flow()
    next(searcher)
    waiter = exchange(state).flow()
    step = next(waiter)
    assert isinstance(step, Wait)
    searcher.close()  # cancelled mid-search (a front end closes the flow in ``finally``)
    assert step.turn.is_set()
    # No winner yet: the waiter searches itself, from the start.
    run_ = drive_from(waiter, {n: Answer() for n in "abcd"}, first=True)
    assert run_.tried == ["a"]


def test_waiting_too_long_goes_on_without_the_turn(folder: Path) -> None:
    state = host(folder)
    searcher = exchange(state).flow()
    next(searcher)
    waiter = exchange(state).flow()
    assert isinstance(next(waiter), Wait)
    result = drive_from(waiter, {n: Answer() for n in "abcd"}, first=False)
    assert result.tried == ["a"]
    searcher.close()


def test_waiting_threads_wake_when_the_winner_is_found(folder: Path) -> None:
    state = host(folder)
    searcher = exchange(state).flow()
    next(searcher)
    results: list[list[str]] = []

    def wait_for_it() -> None:
        flow = exchange(state).flow()
        step = next(flow)
        assert isinstance(step, Wait)
        results.append(
            drive_from(flow, {n: Answer() for n in "abcd"}, first=step.turn.wait(5)).tried
        )

    threads = [threading.Thread(target=wait_for_it) for _ in range(4)]
    for thread in threads:
        thread.start()
    drive_from(searcher, {"a": alert(), "b": Answer()}, first=Sent.of(error=alert().error))
    for thread in threads:
        thread.join(5)
    assert results == [["b"]] * 4


def script_error(script: Script, name: str) -> Exception:
    entry = script[name]
    answer = entry() if callable(entry) else entry
    assert answer.error is not None
    return answer.error


def drive_from(flow: Generator[Any, Any, Decision[Any]], script: Script, *, first: Any) -> Run:
    """Go on driving a flow that is waiting for the reply ``first``."""
    return drive(_prefixed(flow, first), script)


def _prefixed(flow: Generator[Any, Any, Any], first: Any) -> Generator[Any, Any, Any]:
    # The driver primes with send(None); the flow itself is sent ``first`` instead.
    reply = first
    while True:
        try:
            step = flow.send(reply)
        except StopIteration as end:
            return end.value
        reply = yield step


# --- the probe's mode decides exactly as the transport's -----------------------------------------

ANSWERS = st.sampled_from(
    [
        Answer(200),
        Answer(404),
        Answer(401, challenge=True),
        Answer(401),
        Answer(403),
        Answer(495),
        Answer(502),
        PAGE,
        alert(),
        Answer(error=httpx.ReadError(""), tls_version="TLSv1.3"),
        TIMEOUT,
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    answers=st.lists(ANSWERS, min_size=4, max_size=4),
    method=st.sampled_from(["GET", "POST"]),
    policy=st.sampled_from([DOCKER, DOCKER_LEGACY, RejectionPolicy.preset("tls-only")]),
)
def test_every_candidate_mode_decides_as_the_transport(
    folder: Path, answers: list[Answer], method: str, policy: RejectionPolicy
) -> None:
    """What ``dockercerts probe`` reports (every candidate tried) is what the transport does:
    the same answer or error, the same verdicts for the candidates both tried."""
    script: Script = dict(zip("abcd", answers))
    normal = run(host(folder), script, method=method, policy=policy)
    probe_state = host(folder)
    probe = run(probe_state, script, method=method, policy=policy, exhaustive=True)
    assert probe.tried == list("abcd")
    assert probe.decision.chosen == normal.decision.chosen
    assert probe.decision.response == normal.decision.response
    assert probe.decision.error is normal.decision.error
    assert probe.decision.rejected == normal.decision.rejected
    tried = len(normal.decision.attempts)
    assert probe.decision.attempts[:tried] == normal.decision.attempts
    # The probe changes nothing the transport remembers.
    assert probe_state.winner is None
    assert probe_state.order(0.0)[1] == ()
    # Nothing is left open but the answer given back.
    responses = [
        f"{n}:{a.status}" for n, a in script.items() if isinstance(a, Answer) and not a.error
    ]
    assert sorted(
        probe.closed + [probe.decision.response] * (probe.decision.response is not None)
    ) == sorted(responses)


@pytest.mark.parametrize("record", [Attempt, Decision])
def test_hand_written_constructors_match_the_fields(record: type) -> None:
    # Attempt and Decision write their __init__ by hand (one is made for every request); it
    # must take every field, in order, with the field's default, and set each one.
    fields = dataclasses.fields(record)
    parameters = list(inspect.signature(record).parameters.values())
    assert [p.name for p in parameters] == [f.name for f in fields]
    defaults = {p.name: p.default for p in parameters}
    for f in fields:
        if f.default is not dataclasses.MISSING:
            assert defaults[f.name] == f.default, f.name
    values = {f.name: object() for f in fields}
    made = record(**values)
    assert all(getattr(made, name) is value for name, value in values.items())
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.note = "changed"  # type: ignore[misc]


# --- the steady lane (the steady state without an exchange) -------------------------------------


def warm(folder: Path, winner: str) -> HostState[Any]:
    """A host whose winner is ``winner``, found by an exchange that rejected the ones before."""
    state = host(folder)
    script: Script = {name: Answer(403) for name in "abcd"}
    script[winner] = Answer(200)
    assert run(state, script).decision.response == f"{winner}:200"
    return state


def test_no_steady_lane_without_a_known_winner_or_with_a_remembered_rejection(
    folder: Path,
) -> None:
    assert steady(host(folder), "GET") is None  # cold: the search decides
    state = warm(folder, "a")
    lane = steady(state, "GET")
    assert lane is not None
    slot, target, owner = lane
    assert (slot.name, target, owner) == ("a", None, state)
    # A certificate rejection remembered: order() decides what is skipped.
    run(state, {"a": alert(), "b": Answer(200)})
    assert state.winner == "b"
    assert [slot.name for slot in state.order(0.0)[1]] == ["a"]  # skipped: order() decides
    assert steady(state, "GET") is None


def test_kept_alive_answers_share_one_record_and_a_fresh_connection_gets_its_own(
    folder: Path,
) -> None:
    """The steady state's records: one shared tuple per candidate and status for answers on a
    kept-alive connection (no ``elapsed``: nothing else differs between them), and the same
    record when an exchange accepts such an answer; a new connection's record is its own."""
    state = warm(folder, "a")
    lane = steady(state, "GET")
    assert lane is not None
    first = settle(lane, Sent.of("a:200", 200, fresh=False, elapsed=0.25))
    again = settle(lane, Sent.of("a:200", 200, fresh=False, elapsed=0.5))
    assert first is not None
    assert again is first
    assert first == (Attempt("a", "HTTP 200", "accepted", None, 200, False, None, None),)
    moved = settle(lane, Sent.of("a:301", 301, fresh=False))
    assert moved is not None
    assert (moved[0].status, moved[0].outcome) == (301, "HTTP 301")
    fresh = settle(lane, Sent.of("a:200", 200, fresh=True, tls_version="TLSv1.3", elapsed=0.25))
    assert fresh is not None
    assert fresh[0] == Attempt("a", "HTTP 200", "accepted", None, 200, True, "TLSv1.3", 0.25)
    # An exchange that accepts a kept-alive 200 from the same candidate records the same.
    alone = run(state, {"a": Answer(200, fresh=False)}).decision.attempts
    assert alone[0] is first[0]


def test_the_lane_is_kept_with_the_winner_and_the_remembered_rejections(folder: Path) -> None:
    """``HostState.lane`` (read by every request, never computed there) changes with what it
    depends on: a winner found, a certificate rejection remembered or forgotten."""
    state = host(folder)
    assert state.lane is None  # cold
    run(state, {"a": alert(), "b": Answer(200)})
    assert state.winner == "b"
    assert state.lane is None  # a's rejection is remembered: order() decides
    (a,) = [slot for slot in state.slots if slot.name == "a"]
    state.settle(a)  # accepted after all: its rejection is forgotten
    assert (state.winner, state.lane) == ("a", (a, None, state))
    lane = state.lane
    assert steady(state, "GET") is lane  # no tuple made per request
    state.remember(a, 0.0)
    assert state.lane is None
    state.settle(a)
    assert state.lane == (a, None, state)


def test_a_lane_taken_before_a_rejection_settles_its_slot_again(folder: Path) -> None:
    """``settle`` skips the host's bookkeeping only while the lane a request took is still
    the host's lane; taken before a rejection was remembered, its 200 forgets it."""
    state = host(folder)
    run(state, {"a": Answer(200)})
    lane = steady(state, "GET")
    assert lane is not None
    state.remember(lane[0], 0.0)  # another request saw a's rejection meanwhile
    assert steady(state, "GET") is None
    records = settle(lane, Sent.of("a:200", 200))
    assert records is not None
    assert records[0].verdict == "accepted"
    assert steady(state, "GET") == lane  # a is the settled winner again, nothing remembered


@settings(max_examples=300, deadline=None)
@given(
    answers=st.lists(ANSWERS, min_size=4, max_size=4),
    method=st.sampled_from(["GET", "POST"]),
    winner=st.sampled_from("abcd"),
)
def test_the_steady_lane_decides_as_the_flow(
    folder: Path, answers: list[Answer], method: str, winner: str
) -> None:
    """Sending the winner's try in the steady lane, then handing its answer to the flow when
    it must be judged, ends as the flow alone would: same answer or error, records, tries
    and memory."""
    script: Script = dict(zip("abcd", answers))
    alone_state, lane_state = warm(folder, winner), warm(folder, winner)
    alone = run(alone_state, script, method=method)

    lane = steady(lane_state, method)
    assert lane is not None
    slot = lane[0]
    assert slot.name == winner
    sent = sent_for(winner, script)
    records = settle(lane, sent)
    if records is None:
        rest = drive(exchange(lane_state, method=method).flow((slot, sent)), script)
        decision, tried, closed = rest.decision, [winner, *rest.tried], rest.closed
    else:
        decision = Decision(sent.response, None, False, records, "", 0)
        tried, closed = [winner], []
        assert script[winner].status < 400
        assert script[winner].error is None
    assert tried == alone.tried
    assert closed == alone.closed
    assert decision.response == alone.decision.response
    assert decision.error is alone.decision.error
    assert (decision.rejected, decision.chosen, decision.note) == (
        alone.decision.rejected,
        alone.decision.chosen,
        alone.decision.note,
    )
    assert decision.attempts == alone.decision.attempts
    assert lane_state.winner == alone_state.winner
    assert names(lane_state.order(1.0)) == names(alone_state.order(1.0))


def names(order: tuple[tuple[Any, ...], tuple[Any, ...]]) -> tuple[list[str], list[str]]:
    tried, skipped = order
    return [slot.name for slot in tried], [slot.name for slot in skipped]


def test_a_due_look_at_the_folder_is_claimed_by_one_caller(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first request to find its folder due for a look takes it; the next ones use the
    last good load meanwhile (for at most ``refresh`` seconds) instead of waiting for it;
    the taker's look reads the folder and makes the state current again."""
    looks: list[Path] = []
    unchanged = Layout.unchanged

    def counted(layout: Layout, directory: Path, current: Any) -> bool:
        looks.append(directory)
        return unchanged(layout, directory, current)

    monkeypatch.setattr(Layout, "unchanged", counted)
    refresh = 0.05
    hosts: Hosts[Any] = Hosts(
        options(folder, "linux", None, None, DOCKER, refresh, 60.0), lambda url: lambda c: None, 4
    )
    url = httpx.URL("https://reg:5000/v2/")
    assert hosts.current(url) is None  # never loaded: the caller loads it
    state = hosts.get(url)
    assert hosts.current(url) is state
    time.sleep(refresh + 0.01)
    assert hosts.current(url) is None  # due: this caller takes the look
    assert hosts.current(url) is state  # the next one uses the last good load
    assert looks == []
    assert hosts.look(url) is state
    assert len(looks) == 1
    assert hosts.current(url) is state
    assert hosts.get(url) is state
    assert len(looks) == 1
