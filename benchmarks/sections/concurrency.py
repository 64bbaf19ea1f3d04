"""2b. Cold concurrency: N first requests at once on a new transport (N threads sync, N tasks
async; HTTP/1.1), the right pair k-th; handshakes counted at the server, worst of the rounds."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Optional, Union

import httpx

import dockercerts

from ..material import write_host
from ..measure import log
from ..section import Results, Row, Section
from ..server import ServerSpec, served
from ..transports import aclient, client

N = 32
KS = (1, 2, 3, 5)

Outcome = Union[int, str]  # a status code, or the error's type and message


@dataclasses.dataclass(frozen=True)
class Knobs:
    rounds: int  # the worst of the rounds is the figure


@dataclasses.dataclass(frozen=True)
class Burst:
    """What N concurrent first requests got: each one's status (or error), and the winner."""

    outcomes: list[Outcome]
    winner: Optional[str]


@dataclasses.dataclass(frozen=True)
class Trial:
    handshakes: int
    completed: int
    failed: int
    connections: int
    ok_responses: int
    other: tuple[str, ...]
    winner: Optional[str]


@dataclasses.dataclass(frozen=True)
class Case:
    mode: str
    k: int
    n: int
    bound: int
    naive: int
    trials: tuple[Trial, ...]
    worst: Trial
    ok: bool


@dataclasses.dataclass(frozen=True)
class Concurrency:
    n: int
    rounds: int
    cases: tuple[Case, ...]


def _outcome(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"


def sync_burst(root: Path, url: str, n: int) -> Burst:
    """``n`` threads send their first request together through one new transport."""
    transport = dockercerts.Transport(root=root)
    start = threading.Barrier(n, timeout=30)
    with client(transport) as c:

        def one() -> Outcome:
            start.wait()
            try:
                return c.get(url).status_code
            except httpx.HTTPError as exc:
                return _outcome(exc)

        with ThreadPoolExecutor(n) as pool:
            outcomes = [f.result() for f in [pool.submit(one) for _ in range(n)]]
        return Burst(outcomes, transport.winner(url))


def async_burst(root: Path, url: str, n: int) -> Burst:
    """``n`` tasks send their first request together through one new transport."""

    async def amain() -> Burst:
        transport = dockercerts.AsyncTransport(root=root)
        async with aclient(transport) as c:

            async def one() -> Outcome:
                try:
                    return (await c.get(url)).status_code
                except httpx.HTTPError as exc:
                    return _outcome(exc)

            outcomes = await asyncio.gather(*(one() for _ in range(n)))
            return Burst(list(outcomes), transport.winner(url))

    return asyncio.run(amain())


def measure(knobs: Knobs) -> Concurrency:
    """Handshakes at the server for N concurrent first requests (HTTP/1.1) with the right
    pair k-th: one request looks for the winner while the others wait, so at most
    (k - 1) refused + N accepted handshakes, where N x k would be paid without the wait."""
    n, rounds = N, knobs.rounds
    bursts: dict[str, Callable[[Path, str, int], Burst]] = {
        "sync": sync_burst,
        "async": async_burst,
    }
    cases = []
    spec = ServerSpec(wrong=max(KS) - 1, max_workers=n + 16)
    with served(spec) as (srv, tmp):
        host = f"127.0.0.1:{srv.port}"
        url = f"https://{host}/v2/"
        for k in KS:
            root = tmp / f"certs.d-{k}"
            write_host(root, host, srv.pki, pairs=max(KS), right_at=k)
            for mode, burst in bursts.items():
                trials = []
                for _ in range(rounds):
                    srv.take()
                    result = burst(root, url, n)
                    stats = srv.settled()
                    srv.take()
                    trials.append(
                        Trial(
                            handshakes=stats.handshakes + stats.failed,
                            completed=stats.handshakes,
                            failed=stats.failed,
                            connections=stats.connections,
                            ok_responses=sum(o == 200 for o in result.outcomes),
                            other=tuple(sorted({str(o) for o in result.outcomes if o != 200})),
                            winner=result.winner,
                        )
                    )
                bound = n + k - 1
                case = Case(
                    mode=mode,
                    k=k,
                    n=n,
                    bound=bound,
                    naive=n * k,
                    trials=tuple(trials),
                    worst=max(trials, key=lambda t: t.handshakes),
                    ok=all(
                        t.handshakes <= bound and t.ok_responses == n and t.winner == f"p{k:02d}"
                        for t in trials
                    ),
                )
                log(
                    f"  concurrent: {mode} k={k}: handshakes "
                    f"{[t.handshakes for t in trials]} (bound {bound}), "
                    f"200s {[t.ok_responses for t in trials]} of {n}"
                )
                cases.append(case)
    return Concurrency(n=n, rounds=rounds, cases=tuple(cases))


def _row(case: Case, rounds: int) -> Row:
    worst, n, k = case.worst, case.n, case.k
    responses = f"{worst.ok_responses} of {n} answered 200"
    if worst.other:
        responses += f"; other outcomes: {', '.join(worst.other)}"
    handshakes = [t.handshakes for t in case.trials]
    return Row(
        f"2b. cold concurrency, {n} first requests at once ({case.mode}, HTTP/1.1), "
        f"right pair {k}-th: handshakes at the server",
        f"{worst.handshakes} ({worst.completed} completed + {worst.failed} failed), "
        f"worst of {rounds} round{'s' if rounds != 1 else ''}",
        f"<= N + k - 1 = {case.bound}",
        "met" if case.ok else "FAILED",
        f"rounds {' / '.join(map(str, handshakes))}; {responses}; N x k would be {case.naive}",
    )


def rows(results: Results) -> list[Row]:
    concurrency = results.one(Concurrency)
    if concurrency is None:
        return []
    return [_row(case, concurrency.rounds) for case in concurrency.cases]


def details(results: Results) -> list[str]:
    concurrency = results.one(Concurrency)
    if concurrency is None:
        return []
    n, rounds = concurrency.n, concurrency.rounds
    out = [
        f"### 2b. Cold concurrency: {n} first requests at once on a new transport",
        "",
        f"{n} threads (sync, one `httpx.Client`) or {n} tasks (async, one `AsyncClient`) send "
        'their first request together, HTTP/1.1, to an `MTLSServer(reject="tls")`; certs.d '
        f"holds 1 CA and {max(KS)} pairs, the right one k-th. One request looks "
        "for the winner while the others wait for it, then they all go to "
        f"the winner, reusing a connection when one is free: at most (k - 1) refused + {n} "
        f"accepted handshakes. {rounds} round{'s' if rounds != 1 else ''} per case, each on a "
        "new transport.",
        "",
        "| mode | right pair | handshakes per round (completed + failed) | connections | "
        "200 answers | winner | bound N + k - 1 | N x k |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for case in concurrency.cases:
        trials = case.trials
        out.append(
            f"| {case.mode} | {case.k}-th | "
            + " / ".join(f"{t.handshakes} ({t.completed} + {t.failed})" for t in trials)
            + f" | {' / '.join(str(t.connections) for t in trials)} | "
            f"{' / '.join(str(t.ok_responses) for t in trials)} | "
            f"{' / '.join(str(t.winner) for t in trials)} | {case.bound} | "
            f"{case.naive} |"
        )
    out.append("")
    return out


SECTION = Section(
    name="concurrent",
    number="2b",
    result=Concurrency,
    full=Knobs(rounds=3),
    quick=Knobs(rounds=1),
    measure=measure,
    rows=rows,
    details=details,
)
