"""2c. Handshakes per denied request with a known winner: the server answers the winner 403
after a first 200, the other pair is refused in TLS; sync and async."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Callable, Optional

import httpx

import dockercerts

from ..material import write_host
from ..measure import log
from ..section import Results, Row, Section
from ..server import Counters, ServerProcess, ServerSpec, served
from ..transports import aclient, client


@dataclasses.dataclass(frozen=True)
class Knobs:
    requests: int


@dataclasses.dataclass(frozen=True)
class Case:
    mode: str
    first_status: int
    first_handshakes: int
    first_failed: int
    winner: Optional[str]
    winner_after: Optional[str]
    requests: int
    statuses: dict[str, int]
    new_handshakes: int
    new_connections: int
    per_request: float
    last_attempts: tuple[str, ...]
    ok: bool


@dataclasses.dataclass(frozen=True)
class Denied:
    requests: int
    cases: tuple[Case, ...]


def sync_denied(mode: str, url: str, root: Path, srv: ServerProcess, count: int) -> Case:
    """A first request that settles the winner, then ``count`` that the server answers 403."""
    transport = dockercerts.Transport(root=root)
    with client(transport) as c:
        first = c.get(url).status_code
        winner = transport.winner(url)
        before = srv.settled()
        srv.take()
        srv.command("refuse")
        responses = [c.get(url) for _ in range(count)]
        after = srv.settled()
        return _case(mode, first, winner, before, after, responses, transport.winner(url))


def async_denied(mode: str, url: str, root: Path, srv: ServerProcess, count: int) -> Case:
    async def amain() -> Case:
        transport = dockercerts.AsyncTransport(root=root)
        async with aclient(transport) as c:
            first = (await c.get(url)).status_code
            winner = transport.winner(url)
            before = srv.settled()
            srv.take()
            srv.command("refuse")
            responses = [await c.get(url) for _ in range(count)]
            after = srv.settled()
            return _case(mode, first, winner, before, after, responses, transport.winner(url))

    return asyncio.run(amain())


def _case(
    mode: str,
    first: int,
    winner: Optional[str],
    before: Counters,
    after: Counters,
    responses: list[httpx.Response],
    winner_after: Optional[str],
) -> Case:
    statuses: dict[str, int] = {}
    for response in responses:
        statuses[str(response.status_code)] = statuses.get(str(response.status_code), 0) + 1
    attempts = responses[-1].extensions.get("dockercerts.attempts", ()) if responses else ()
    first_handshakes = before.handshakes + before.failed
    new = after.handshakes + after.failed
    return Case(
        mode=mode,
        first_status=first,
        first_handshakes=first_handshakes,
        first_failed=before.failed,
        winner=winner,
        winner_after=winner_after,
        requests=len(responses),
        statuses=statuses,
        new_handshakes=new,
        new_connections=after.connections,
        per_request=new / max(1, len(responses)),
        last_attempts=tuple(f"{a.describe()} ({a.verdict})" for a in attempts),
        ok=(
            first == 200
            and first_handshakes == 2
            and winner == "p02"
            and statuses == {"403": len(responses)}
            and new == 0
            and winner_after == "p02"
        ),
    )


def measure(knobs: Knobs) -> Denied:
    """Handshakes per request once the winner is known and the server starts answering it
    403 (an authorization rule): the winner's 403 moves on to the other pair, which was
    refused in TLS by the first request and is skipped for ``recheck`` seconds."""
    count = knobs.requests
    cases = []
    spec = ServerSpec(reject="status", refusable=True, wrong=1)
    with served(spec) as (srv, tmp):
        host = f"127.0.0.1:{srv.port}"
        url = f"https://{host}/v2/"
        runs: dict[str, Callable[[str, str, Path, ServerProcess, int], Case]] = {
            "sync": sync_denied,
            "async": async_denied,
        }
        for mode, run in runs.items():
            # The wrong pair first: the first request is refused in TLS with it, then
            # accepted with the right pair, which becomes the winner.
            root = tmp / f"certs.d-{mode}"
            write_host(root, host, srv.pki, pairs=2, right_at=2)
            srv.command("allow")
            srv.take()
            case = run(mode, url, root, srv, count)
            srv.take()
            log(
                f"  denied: {mode}: first request {case.first_status} with "
                f"{case.first_handshakes} handshakes (winner {case.winner}); next "
                f"{count}: {case.statuses}, {case.new_handshakes} new handshakes"
            )
            cases.append(case)
    return Denied(requests=count, cases=tuple(cases))


def _row(case: Case) -> Row:
    count = case.requests
    statuses = ", ".join(f"{n} x {s}" for s, n in sorted(case.statuses.items()))
    return Row(
        f"2c. handshakes per denied request, known winner ({case.mode}): server answers "
        "the winner 403, the other pair refused in TLS",
        f"{case.per_request:.2f} ({case.new_handshakes} new handshakes in {count} requests)",
        "0",
        "met" if case.ok else "FAILED",
        f"first request {case.first_status} after {case.first_handshakes} handshakes "
        f"(winner {case.winner}, still {case.winner_after} after); next {count}: "
        f"{statuses}",
    )


def rows(results: Results) -> list[Row]:
    denied = results.one(Denied)
    return [] if denied is None else [_row(case) for case in denied.cases]


def details(results: Results) -> list[str]:
    denied = results.one(Denied)
    if denied is None:
        return []
    out = [
        "### 2c. Denied requests from a known winner",
        "",
        'An `MTLSServer(reject="status", status=403, accept=...)`: certs.d holds the wrong '
        "pair first (from a CA the handshake does not trust: refused with `unknown_ca`) and "
        "the right pair second. The first request is refused in TLS with the wrong pair and "
        "answered 200 with the right one, the winner; then the server's rule starts refusing "
        f"it (403) and {denied.requests} more requests are sent, one after another. The "
        "winner's 403 is an authorization rejection, so the flow would move on; the wrong "
        "pair is skipped for `recheck` seconds (60 by default), so no connection is opened.",
        "",
        "| mode | first request: status / handshakes (failed) | winner before / after | "
        "next requests | new handshakes / connections | per request | last request's "
        "attempts |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in denied.cases:
        statuses = ", ".join(f"{n} x {s}" for s, n in sorted(c.statuses.items()))
        out.append(
            f"| {c.mode} | {c.first_status} / {c.first_handshakes} "
            f"({c.first_failed}) | {c.winner} / {c.winner_after} | {statuses} | "
            f"{c.new_handshakes} / {c.new_connections} | {c.per_request:.2f} | "
            f"{'; '.join(c.last_attempts)} |"
        )
    out.append("")
    return out


SECTION = Section(
    name="denied",
    number="2c",
    result=Denied,
    full=Knobs(requests=100),
    quick=Knobs(requests=100),
    measure=measure,
    rows=rows,
    details=details,
)
