"""2d. ``order="ca-names"``: handshakes of a first request on a new transport, the right pair
k-th of 10, against Docker's order; a server that lists its client CA, and one that lists none
(its cost)."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import tempfile
import time
from pathlib import Path

import dockercerts

from ..material import write_host
from ..measure import interleaved, log, median, paired
from ..section import Results, Row, Section
from ..server import ServerProcess, ServerSpec
from ..transports import aclient, client

KS = (1, 2, 3, 5, 10)
TARGET = 2  # handshakes of a first request when the server lists its CA (k >= 2)


@dataclasses.dataclass(frozen=True)
class Knobs:
    rounds: int


@dataclasses.dataclass(frozen=True)
class Case:
    names_sent: bool
    listed: tuple[str, ...]
    k: int
    handshakes: dict[str, int]  # by "order, mode": the most of the rounds
    spread: dict[str, tuple[int, int]]
    names_ms: float
    docker_ms: float
    ratio: float


@dataclasses.dataclass(frozen=True)
class CaNames:
    rounds: int
    pairs: int
    cases: tuple[Case, ...]


def measure(knobs: Knobs) -> CaNames:
    """A first request on a new transport, ``order="ca-names"`` against Docker's order, with
    the right pair k-th of 10, a server that refuses the others in TLS and lists its CA, or
    lists none: handshakes counted at the server (sync and async), wall time (sync)."""
    from dockercerts.canames import read_ca_names

    rounds = knobs.rounds
    cases = []
    with tempfile.TemporaryDirectory(prefix="dockercerts-bench-") as tmp:
        for send in (True, False):
            spec = ServerSpec(wrong=9, send_ca_names=send)
            with ServerProcess(Path(tmp) / f"pki-{send}", spec) as srv:
                host = f"127.0.0.1:{srv.port}"
                url = f"https://{host}/v2/"
                listed = read_ca_names("127.0.0.1", srv.port).texts
                # That read's refused handshake must not be counted in the first round.
                srv.settled()
                srv.take()
                for k in KS:
                    root = Path(tmp) / f"certs.d-{send}-{k}"
                    write_host(root, host, srv.pki, pairs=10, right_at=k)
                    counts: dict[str, list[int]] = {}
                    first = functools.partial(_first, srv, root, url, counts)
                    names, docker = interleaved(
                        rounds,
                        functools.partial(first, "ca-names"),
                        functools.partial(first, "docker"),
                    )
                    first("ca-names", "async")
                    first("docker", "async")
                    srv.take()
                    case = Case(
                        names_sent=send,
                        listed=tuple(listed),
                        k=k,
                        handshakes={key: max(v) for key, v in counts.items()},
                        spread={key: (min(v), max(v)) for key, v in counts.items()},
                        names_ms=median(names) * 1e3,
                        docker_ms=median(docker) * 1e3,
                        ratio=paired(names, docker),
                    )
                    log(
                        f"  canames: names {'listed' if send else 'none'}, k={k}: handshakes "
                        f"{case.handshakes}, first request {case.names_ms:.1f} vs "
                        f"{case.docker_ms:.1f} ms ({case.ratio:.2f}x)"
                    )
                    cases.append(case)
    return CaNames(rounds=rounds, pairs=10, cases=tuple(cases))


def _first(
    srv: ServerProcess,
    root: Path,
    url: str,
    counts: dict[str, list[int]],
    order: str,
    mode: str = "sync",
) -> float:
    """Seconds for a first request on a new transport; its handshakes go to ``counts``."""
    srv.take()
    start = time.perf_counter()
    if mode == "sync":
        with client(dockercerts.Transport(root=root, order=order)) as c:
            status = c.get(url).status_code
    else:

        async def get() -> int:
            async with aclient(dockercerts.AsyncTransport(root=root, order=order)) as c:
                return (await c.get(url)).status_code

        status = asyncio.run(get())
    elapsed = time.perf_counter() - start
    stats = srv.settled()
    assert status == 200, status
    counts.setdefault(f"{order}, {mode}", []).append(stats.handshakes + stats.failed)
    return elapsed


def _row(case: Case, rounds: int) -> Row:
    k, counts = case.k, case.handshakes
    names = counts["ca-names, sync"], counts["ca-names, async"]
    docker = counts["docker, sync"], counts["docker, async"]
    time_note = (
        f"first request {case.names_ms:.1f} vs {case.docker_ms:.1f} ms in Docker's "
        f"order ({case.ratio:.2f}x, median of {rounds} paired rounds)"
    )
    if case.names_sent:
        figure = f"2d. order='ca-names', server lists its CA, right pair {k}-th of 10"
        target = f"{TARGET}" if k >= 2 else "reported (k = 1: 1 in Docker's order)"
        met = all(n == TARGET for n in names)
        verdict = ("met" if met else "FAILED") if k >= 2 else ("reported" if met else "FAILED")
    else:
        figure = f"2d. order='ca-names', server lists no CA, right pair {k}-th of 10 (its cost)"
        target = f"reported (Docker's order: k = {k}, plus the read)"
        verdict = "reported" if all(n == k + 1 for n in names) else "FAILED"
    return Row(
        figure,
        f"handshakes {names[0]} sync / {names[1]} async (Docker's order: "
        f"{docker[0]} / {docker[1]})",
        target,
        verdict,
        f"{time_note}; CA names read: {', '.join(case.listed) or 'none'}",
    )


def rows(results: Results) -> list[Row]:
    canames = results.one(CaNames)
    return [] if canames is None else [_row(case, canames.rounds) for case in canames.cases]


SECTION = Section(
    name="canames",
    number="2d",
    result=CaNames,
    full=Knobs(rounds=7),
    quick=Knobs(rounds=3),
    measure=measure,
    rows=rows,
)
