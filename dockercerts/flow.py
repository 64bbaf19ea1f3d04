"""One exchange with a registry host, decided in one place.

An exchange sends one request with the host's candidates until one is not rejected. Every
decision it takes lives here, in :meth:`Exchange.flow`: a generator that yields what to do
and is sent what happened, as ``httpx.Auth.auth_flow`` is one generator driven by a sync
and an async client. The front ends (:class:`~dockercerts.Transport`,
:class:`~dockercerts.AsyncTransport`, ``dockercerts probe``) only send, read, wait and close.

The steps, and what the driver sends back:

=========================  =====================================================================
``Wait(turn, timeout)``    another request is looking for this host's winner: wait for it
                           (``turn.wait(timeout)``); send back ``None``
``Send(slot)``             send the request with ``slot``'s candidate; send back :class:`Sent`
``Read(response, limit)``  read the (small) body of that answer and close it; send back
                           ``(body, response)``, the response now holding the body in memory
``Close(response)``        an answer that will not be given back: close it; send back ``None``
``Learn()``                read the CA names the host's server asks for
                           (:func:`~dockercerts.canames.read_ca_names`); send back their DER
                           bytes, ``()`` when it lists none or they cannot be read
=========================  =====================================================================

It returns a :class:`Decision`: the response to give back, the error to raise, or that every
candidate was refused in TLS; and the :class:`~dockercerts.errors.Attempt` records.

**The steady lane.** Most requests go to a host whose winner is known, and are answered 2xx
or 3xx. For them a front end asks :func:`steady` where to send, sends, and hands the answer to
:func:`settle`, which accepts it and gives the records: no :class:`Exchange` and no generator,
which cost more than the rest of such a request. Any other answer goes on in
``Exchange(..., begin=<the lane's endpoint>).flow(first=(slot, sent))``, judged as if the flow
had sent it itself; ``tests/test_flow.py`` checks that both roads end alike for every answer.

What it decides:

* **Order.** The host's winner first, then Docker's order, less the candidates refused at the
  certificate layer within ``recheck`` seconds. With ``order="ca-names"``, a search first
  learns the server's CA names (``Learn``), once per host and folder content, and the pairs
  they list come first. While a host has no winner, one request at a
  time looks for it; the others wait for its result (bounded by their own pool timeout), so
  N cold requests cost N + k - 1 handshakes, not N x k.
* **Verdicts** (:class:`~dockercerts.rejection.RejectionPolicy`, three layers). A certificate
  or authorization rejection moves on; a server error moves on at first contact only: from
  the known winner it is the server's state, returned as is. A 401 challenge is returned.
* **Replay.** After a rejection the request is sent again only if its body can be.
* **The answer** when every candidate is rejected: an HTTP answer that is no certificate page
  (502, 403, 401) over a certificate page (nginx's 400, 495, 496) over a TLS failure; among
  equals, the first tried. Failing every candidate never demotes the winner.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Optional, TypeVar, Union

from ._hosts import HostState, Lane, Routes
from ._slots import Slot
from ._steps import Close, Decision, Learn, Read, Send, Sent, Step, Wait
from .errors import Attempt, NoEndpointError, Outcome
from .rejection import JUDGED_FROM, RejectionPolicy, Verdict, alert_name
from .routing import Target, operation, walk_order
from .routing import rank as endpoint_rank

__all__ = [
    "Close",
    "Decision",
    "Exchange",
    "Lane",
    "Learn",
    "Read",
    "Send",
    "Sent",
    "Step",
    "Wait",
    "record",
    "settle",
    "steady",
    "unjudged",
]

log = logging.getLogger("dockercerts")

R = TypeVar("R")  # the front end's response object; the flow only holds it

#: nginx's 400 page is ~250 bytes; a larger body is never a certificate page and never buffered.
PEEK_LIMIT = 64 * 1024

_BODY_NOTE = "the request body was a stream already sent, so it could not be replayed"

# How useful an answer is when every candidate was rejected (higher is better).
_TLS, _PAGE, _ANSWER = 0, 1, 2


@dataclass
class _Best(Generic[R]):
    rank: int
    index: int
    response: Optional[R] = None
    error: Optional[Exception] = field(default=None)


def steady(host: HostState[Any], method: str, path: Optional[str] = None) -> Optional[Lane]:
    """The steady lane: where to send a request at once, before any :class:`Exchange` is
    made. That is the known winner of the host (routed, of the endpoint the operation's walk
    starts from) when nothing else could come first (:attr:`HostState.lane`); ``None``:
    make the Exchange and drive its :meth:`~Exchange.flow` from the start.

    ``path`` is the request's path when the front end routes (it aims the request at the
    lane's endpoint); ``None``: the request goes where its URL says. A driver sends, then
    calls :func:`settle` with what came back. This is the flow's first step taken with
    neither an Exchange nor a generator, which together cost more than the rest of a steady
    request's decisions."""
    routes = host.routes
    if routes is None or path is None:
        return host.lane
    route = _route(routes, operation(method, path))
    if not route:
        return None
    target, state = route[0]
    lane = state.lane
    return None if lane is None else (lane[0], target, state)


def settle(lane: Lane, sent: Sent[Any]) -> Optional[tuple[Attempt, ...]]:
    """The records of the exchange when the lane's answer ends it: an answer no verdict
    looks at (:func:`unjudged`), accepted and given back as it is. ``None``: make the
    Exchange (``begin=`` the lane's endpoint) and drive ``flow(first=(slot, sent))``, which
    judges that answer as if it had sent it itself. Routed, the walk goes on after a status
    > 399, so only a 2xx or 3xx ends it here: the same set of answers.

    A slot that is still its host's lane is the host's settled winner with nothing
    remembered against it (see :attr:`HostState.lane`): settling it again would change
    nothing, so every steady request is spared that call."""
    if not unjudged(sent):
        return None
    slot, target, state = lane
    current = state.lane
    if current is None or current[0] is not slot:
        state.settle(slot)
    if sent.fresh:
        return (record(slot, sent, None, False, target),)
    return _shared_records(slot, sent.status, target)


def _route(routes: Routes[Any], op: str) -> tuple[tuple[Target, HostState[Any]], ...]:
    """The endpoints for ``op``, in walk order: from the one that answered last (sticky)."""
    route = routes.by_op[op]
    start = routes.start(op, time.monotonic()) if route and routes.sticky else None
    return route if start is None else tuple(route[i] for i in walk_order(route, start))


def unjudged(sent: Sent[Any]) -> bool:
    """An answer no verdict looks at (a 2xx or 3xx): the steady state's answer."""
    # RejectionPolicy.judges()'s rule (JUDGED_FROM), without a call on every request.
    return sent.error is None and sent.status < JUDGED_FROM


def record(
    slot: Slot[Any],
    sent: Sent[Any],
    verdict: Optional[Verdict],
    returned: bool,
    target: Optional[Target],
) -> Attempt:
    """The record of one try (``returned``: an answer with a verdict, given back anyway).

    An accepted 2xx or 3xx on a kept-alive connection, the steady state's answer, gets the
    record every such answer of ``slot`` shares (:func:`_shared_records`): it has no ``elapsed``."""
    error = sent.error
    if verdict is None and not (returned or sent.fresh) and unjudged(sent):
        return _shared_records(slot, sent.status, target)[0]
    kind: Outcome
    if error is not None:
        outcome = verdict.reason if verdict is not None else _describe(error)
        kind = "error" if verdict is None else "rejected"
    else:
        outcome = verdict.reason if verdict is not None else f"HTTP {sent.status}"
        kind = "accepted" if verdict is None else "rejected"
        if verdict is None and sent.status == 401 and sent.challenge:
            outcome += " (token challenge)"
    if returned:
        kind = "returned"
    return Attempt(  # positional: this runs for every request
        slot.name,
        outcome,
        kind,
        None if verdict is None or returned else verdict.layer,
        sent.status if error is None else None,
        sent.fresh,
        sent.tls_version,
        sent.elapsed,
        None if error is None else alert_name(error),
        None if target is None else target.name,
    )


def _shared_records(slot: Slot[Any], status: int, target: Optional[Target]) -> tuple[Attempt, ...]:
    """The records of an exchange whose one try was accepted on a kept-alive connection with
    ``status``: made once per candidate, status and endpoint and shared by every such
    request. One object a request would cost more than the rest of the steady lane's
    bookkeeping, and only ``elapsed`` would differ (httpx's ``response.elapsed`` times the
    request)."""
    endpoint = None if target is None else target.name
    key: Union[int, tuple[int, str]] = status if endpoint is None else (status, endpoint)
    records: Optional[tuple[Attempt, ...]] = slot.shared_records.get(key)
    if records is None:
        records = (
            Attempt(
                slot.name,
                f"HTTP {status}",
                "accepted",
                None,
                status,
                False,
                None,
                None,
                None,
                endpoint,
            ),
        )
        slot.shared_records[key] = records
    return records


class Exchange(Generic[R]):
    """The decisions of one request to ``host``: drive :meth:`flow` (see the module docstring).

    ``replayable()`` says whether the request can be sent again now; ``wait_timeout`` bounds
    how long the request waits for another one that is looking for the winner. ``exhaustive``
    (the probe) tries every candidate in Docker's order, records each verdict and decides as
    the transport would, but changes nothing in ``host``.
    """

    __slots__ = (
        "_challenged",
        "_held",
        "_kept",
        "_op",
        "_route",
        "_routes",
        "attempts",
        "exhaustive",
        "host",
        "method",
        "policy",
        "replayable",
        "target",
        "wait_timeout",
    )

    def __init__(
        self,
        host: HostState[Any],
        policy: RejectionPolicy,
        *,
        method: str,
        replayable: Callable[[], bool],
        wait_timeout: Optional[float] = None,
        exhaustive: bool = False,
        path: Optional[str] = None,
        begin: Optional[Target] = None,
    ) -> None:
        self.host = host
        self.policy = policy
        self.method = method
        self.replayable = replayable
        self.wait_timeout = wait_timeout
        self.exhaustive = exhaustive
        self.attempts: list[Attempt] = []
        # The answer kept as the best so far by the certificate tries (``_held``) and by the
        # endpoint walk (``_kept``): a driver interrupted mid-flow closes them (holding()).
        self._held: Optional[R] = None
        self._kept: Optional[R] = None
        self._challenged = False
        #: The endpoint the current try goes to (containerd routing), ``None``: the request's
        #: own URL.
        self.target: Optional[Target] = None
        # Routing is on when the front end gives the request's ``path`` (it applies
        # ``Send.target``) and ``host``'s folder routes (``host.routes``).
        routes = host.routes if path is not None else None
        self._routes: Optional[Routes[Any]] = routes
        if routes is not None:
            assert path is not None
            self._op = operation(method, path)
            if begin is None:
                self._route = _route(routes, self._op)
            else:  # from the lane's endpoint, whatever the sticky memory says by now
                route = routes.by_op[self._op]
                self._route = tuple(route[i] for i in walk_order(route, begin.name))
            if self._route:
                self.target, self.host = self._route[0]

    def holding(self) -> tuple[R, ...]:
        """The answers kept so far, for a driver interrupted mid-flow to close."""
        if self._held is None and self._kept is None:  # every request ends here
            return ()
        return tuple(r for r in (self._held, self._kept) if r is not None)

    # --- the whole exchange ---------------------------------------------------------------------

    def flow(
        self, first: Optional[tuple[Slot[Any], Sent[R]]] = None
    ) -> Generator[Step, Any, Decision[R]]:
        """The exchange, step by step (see the module docstring). ``first``: the steady lane's
        try, already made: the first of the tries to judge."""
        if self._routes is not None:
            return (yield from self._walk(first))
        return (yield from self._host_flow(first))

    def _walk(
        self, first: Optional[tuple[Slot[Any], Sent[R]]]
    ) -> Generator[Step, Any, Decision[R]]:
        """containerd's walk over the operation's endpoints (:mod:`dockercerts.routing`):
        each endpoint runs the certificate tries of its own host state; an answer < 400, or
        a 401 challenge (the token's request goes back there), ends the walk and is
        remembered for the operation; a transport error, a 404 or another status > 399
        moves on; when all fail, the best by :func:`~dockercerts.routing.rank` (the first
        among equals) is given back."""
        if not self._route:
            error = NoEndpointError(self.host.directory, self._op)
            return Decision(error=error, directory=self.host.directory)
        best: Optional[tuple[int, Decision[R]]] = None
        note = ""
        for number, (aim, state) in enumerate(self._route):
            if best is not None and not self.replayable():
                note = _BODY_NOTE
                log.warning("%s: %s", self.host.names[0], note)
                break
            self.host, self.target, self._challenged = state, aim, False
            decision = yield from self._host_flow(first if number == 0 else None)
            chosen = None if decision.chosen is None else self.attempts[decision.chosen]
            status = None if decision.response is None or chosen is None else chosen.status
            if status is not None and (status < 400 or (status == 401 and self._challenged)):
                if best is not None and best[1].response is not None:
                    self._kept = None
                    yield Close(best[1].response)
                if not self.exhaustive:
                    assert self._routes is not None
                    natural = self._routes.by_op[self._op][0][0]
                    self._routes.stick(
                        self._op, None if aim is natural else aim.name, time.monotonic()
                    )
                return decision
            page = chosen is not None and chosen.layer == "certificate"
            order = endpoint_rank(status, page)
            log.info(
                "%s: endpoint %s failed (%s)%s",
                self.host.names[0],
                aim.name,
                "no answer" if status is None else f"HTTP {status}",
                "" if number == len(self._route) - 1 else "; trying the next endpoint",
            )
            if best is None or order > best[0]:
                if best is not None and best[1].response is not None:
                    self._kept = None
                    yield Close(best[1].response)
                best = (order, decision)
                self._kept = decision.response
            elif decision.response is not None:
                yield Close(decision.response)
        self._kept = None
        assert best is not None, "a walk tries at least one endpoint"
        given = best[1]
        return Decision(
            given.response,
            given.error,
            given.rejected,
            tuple(self.attempts),
            note or given.note,
            given.chosen,
            given.directory,
        )

    def _host_flow(
        self, first: Optional[tuple[Slot[Any], Sent[R]]]
    ) -> Generator[Step, Any, Decision[R]]:
        """The certificate tries of one host (or one endpoint of a routed folder)."""
        host, turn = self.host, None
        try:
            if self.exhaustive:
                slots = host.slots
            else:
                # Take the turn to look for the winner, or wait for who has it. A known winner
                # (the steady state) needs no turn. Waiting longer than ``wait_timeout`` goes
                # on without one: the wait saves handshakes, it never fails a request.
                while host.winner is None:
                    turn, theirs = host.take_turn()
                    if theirs is None or (yield Wait(theirs, self.wait_timeout)) is False:
                        break
                if turn is not None and host.learn_pending:
                    host.learned((yield Learn(self.target)))
                slots, skipped = host.order(time.monotonic())
                for slot in skipped:
                    log.debug(
                        "%s: skipping %s, rejected less than recheck seconds ago",
                        host.names[0],
                        slot.name,
                    )
            if first is not None:
                slots = (first[0], *(slot for slot in slots if slot is not first[0]))
            return (yield from self._try(slots, first))
        finally:
            if turn is not None:
                host.end_turn(turn)

    def _try(
        self, slots: tuple[Slot[Any], ...], first: Optional[tuple[Slot[Any], Sent[R]]]
    ) -> Generator[Step, Any, Decision[R]]:
        # ``chosen`` is the index in ``attempts`` of what is given back (the answer or the error
        # of a try with no verdict), ``None`` while every try so far was rejected.
        chosen: Optional[int] = None
        answer: Optional[R] = None
        error: Optional[Exception] = None
        best: Optional[_Best[R]] = None
        note = ""
        last = len(slots)
        for number, slot in enumerate(slots, 1):
            if chosen is not None and not self.exhaustive:
                break
            if best is not None and not self.replayable():
                note = _BODY_NOTE
                log.warning("%s: %s", self.host.names[0], note)
                break
            sent: Sent[R]
            if first is not None:
                sent, first = first[1], None
            else:
                sent = yield Send(slot, self.target)
            response = sent.response
            if unjudged(sent):
                verdict = None
            else:
                body = b""
                if response is not None and self.policy.needs_body(sent.status):
                    length = sent.length
                    if length is not None and length <= PEEK_LIMIT:
                        body, response = yield Read(response, PEEK_LIMIT)
                verdict = self._judge(sent, body)
            if chosen is not None:  # exhaustive: record what the others would get
                self._record(slot, sent, verdict, settled=False)
                if response is not None:
                    yield Close(response)
                continue
            if verdict is None:
                chosen = len(self.attempts)
                answer, error = response, sent.error
                self._record(slot, sent, None, settled=sent.error is None)
            elif verdict.layer == "server" and self.host.is_winner(slot):
                chosen = len(self.attempts)
                answer = response
                self._record(slot, sent, verdict, settled=False, returned=True)
            else:
                self._record(slot, sent, verdict, settled=False)
                self._rejected(slot, verdict, number == last)
                rank = (
                    _TLS
                    if response is None
                    else _PAGE
                    if verdict.layer == "certificate"
                    else _ANSWER
                )
                if best is None or rank > best.rank:
                    if best is not None and best.response is not None:
                        self._held = None
                        yield Close(best.response)
                    best = _Best(rank, len(self.attempts) - 1, response, sent.error)
                    self._held = response
                elif response is not None:
                    yield Close(response)
        self._held = None
        if chosen is not None:
            if best is not None and best.response is not None:
                yield Close(best.response)
            return self._given(answer, error, chosen)
        assert best is not None, "an exchange tries at least one candidate"
        return Decision(
            response=best.response,
            error=best.error if best.rank == _TLS else None,
            rejected=best.rank == _TLS,
            attempts=tuple(self.attempts),
            note=note,
            chosen=best.index,
            directory=self.host.directory,
        )

    def _given(self, answer: Optional[R], error: Optional[Exception], chosen: int) -> Decision[R]:
        """Give back the answer, or raise the error, of the try recorded at ``chosen``."""
        return Decision(answer, error, False, tuple(self.attempts), "", chosen, self.host.directory)

    def _judge(self, sent: Sent[R], body: bytes) -> Optional[Verdict]:
        if sent.error is not None:
            return self.policy.judge_error(
                sent.error,
                fresh=sent.fresh,
                responded=sent.responded,
                tls_version=sent.tls_version,
            )
        return self.policy.judge_answer(
            self.method, sent.status, challenge=sent.challenge, body=body
        )

    def _record(
        self,
        slot: Slot[Any],
        sent: Sent[R],
        verdict: Optional[Verdict],
        *,
        settled: bool,
        returned: bool = False,
    ) -> None:
        if verdict is None and sent.error is None and sent.status == 401 and sent.challenge:
            self._challenged = True  # routed: the token's request goes back to this endpoint
        self.attempts.append(record(slot, sent, verdict, returned, self.target))
        if settled and not self.exhaustive:
            self.host.settle(slot)

    def _rejected(self, slot: Slot[Any], verdict: Verdict, last: bool) -> None:
        log.info(
            "%s: client certificate %s rejected (%s)%s",
            self.host.names[0],
            slot.name or "(none)",
            verdict.reason,
            "" if last else "; trying the next one",
        )
        if verdict.layer == "certificate" and not self.exhaustive:
            self.host.remember(slot, time.monotonic())


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
