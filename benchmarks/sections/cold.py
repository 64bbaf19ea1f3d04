"""3. Cold start: a new transport and its first request (1 CA + 5 pairs, right pair first)
against ``create_default_context()`` + ``load_cert_chain`` + bare httpx, under each trust
setup."""

from __future__ import annotations

import dataclasses
import ssl
import time
from typing import Optional

import httpx

import dockercerts

from ..measure import interleaved, median, paired
from ..section import Results, Row, Section
from ..server import ServerSpec, one_host
from ..transports import client, contexts_built
from ..trust_env import ENV_LABELS, each_trust_env
from .context import Context

TARGET = 1.1


@dataclasses.dataclass(frozen=True)
class Knobs:
    rounds: int


@dataclasses.dataclass(frozen=True)
class Cold:
    rounds: int
    source: str
    first_in_process_ms: float
    wrapped_ms: float
    bare_ms: float
    ratio: float
    ratio_min: float
    ratio_max: float
    construct_ms: float
    contexts_built: Optional[int]
    pairs: int


def measure(knobs: Knobs) -> Cold:
    rounds = knobs.rounds
    with one_host(ServerSpec(wrong=4), pairs=5) as (srv, root, url):
        construct: list[float] = []
        built: list[Optional[int]] = []

        def wrapped() -> float:
            start = time.perf_counter()
            transport = dockercerts.Transport(root=root)
            construct.append(time.perf_counter() - start)
            with client(transport) as c:
                status = c.get(url).status_code
                elapsed = time.perf_counter() - start
                built.append(contexts_built(transport))
            assert status == 200, status
            return elapsed

        def bare() -> float:
            start = time.perf_counter()
            context = ssl.create_default_context()
            context.load_verify_locations(cadata=srv.pki.server_ca.decode("ascii"))
            context.load_cert_chain(srv.pki.folder / "right.cert", srv.pki.folder / "right.key")
            with client(httpx.HTTPTransport(verify=context)) as c:
                status = c.get(url).status_code
                elapsed = time.perf_counter() - start
            assert status == 200, status
            return elapsed

        first_wrapped = wrapped()  # includes this process's one-time trust decision
        bare()
        a, b = interleaved(rounds, wrapped, bare)
        srv.take()
    return Cold(
        rounds=rounds,
        source=dockercerts.system_trust().source,
        first_in_process_ms=first_wrapped * 1e3,
        wrapped_ms=median(a) * 1e3,
        bare_ms=median(b) * 1e3,
        ratio=paired(a, b),
        ratio_min=min(x / y for x, y in zip(a, b)),
        ratio_max=max(x / y for x, y in zip(a, b)),
        construct_ms=median(construct) * 1e3,
        contexts_built=built[-1],
        pairs=5,
    )


def rows(results: Results) -> list[Row]:
    contexts = results.runs(Context)
    out = []
    for mode, data in results.runs(Cold).items():
        ratio = data.ratio
        why = ""
        if ratio > TARGET:
            per_context = contexts[mode].ms.get("candidate") if mode in contexts else None
            each = f", each about {per_context:.1f} ms here" if per_context else ""
            why = (
                f"The transport built {data.contexts_built} candidate contexts for one "
                f"request where one was needed (every pair's, up front{each}), and its "
                f"constructor alone took {data.construct_ms:.1f} ms before any request."
            )
        out.append(
            Row(
                f"3. cold start vs bare httpx, {ENV_LABELS[mode]} (trust: {data.source})",
                f"{ratio:.2f}x ({data.wrapped_ms:.1f} vs {data.bare_ms:.1f} ms)",
                f"<= {TARGET:.1f}x",
                "met" if ratio <= TARGET else f"missed by {(ratio - TARGET) * 100:.0f}%",
                f"rounds {data.ratio_min:.2f}..{data.ratio_max:.2f}",
                why,
            )
        )
    return out


def details(results: Results) -> list[str]:
    runs = results.runs(Cold)
    if not runs:
        return []
    out = [
        "### 3. Cold start (new transport + first request; 1 CA + 5 pairs, right first)",
        "",
        "| environment | trust | dockercerts ms | bare ms | ratio | first in process ms | "
        "constructor ms | contexts built (pairs) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mode, d in runs.items():
        out.append(
            f"| {ENV_LABELS[mode]} | {d.source} | {d.wrapped_ms:.1f} | "
            f"{d.bare_ms:.1f} | "
            f"{d.ratio:.2f}x ({d.ratio_min:.2f}..{d.ratio_max:.2f}) | "
            f"{d.first_in_process_ms:.1f} | {d.construct_ms:.1f} | "
            f"{d.contexts_built} ({d.pairs}) |"
        )
    out.append("")
    return out


SECTION = Section(
    name="cold",
    number="3",
    result=Cold,
    full=Knobs(rounds=15),
    quick=Knobs(rounds=7),
    measure=measure,
    rows=rows,
    details=details,
    runs=each_trust_env,
)
