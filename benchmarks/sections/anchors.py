"""8. Large CA bundles (issue 15): the first candidate context of a host with 1,000 to 10,000
distinct anchors (CPU time, trust prepared anew), and the event loop's longest stall while a
new ``AsyncTransport`` makes its first request to a host with 4,000 anchors.

The bundles and the context costs come from ``benchmarks/anchors.py``, which also runs alone.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import math
import sys
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Callable, Optional

import httpx

import dockercerts
from dockercerts.testing import CA

from .. import anchors as bundles
from ..material import write_host
from ..measure import CPU, ainterleaved, log, median
from ..section import Results, Row, Section
from ..server import ServerProcess, ServerSpec
from ..transports import aclient

SIZES = (1_000, 2_000, 4_000, 10_000)
TARGET_MS = 500.0  # the first candidate context of a host with 10,000 distinct anchors
GROWTH_TARGET = 1.1  # exponent of the time over the anchors, 1,000 to 10,000: 1 is linear
STALL_ANCHORS = 4_000
STALL_TARGET_MS = 10.0
STALL_TICK_S = 0.001
STALL_CONTROL_S = 0.12  # about what the worker thread does for 4,000 anchors (load, prepare)
STALL_CONTROL = f"control: {STALL_CONTROL_S * 1e3:.0f} ms of pure Python in a worker thread"
BARE = "bare httpx, context made before"


@dataclasses.dataclass(frozen=True)
class Knobs:
    repeat: int
    eager_up_to: int  # 5.7 s once for 10,000: the figure before issue 15
    stall_rounds: int


@dataclasses.dataclass(frozen=True)
class Size:
    anchors: int
    eager_ms: Optional[float]
    load_ms: float
    first_ms: float
    others_ms: float
    verify_ms: float


@dataclasses.dataclass(frozen=True)
class Tick:
    """One round of the ticker: its longest gap while a first request ran."""

    max_gap_ms: float
    ticks: int
    request_ms: float


@dataclasses.dataclass(frozen=True)
class Stall:
    anchors: int
    rounds: int
    tick_ms: float
    variants: dict[str, tuple[Tick, ...]]


@dataclasses.dataclass(frozen=True)
class Anchors:
    repeat: int
    pairs: int
    sizes: tuple[Size, ...]
    copies: int
    copies_ms: float
    stall: Stall


def measure(knobs: Knobs) -> Anchors:
    """What a host folder with N distinct anchors costs (the candidates' contexts), and how
    long the event loop stalls while an AsyncTransport makes its first request to a host
    with 4,000 anchors."""
    repeat = knobs.repeat
    bundle = bundles.Bundle(max(SIZES))
    sizes = []
    with tempfile.TemporaryDirectory(prefix="dockercerts-bench-") as tmp:
        base = Path(tmp)
        client_ca = CA(name="bench client CA")
        for n in SIZES:
            pem = bundle.pem(n)
            eager = None
            if n <= knobs.eager_up_to:
                eager = bundles.best(functools.partial(bundles.eager_context, pem), 1, CPU)
            folder = bundles.host_folder(base, f"n{n}", pem, client_ca, pairs=3)
            cost = bundles.costs(folder, bundle.server(n // 2, base), repeat, CPU)
            log(
                f"  anchors: {n:,}: load_dir {cost['load'] * 1e3:.0f} ms, first context "
                f"{cost['first'] * 1e3:.0f} ms, others {cost['others'] * 1e3:.1f} ms"
            )
            sizes.append(
                Size(
                    anchors=n,
                    eager_ms=None if eager is None else eager * 1e3,
                    load_ms=cost["load"] * 1e3,
                    first_ms=cost["first"] * 1e3,
                    others_ms=cost["others"] * 1e3,
                    verify_ms=cost["verify"] * 1e3,
                )
            )
        copies = 10_000
        dup_ms = bundles.duplicated(bundle, base, copies, repeat, CPU) * 1e3
        stall = _loop_stall(base / "stall", bundle, knobs.stall_rounds)
    return Anchors(
        repeat=repeat,
        pairs=3,
        sizes=tuple(sizes),
        copies=copies,
        copies_ms=dup_ms,
        stall=stall,
    )


async def _ticker(gaps: list[float], stop: asyncio.Event) -> None:
    """Sleeps STALL_TICK_S at a time and records how long each sleep really took."""
    last = time.perf_counter()
    while not stop.is_set():
        await asyncio.sleep(STALL_TICK_S)
        now = time.perf_counter()
        gaps.append(now - last)
        last = now


FirstRequest = Callable[[], Awaitable[int]]


async def _ticked(prepare: Callable[[], FirstRequest]) -> Tick:
    """The longest gap of a ticker task while a first request runs on the same loop.

    ``prepare()`` runs before the ticker starts (what it does is not the request's cost)
    and gives the request to make.
    """
    request = prepare()
    gaps: list[float] = []
    stop = asyncio.Event()
    ticker = asyncio.create_task(_ticker(gaps, stop))
    await asyncio.sleep(0.02)  # the ticker is running
    gaps.clear()
    start = time.perf_counter()
    status = await request()
    elapsed = time.perf_counter() - start
    stop.set()
    await ticker  # its last gap spans the end of the request
    if status != 200:
        raise RuntimeError(f"the first request answered {status}")
    return Tick(max_gap_ms=max(gaps) * 1e3, ticks=len(gaps), request_ms=elapsed * 1e3)


def _python_work(seconds: float) -> int:
    """Pure Python for ``seconds``: it holds the GIL but for the interpreter's switches."""
    end = time.perf_counter() + seconds
    count = 0
    while time.perf_counter() < end:
        count += 1
    return count


def _loop_stall(base: Path, bundle: bundles.Bundle, rounds: int) -> Stall:
    """Max ticker gaps during first requests: through a new AsyncTransport to a host with
    STALL_ANCHORS anchors, the same with one anchor, and bare httpx with its context made
    before (what any first request costs on the loop: connect, TLS handshake); and, as a
    control, while a worker thread runs pure Python (the GIL's share: the loop waits up to a
    switch interval each time it takes the GIL back)."""
    base.mkdir()
    with ServerProcess(base / "pki", ServerSpec(wrong=0)) as srv:
        host = f"127.0.0.1:{srv.port}"
        url = f"https://{host}/v2/"
        roots = {}
        for count in (STALL_ANCHORS, 1):
            root = base / f"certs.d-{count}"
            folder = write_host(root, host, srv.pki, pairs=1)
            # The server's CA and count - 1 others: count distinct anchors.
            pem = srv.pki.server_ca.decode("ascii") + bundle.pem(count - 1)
            (folder / "ca.crt").write_text(pem)
            roots[count] = root

        def through_dockercerts(root: Path) -> Callable[[], FirstRequest]:
            def prepare() -> FirstRequest:
                bundles.no_prepared_trust()  # so the trust is prepared within the figure

                async def first() -> int:
                    async with aclient(dockercerts.AsyncTransport(root=root)) as c:
                        return (await c.get(url)).status_code

                return first

            return prepare

        def bare() -> FirstRequest:
            context = srv.pki.bare_context()

            async def first() -> int:
                async with aclient(httpx.AsyncHTTPTransport(verify=context)) as c:
                    return (await c.get(url)).status_code

            return first

        def control() -> FirstRequest:
            async def first() -> int:
                await asyncio.to_thread(_python_work, STALL_CONTROL_S)
                return 200

            return first

        variants = {
            f"dockercerts, {STALL_ANCHORS:,} anchors": through_dockercerts(roots[STALL_ANCHORS]),
            "dockercerts, 1 anchor": through_dockercerts(roots[1]),
            BARE: bare,
            STALL_CONTROL: control,
        }

        def ticked(prepare: Callable[[], FirstRequest]) -> Callable[[], Awaitable[Tick]]:
            return lambda: _ticked(prepare)

        async def amain() -> dict[str, tuple[Tick, ...]]:
            for prepare in variants.values():  # imports, system trust, the thread pool
                await prepare()()
            samples = await ainterleaved(rounds, *(ticked(p) for p in variants.values()))
            return {name: tuple(trials) for name, trials in zip(variants, samples)}

        measured = asyncio.run(amain())
        srv.take()
    for name, trials in measured.items():
        log(f"  stall: {name}: {[round(t.max_gap_ms, 1) for t in trials]} ms")
    return Stall(
        anchors=STALL_ANCHORS,
        rounds=rounds,
        tick_ms=STALL_TICK_S * 1e3,
        variants=measured,
    )


def _size_rows(by_n: dict[int, Size]) -> list[Row]:
    rows = []
    for n in (1_000, 10_000):
        s = by_n[n]
        eager = "" if s.eager_ms is None else f"; eager cadata {s.eager_ms:,.0f} ms a context"
        note = (
            f"load_dir {s.load_ms:.0f} ms; each other candidate {s.others_ms:.1f} ms; "
            f"a handshake (lazy lookup) {s.verify_ms:.1f} ms{eager}"
        )
        if n == 10_000:
            met = s.first_ms < TARGET_MS
            target, verdict = f"< {TARGET_MS:.0f} ms", "met" if met else "missed"
        else:
            target, verdict = "(report)", "info"
        rows.append(
            Row(
                f"8. context cost, {n:,} distinct anchors: the first candidate's context "
                "(trust prepared, then shared)",
                f"{s.first_ms:.0f} ms",
                target,
                verdict,
                note,
            )
        )
    return rows


def _growth_row(data: Anchors, low: Size, high: Size) -> Row:
    exponent = math.log(high.first_ms / low.first_ms) / math.log(10)
    eager = ""
    if low.eager_ms and high.eager_ms:
        eager_exp = math.log(high.eager_ms / low.eager_ms) / math.log(10)
        eager = f"; eager cadata: exponent {eager_exp:.2f}"
    middle = ", ".join(
        f"{s.anchors:,}: {s.first_ms:.0f} ms" for s in data.sizes if s not in (low, high)
    )
    return Row(
        "8. context cost growth, 1,000 to 10,000 distinct anchors",
        f"{high.first_ms / low.first_ms:.1f}x the time for 10x the anchors "
        f"(exponent {exponent:.2f})",
        f"no worse than linear (exponent <= {GROWTH_TARGET:.1f})",
        "met" if exponent <= GROWTH_TARGET else "missed",
        f"{middle}{eager}",
    )


def _stall_row(stall: Stall) -> Row:
    variants = stall.variants
    name = f"dockercerts, {stall.anchors:,} anchors"
    gaps = [t.max_gap_ms for t in variants[name]]
    value = median(gaps)
    others = "; ".join(
        f"{other}: {median([t.max_gap_ms for t in trials]):.1f} ms"
        for other, trials in variants.items()
        if other != name
    )
    why = ""
    if value > STALL_TARGET_MS:
        control_gap = median([t.max_gap_ms for t in variants[STALL_CONTROL]])
        bare_gap = median([t.max_gap_ms for t in variants[BARE]])
        why = (
            "Nothing of the folder's load or the trust's preparation runs on the loop any more "
            "(a worker thread does it), but that thread runs Python, holding the GIL: a "
            "sleeping task's wake-up takes two turns of the loop, and at each the loop may "
            f"wait a switch interval ({sys.getswitchinterval() * 1e3:.0f} ms) for the GIL. "
            "The control (pure Python in a worker thread, no I/O) shows "
            f"{control_gap:.1f} ms here; bare httpx's own first request {bare_gap:.1f} ms."
        )
    return Row(
        f"8. event-loop stall, async first request to a host with {stall.anchors:,} "
        "anchors (longest gap of a 1 ms ticker)",
        f"{value:.1f} ms (median of {stall.rounds} rounds; worst {max(gaps):.1f} ms)",
        f"<= {STALL_TARGET_MS:.0f} ms",
        "met" if value <= STALL_TARGET_MS else "missed",
        f"rounds {' / '.join(f'{g:.1f}' for g in gaps)}; first request "
        f"{median([t.request_ms for t in variants[name]]):.0f} ms; {others}",
        why,
    )


def rows(results: Results) -> list[Row]:
    data = results.one(Anchors)
    if data is None:
        return []
    by_n = {s.anchors: s for s in data.sizes}
    return [
        *_size_rows(by_n),
        _growth_row(data, by_n[1_000], by_n[10_000]),
        _stall_row(data.stall),
    ]


def details(results: Results) -> list[str]:
    data = results.one(Anchors)
    if data is None:
        return []
    out = [
        "### 8. Large CA bundles (issue 15)",
        "",
        f"A host folder with one `ca.crt` of N distinct self-signed CAs and {data.pairs} "
        f"client pairs; CPU time of the measuring thread (everything runs in it: waiting for "
        f"the shared CPUs does not count), best of {data.repeat} loads, each with its "
        "trust prepared anew. First context: the folder's anchors deduplicated and prepared (a "
        "hashed folder OpenSSL reads lazily), then one context; the other candidates share "
        "that trust. Handshake: over memory, a server issued by CA number N/2, on a fresh "
        "context. Eager: one context given the whole bundle with `cadata=` (what every "
        "candidate paid before), measured once.",
        "",
        "| anchors | load_dir | first context | each other context | handshake | "
        "eager cadata, per context |",
        "|---|---|---|---|---|---|",
    ]
    for s in data.sizes:
        eager = "-" if s.eager_ms is None else f"{s.eager_ms:,.0f} ms"
        out.append(
            f"| {s.anchors:,} | {s.load_ms:.0f} ms | {s.first_ms:.0f} ms | "
            f"{s.others_ms:.1f} ms | {s.verify_ms:.1f} ms | {eager} |"
        )
    stall = data.stall
    out += [
        "",
        f"{data.copies:,} copies of one CA (deduplicated to one anchor): `load_dir` and a "
        f"context in {data.copies_ms:.0f} ms.",
        "",
        f"**Event-loop stall.** A task on the loop sleeps {stall.tick_ms:.0f} ms at a time "
        "and records how long each sleep really took, while the same loop sends a first "
        "request through a new `AsyncTransport` (1 pair; `ca.crt`: the server's CA and "
        f"{stall.anchors - 1:,} others) to an `MTLSServer` in its own process; the figure "
        "is the longest gap, tick included. For comparison: the same with one anchor; bare "
        "httpx with its context made before the ticker starts (TCP connect and TLS handshake "
        "on the loop); and a control, a worker thread running pure Python for about as long "
        "as the transport's worker does for these anchors, the loop doing nothing else (the "
        "GIL's share: a sleeping task's wake-up takes two turns of the loop, and at each the "
        "loop may wait a switch interval for the GIL). "
        f"{stall.rounds} interleaved rounds; the verdict is on the median.",
        "",
        "| variant | longest gap per round (ms) | ticks per round | first request (ms) |",
        "|---|---|---|---|",
    ]
    for name, trials in stall.variants.items():
        gaps = " / ".join(f"{t.max_gap_ms:.1f}" for t in trials)
        ticks = " / ".join(str(t.ticks) for t in trials)
        took = " / ".join(f"{t.request_ms:.0f}" for t in trials)
        out.append(f"| {name} | {gaps} | {ticks} | {took} |")
    out.append("")
    return out


SECTION = Section(
    name="anchors",
    number="8",
    result=Anchors,
    full=Knobs(repeat=3, eager_up_to=10_000, stall_rounds=7),
    quick=Knobs(repeat=2, eager_up_to=1_000, stall_rounds=3),
    measure=measure,
    rows=rows,
    details=details,
)
