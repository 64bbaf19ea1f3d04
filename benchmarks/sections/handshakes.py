"""2. Handshakes at the server with the right pair sorted k-th (k = 1, 3, 10): k on the first
request, then none; TLS 1.3 and 1.2 rejections, and nginx-style HTTP rejections."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Literal, Optional

import dockercerts

from ..material import write_host
from ..measure import log
from ..section import Results, Row, Section
from ..server import ServerProcess, ServerSpec
from ..transports import client, get_ok

LATER = 20  # requests after the first, which should need no handshake


@dataclasses.dataclass(frozen=True)
class Knobs:
    pass


@dataclasses.dataclass(frozen=True)
class Case:
    reject: str
    tls: str
    k: int
    status: int
    first_connections: int
    first_completed: int
    first_failed: int
    later_requests: int
    later_connections: int
    later_handshakes: int
    subject: Optional[str]
    ok: bool


@dataclasses.dataclass(frozen=True)
class Handshakes:
    cases: tuple[Case, ...]


def measure(knobs: Knobs) -> Handshakes:
    cases = []
    setups: tuple[tuple[Literal["tls", "http"], Optional[Literal["1.2"]]], ...] = (
        ("tls", None),
        ("tls", "1.2"),
        ("http", None),
    )
    with tempfile.TemporaryDirectory(prefix="dockercerts-bench-") as tmp:
        for reject, tls in setups:
            folder = Path(tmp) / f"pki-{reject}-{tls}"
            with ServerProcess(folder, ServerSpec(reject=reject, tls=tls, wrong=9)) as srv:
                for k in (1, 3, 10):
                    root = Path(tmp) / f"certs.d-{reject}-{tls}-{k}"
                    host = f"127.0.0.1:{srv.port}"
                    write_host(root, host, srv.pki, pairs=10, right_at=k)
                    url = f"https://{host}/v2/"
                    srv.take()
                    with client(dockercerts.Transport(root=root)) as c:
                        status = c.get(url).status_code
                        first = srv.settled()
                        srv.take()
                        get_ok(c, url, LATER)
                        rest = srv.settled()
                        srv.take()
                    attempts = first.handshakes + first.failed
                    later_handshakes = rest.handshakes + rest.failed
                    case = Case(
                        reject=reject,
                        tls=tls or "1.3",
                        k=k,
                        status=status,
                        first_connections=first.connections,
                        first_completed=first.handshakes,
                        first_failed=first.failed,
                        later_requests=LATER,
                        later_connections=rest.connections,
                        later_handshakes=later_handshakes,
                        subject=rest.last_subject,
                        ok=(
                            status == 200
                            and attempts == k
                            and first.connections == k
                            and rest.connections == 0
                            and later_handshakes == 0
                            and rest.last_subject == "CN=right"
                        ),
                    )
                    log(
                        f"  handshakes: reject={reject} tls={case.tls} k={k}: first request "
                        f"{attempts} ({first.handshakes} completed, {first.failed} failed), "
                        f"next {LATER}: {case.later_handshakes}"
                    )
                    cases.append(case)
    return Handshakes(cases=tuple(cases))


def rows(results: Results) -> list[Row]:
    handshakes = results.one(Handshakes)
    if handshakes is None:
        return []
    return [
        Row(
            f"2. handshakes, right pair {case.k}-th (reject={case.reject}, TLS {case.tls})",
            f"first request {case.first_completed + case.first_failed} "
            f"({case.first_completed} completed + {case.first_failed} failed), "
            f"next {case.later_requests}: {case.later_handshakes}",
            f"{case.k}, then 0",
            "met" if case.ok else "FAILED",
        )
        for case in handshakes.cases
    ]


def details(results: Results) -> list[str]:
    handshakes = results.one(Handshakes)
    if handshakes is None:
        return []
    out = [
        "### 2. Handshakes counted at the server",
        "",
        "| reject | TLS | right pair | first request: connections / completed / failed "
        "handshakes | next requests: new handshakes | subject seen |",
        "|---|---|---|---|---|---|",
    ]
    for c in handshakes.cases:
        out.append(
            f"| {c.reject} | {c.tls} | {c.k}-th | {c.first_connections} / "
            f"{c.first_completed} / {c.first_failed} | {c.later_handshakes} in "
            f"{c.later_requests} | {c.subject} |"
        )
    out.append("")
    return out


SECTION = Section(
    name="handshakes",
    number="2",
    result=Handshakes,
    full=Knobs(),
    quick=Knobs(),
    measure=measure,
    rows=rows,
    details=details,
)
