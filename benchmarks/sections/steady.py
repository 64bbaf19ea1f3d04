"""1. Steady state: keep-alive throughput against bare httpx with the right pair, sync, async,
8 threads and 64 tasks, with an A/A control (a second bare client in the same rounds).

Rounds are sent in small slices, interleaved with the other variants' (``SLICE_REQUESTS``), so
that the machine's load falls on all of them alike; the section runs in several processes and
pools their rounds, so that the figure does not rest on one draw of a process's memory layout
(ASLR, the hash seed). benchmarks/README.md, *Noise in the steady state*, has the numbers."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Optional

import httpx

import dockercerts

from ..measure import (
    Rounds,
    Throughput,
    ainterleaved,
    interleaved,
    log,
    shares,
    slices,
    slicing,
    throughput,
)
from ..section import Results, Row, Run, Section
from ..server import ServerSpec, one_host
from ..transports import aclient, aget_ok, client, get_ok
from .wrapper import Wrapper

TARGET = 0.97
CONCURRENT_TARGET = 0.95

# Steady state keeps every connection alive: 8 per client (8 threads, or 64 tasks sharing
# them), and no expiry while the other variant runs. httpx's defaults (20 kept alive, 5 s)
# would close connections between rounds, and 64 connections would measure the Python
# test server's thread convoy (~11 ms per request here) rather than the client.
LIMITS = httpx.Limits(max_connections=8, max_keepalive_connections=8, keepalive_expiry=600)


@dataclasses.dataclass(frozen=True)
class Knobs:
    requests: int
    rounds: int  # in each process
    processes: int


@dataclasses.dataclass(frozen=True)
class SteadyMode:
    rounds: Rounds
    # TCP connections the server accepted in the timed runs, per variant
    new_connections: dict[str, int]


@dataclasses.dataclass(frozen=True)
class Steady:
    """What one process measured."""

    requests: int
    rounds: int
    modes: dict[str, SteadyMode]  # "sync", "8 threads", "async", "64 tasks"


@dataclasses.dataclass(frozen=True)
class Pooled:
    """One mode's figures over the rounds of every process, and each process's own ratio."""

    throughput: Throughput
    per_process: list[float]
    new_connections: dict[str, int]


@dataclasses.dataclass(frozen=True)
class SteadyFigures:
    requests: int
    rounds: int  # in all
    processes: int
    modes: dict[str, Pooled]


def pooled(results: Results) -> Optional[SteadyFigures]:
    """The steady state's figures, every process's rounds pooled; ``None`` if none ran."""
    runs = list(results.runs(Steady).values())
    if not runs:
        return None
    n, modes = runs[0].requests, {}
    for mode in runs[0].modes:
        each = [run.modes[mode] for run in runs if mode in run.modes]
        modes[mode] = Pooled(
            throughput(Rounds.pooled([m.rounds for m in each]), n),
            [throughput(m.rounds, n).throughput_ratio for m in each],
            {k: sum(m.new_connections[k] for m in each) for k in each[0].new_connections},
        )
    return SteadyFigures(n, sum(run.rounds for run in runs), len(runs), modes)


def plan(knobs: Knobs) -> list[Run[Knobs]]:
    return [
        Run(knobs, key=f"process {i + 1}", note=f"  process {i + 1} of {knobs.processes}")
        for i in range(knobs.processes)
    ]


def measure(knobs: Knobs) -> Steady:
    n, rounds = knobs.requests, knobs.rounds
    warm = max(n // 4, 128)  # enough for every worker to open its connection
    with one_host(ServerSpec(wrong=4, max_workers=32), pairs=5) as (srv, root, url):
        modes: dict[str, SteadyMode] = {}
        # "control" is a second bare client measured in the same rounds: bare against control
        # (an A/A comparison) shows how far two identical clients drift apart on this machine.
        new_connections = {"dockercerts": 0, "bare": 0, "control": 0}

        def timed(fn: Callable[[], None], variant: str, cpu: list[float]) -> Callable[[], float]:
            def run() -> float:
                start, cpu_start = time.perf_counter(), time.process_time()
                fn()
                elapsed = time.perf_counter() - start
                cpu.append(time.process_time() - cpu_start)
                new_connections[variant] += srv.take().connections
                return elapsed

            return run

        variants = {
            "dockercerts": client(dockercerts.Transport(root=root, limits=LIMITS)),
            "bare": client(httpx.HTTPTransport(verify=srv.pki.bare_context(), limits=LIMITS)),
            "control": client(httpx.HTTPTransport(verify=srv.pki.bare_context(), limits=LIMITS)),
        }
        with ThreadPoolExecutor(8) as pool:

            def sequential(c: httpx.Client, count: int) -> Callable[[], None]:
                return lambda: get_ok(c, url, count)

            def threaded(c: httpx.Client, count: int) -> Callable[[], None]:
                def run() -> None:
                    for future in [pool.submit(get_ok, c, url, k) for k in shares(count, 8)]:
                        future.result()

                return run

            for mode, shape in (("sync", sequential), ("8 threads", threaded)):
                log(f"  steady: {mode}")
                for variant in variants.values():  # connections opened, winner settled
                    shape(variant, warm)()
                srv.take()
                cpu: dict[str, list[float]] = {name: [] for name in variants}
                k = slices(n, mode)
                a, b, control = interleaved(
                    rounds * k,
                    *(
                        timed(shape(variant, n // k), name, cpu[name])
                        for name, variant in variants.items()
                    ),
                )
                timed_rounds = Rounds.of_slices(
                    a, b, control, cpu["dockercerts"], cpu["bare"], per_round=k
                )
                modes[mode] = SteadyMode(timed_rounds, dict(new_connections))
                new_connections.update(dockercerts=0, bare=0, control=0)
        for c in variants.values():
            c.close()

        async def amain() -> None:
            wrapped_transport = dockercerts.AsyncTransport(root=root, limits=LIMITS)
            bare_transport, control_transport = (
                httpx.AsyncHTTPTransport(verify=srv.pki.bare_context(), limits=LIMITS)
                for _ in range(2)
            )
            async with (
                aclient(wrapped_transport) as wrapped_client,
                aclient(bare_transport) as bare_client,
                aclient(control_transport) as control_client,
            ):
                avariants = {
                    "dockercerts": wrapped_client,
                    "bare": bare_client,
                    "control": control_client,
                }

                def atimed(
                    fn: Callable[[], Awaitable[None]], variant: str, cpu: list[float]
                ) -> Any:
                    async def run() -> float:
                        start, cpu_start = time.perf_counter(), time.process_time()
                        await fn()
                        elapsed = time.perf_counter() - start
                        cpu.append(time.process_time() - cpu_start)
                        new_connections[variant] += srv.take().connections
                        return elapsed

                    return run

                def asequential(c: httpx.AsyncClient, count: int) -> Any:
                    return lambda: aget_ok(c, url, count)

                def tasks(c: httpx.AsyncClient, count: int) -> Any:
                    async def run() -> None:
                        await asyncio.gather(*(aget_ok(c, url, k) for k in shares(count, 64)))

                    return run

                for mode, shape in (("async", asequential), ("64 tasks", tasks)):
                    log(f"  steady: {mode}")
                    for avariant in avariants.values():
                        await shape(avariant, warm)()
                    srv.take()
                    acpu: dict[str, list[float]] = {name: [] for name in avariants}
                    k = slices(n, mode)
                    a, b, control = await ainterleaved(
                        rounds * k,
                        *(
                            atimed(shape(avariant, n // k), name, acpu[name])
                            for name, avariant in avariants.items()
                        ),
                    )
                    timed_rounds = Rounds.of_slices(
                        a, b, control, acpu["dockercerts"], acpu["bare"], per_round=k
                    )
                    modes[mode] = SteadyMode(timed_rounds, dict(new_connections))
                    new_connections.update(dockercerts=0, bare=0, control=0)

        asyncio.run(amain())
    return Steady(requests=n, rounds=rounds, modes=modes)


def _why(mode: str, data: Throughput, target: float, wrapper: Optional[Wrapper]) -> str:
    """For a miss: the wrapper's own cost against this mode's request, and whether the A/A
    control shows the machine alone producing a difference of this size."""
    ratio = data.throughput_ratio
    kind = "async" if mode in ("async", "64 tasks") else "sync"
    own = ""
    if wrapper is not None:
        cost = wrapper.modes[kind].cost_us
        own = (
            f"The wrapper's own measured cost is {cost:.1f} µs a request (1b), "
            f"{cost / data.bare_us * 100:.1f}% of this mode's "
            f"{data.bare_us:.0f} µs. "
        )
    return (
        f"{own}Two identical bare clients measured in the same rounds (A/A control) "
        f"came out at {data.control_ratio:.3f}x, per round "
        f"{data.control_min:.2f}..{data.control_max:.2f}: "
        + (
            "a difference of this run's size is within what the machine alone produces. "
            if abs(1 - data.control_ratio) >= target - ratio or data.control_min <= ratio
            else "the machine alone does not explain this miss. "
        )
        + f"Per-round ratios {data.ratio_min:.2f}..{data.ratio_max:.2f}, "
        f"best rounds {data.best_ratio:.3f}x, client CPU per request "
        f"{data.cpu_ratio:.3f}x."
    )


def _processes(figures: Pooled) -> str:
    return " / ".join(f"{ratio:.3f}" for ratio in figures.per_process)


def rows(results: Results) -> list[Row]:
    steady = pooled(results)
    if steady is None:
        return []
    wrapper = results.one(Wrapper)
    out = []
    for mode, figures in steady.modes.items():
        data = figures.throughput
        target = TARGET if mode in ("sync", "async") else CONCURRENT_TARGET
        ratio = data.throughput_ratio
        out.append(
            Row(
                f"1. steady, {mode} ({steady.requests} GETs): throughput vs bare",
                f"{ratio:.3f}x ({data.wrapped_us:.0f} vs {data.bare_us:.0f} µs/req)",
                f">= {target:.2f}x",
                "met" if ratio >= target else f"missed by {(target - ratio) * 100:.1f} points",
                f"{steady.rounds} rounds in {steady.processes} processes "
                f"({_processes(figures)}), {data.ratio_min:.3f}..{data.ratio_max:.3f}; "
                f"best-of {data.best_ratio:.3f}x; client CPU {data.cpu_ratio:.3f}x; "
                f"A/A control {data.control_ratio:.3f}x",
                _why(mode, data, target, wrapper) if ratio < target else "",
            )
        )
    return out


def details(results: Results) -> list[str]:
    steady = pooled(results)
    if steady is None:
        return []
    out = [
        f"### 1. Steady state ({steady.requests} GETs per variant and round, "
        f"{steady.rounds} rounds in {steady.processes} processes, keep-alive; each round "
        f"{slicing(list(steady.modes))})",
        "",
        "| Mode | dockercerts µs/req | bare µs/req | throughput ratio (median) | "
        "per process (median) | per-round ratios | best-of ratio | "
        "client CPU µs/req (dockercerts / bare) | "
        "client CPU ratio | A/A control (bare / second bare) | "
        "new connections in timed runs (dockercerts / bare) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, figures in steady.modes.items():
        d, nc = figures.throughput, figures.new_connections
        out.append(
            f"| {mode} | {d.wrapped_us:.0f} | {d.bare_us:.0f} | "
            f"{d.throughput_ratio:.3f}x | {_processes(figures)} | "
            f"{d.ratio_min:.3f}..{d.ratio_max:.3f} | "
            f"{d.best_ratio:.3f}x | {d.wrapped_cpu_us:.0f} / {d.bare_cpu_us:.0f} | "
            f"{d.cpu_ratio:.3f}x | {d.control_ratio:.3f}x "
            f"({d.control_min:.2f}..{d.control_max:.2f}) | "
            f"{nc['dockercerts']} / {nc['bare']} |"
        )
    out += [
        "",
        "Throughput ratio: bare time / dockercerts time per round (wall clock, the target's "
        "figure), the median over the rounds of every process; per process: the median of "
        "that process's rounds alone. Each process is a fresh interpreter (its own address "
        "layout and hash seed), so the pooled median does not rest on one draw of them. "
        "Best-of: the fastest round of each. Client CPU: the process's CPU time "
        "per request (all its threads; the server is another process), which time spent "
        "waiting for the shared CPUs does not inflate. A/A control: the bare client against "
        "a second, identical bare client in the same rounds; its distance from 1.000x is "
        "the machine's own noise in this run.",
        "",
        "New connections: TCP connections the server accepted during the timed runs "
        "(0: every request reused a kept-alive connection).",
        "",
    ]
    return out


SECTION = Section(
    name="steady",
    number="1",
    result=Steady,
    full=Knobs(requests=2000, rounds=3, processes=4),
    quick=Knobs(requests=500, rounds=2, processes=2),
    measure=measure,
    rows=rows,
    details=details,
    runs=plan,
)
