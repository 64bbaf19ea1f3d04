"""Measuring helpers shared by the sections: medians of interleaved rounds, CPU time, resident
memory, and the two summaries more than one section reports (a keep-alive throughput against a
baseline, and a wrapper's own cost per call).

Absolute times drift on shared machines, so every figure is a ratio against a baseline
measured in the same run, from medians of interleaved repetitions (A, B, B, A, ...).
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import dataclasses
import gc
import pstats
import statistics
import sys
import time
from collections.abc import Awaitable, Iterator, Sequence
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

from .section import Row

T = TypeVar("T")

# Micro-benchmarks (no I/O wait) count this thread's CPU time, so that time spent descheduled
# on a shared machine does not count; end-to-end figures use wall time.
CPU = time.thread_time

# Requests a slice in each keep-alive mode. Each round's n requests per variant are sent in
# slices, the variants alternating (A,B,C / C,B,A / ...), so that they see the same moments of
# a shared machine's load. Small slices matter, as that load moves within a second: with 4
# slices of 500 requests a round, an A/A control's per-round ratios scattered 3-5 times wider
# (standard deviation 0.028-0.048) than with 40 slices of 50 (0.006-0.014). A concurrent
# mode's slice keeps each of its workers busy with about 8 requests.
SLICE_REQUESTS = {"sync": 50, "async": 50, "8 threads": 100, "64 tasks": 500}


def slices(requests: int, mode: str) -> int:
    """How many slices a round of ``requests`` takes in ``mode`` (whole slices only)."""
    size = SLICE_REQUESTS[mode]
    if requests % size:
        raise ValueError(f"{mode}: {requests} requests do not make whole slices of {size}")
    return requests // size


def slicing(modes: Sequence[str]) -> str:
    """How ``modes`` slice their rounds, for a report: "slices of 50 requests (sync), ..."."""
    sizes = ", ".join(f"{SLICE_REQUESTS[mode]} ({mode})" for mode in modes)
    return f"sent in slices of {sizes} requests, the variants alternating A,B,C / C,B,A"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def rss_kb() -> Optional[int]:
    """Resident memory of this process (VmRSS), in KiB; ``None`` without /proc."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def settled_rss_kb() -> Optional[int]:
    gc.collect()
    return rss_kb()


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """As :mod:`timeit` does: no collector pauses inside a timed micro-loop."""
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _orders(rounds: int, count: int) -> Iterator[list[int]]:
    """The order of the measurements in each round: A,B / B,A / A,B ..."""
    for number in range(rounds):
        order = list(range(count))
        if number % 2:
            order.reverse()
        yield order


def interleaved(rounds: int, *runs: Callable[[], T]) -> list[list[T]]:
    """Run each measurement ``rounds`` times, rotating the order every round (A,B / B,A)."""
    samples: list[list[T]] = [[] for _ in runs]
    for order in _orders(rounds, len(runs)):
        for index in order:
            samples[index].append(runs[index]())
    return samples


async def ainterleaved(rounds: int, *runs: Callable[[], Awaitable[T]]) -> list[list[T]]:
    samples: list[list[T]] = [[] for _ in runs]
    for order in _orders(rounds, len(runs)):
        for index in order:
            samples[index].append(await runs[index]())
    return samples


def paired(a: Sequence[float], b: Sequence[float]) -> float:
    """The median of the per-round ratios ``a[i] / b[i]`` (pairs cancel drift)."""
    return median([x / y for x, y in zip(a, b)])


def shares(total: int, workers: int) -> list[int]:
    base, extra = divmod(total, workers)
    return [base + (1 if i < extra else 0) for i in range(workers)]


def cpu_per_request(
    handle: Callable[[Any], Any], request: object, calls: int
) -> Callable[[], float]:
    """A measurement: this thread's CPU time per ``handle(request).close()``, collector paused."""

    def run() -> float:
        with gc_paused():
            start = CPU()
            for _ in range(calls):
                handle(request).close()
            return (CPU() - start) / calls

    return run


def acpu_per_request(
    handle: Callable[[Any], Awaitable[Any]], request: object, calls: int
) -> Callable[[], Awaitable[float]]:
    """The async twin of :func:`cpu_per_request` (``await (await handle(request)).aclose()``)."""

    async def run() -> float:
        with gc_paused():
            start = CPU()
            for _ in range(calls):
                await (await handle(request)).aclose()
            return (CPU() - start) / calls

    return run


def own_costs(
    request: object,
    calls: int,
    rounds: int,
    sync: tuple[Callable[[Any], Any], Callable[[Any], Any]],
    make_async: Callable[[], Awaitable[tuple[Callable[[Any], Any], Callable[[Any], Any]]]],
) -> dict[str, OwnCost]:
    """``{"sync", "async"}``: the cost of the first handler of each pair over the second, in
    interleaved rounds; ``make_async`` makes (and warms) the async pair in the event loop."""
    wrapped, bare = sync
    a, b = interleaved(
        rounds, cpu_per_request(wrapped, request, calls), cpu_per_request(bare, request, calls)
    )

    async def amain() -> OwnCost:
        awrapped, abare = await make_async()
        aa, ab = await ainterleaved(
            rounds,
            acpu_per_request(awrapped, request, calls),
            acpu_per_request(abare, request, calls),
        )
        return own_cost(aa, ab)

    return {"sync": own_cost(a, b), "async": asyncio.run(amain())}


def self_time_profile(
    handle: Callable[[Any], Any], request: object, calls: int, top: int = 6
) -> tuple[tuple[str, float], ...]:
    """Where a wrapped call spends its time: the largest self times under cProfile, as % of all."""
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(calls):
        handle(request).close()
    profile.disable()
    totals: list[tuple[str, float]] = []
    stats: dict[Any, Any] = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    for (file, line, func), (_cc, _nc, self_time, _ct, _callers) in stats.items():
        name = func if file == "~" else f"{Path(file).name}:{line} {func}"
        totals.append((name, self_time))
    whole = sum(t for _, t in totals) or 1.0
    totals.sort(key=lambda item: item[1], reverse=True)
    return tuple((name, t / whole * 100) for name, t in totals[:top] if "disable" not in name)


@dataclasses.dataclass(frozen=True)
class OwnCost:
    """A wrapper's own cost per call: wrapped minus bare, per round (µs)."""

    wrapped_us: float
    mock_us: float
    cost_us: float
    cost_min_us: float
    cost_max_us: float


@dataclasses.dataclass(frozen=True)
class OwnCosts:
    """What a section measuring an own cost returns (each its own subclass, so that
    ``Results.one`` tells them apart): sync and async, and where the time goes."""

    modes: dict[str, OwnCost]  # "sync", "async"
    profile: tuple[tuple[str, float], ...]  # self time under cProfile (sync), % of the call
    calls: int
    rounds: int


def own_cost_rows(
    found: Optional[OwnCosts],
    figure: str,
    value: Callable[[OwnCost], str],
    target_us: float,
    target: str,
    call: str,
) -> list[Row]:
    """A row per mode: ``figure`` with ``{kind}``, the cost against ``target_us``, and where
    the time goes (cProfile) when it misses."""
    if found is None:
        return []
    out = []
    for kind, data in found.modes.items():
        over = data.cost_us - target_us
        why = ""
        if over > 0:
            top = ", ".join(f"{name} {share:.0f}%" for name, share in found.profile)
            why = f"Self time under cProfile (sync, share of the {call} call): {top}."
        out.append(
            Row(
                figure.format(kind=kind),
                value(data),
                target,
                "met" if over <= 0 else f"missed by {over:.2f} µs",
                f"rounds {data.cost_min_us:.2f}..{data.cost_max_us:.2f} µs",
                why,
            )
        )
    return out


def own_cost_details(found: Optional[OwnCosts], title: str, columns: str) -> list[str]:
    """The details' table: per mode, both sides and the cost; ``columns`` names the sides."""
    if found is None:
        return []
    out = [
        f"### {title} ({found.calls} calls x {found.rounds} rounds, collector paused as in timeit)",
        "",
        f"| | {columns} | cost (median of per-round differences) |",
        "|---|---|---|---|",
    ]
    for kind, d in found.modes.items():
        out.append(
            f"| {kind} | {d.wrapped_us:.2f} µs | {d.mock_us:.2f} µs | "
            f"{d.cost_us:.2f} µs ({d.cost_min_us:.2f}..{d.cost_max_us:.2f}) |"
        )
    out.append("")
    return out


def own_cost(wrapped: list[float], bare: list[float]) -> OwnCost:
    costs = [(w - b) * 1e6 for w, b in zip(wrapped, bare)]
    return OwnCost(
        wrapped_us=median(wrapped) * 1e6,
        mock_us=median(bare) * 1e6,
        cost_us=median(costs),
        cost_min_us=min(costs),
        cost_max_us=max(costs),
    )


@dataclasses.dataclass(frozen=True)
class Throughput:
    """Keep-alive throughput of a client against a bare one over the same rounds, with an A/A
    control: a second bare client, whose distance from the first is the machine's noise."""

    control_ratio: float
    control_min: float
    control_max: float
    cpu_ratio: float
    wrapped_cpu_us: float
    bare_cpu_us: float
    best_ratio: float
    throughput_ratio: float
    ratio_min: float
    ratio_max: float
    wrapped_us: float
    bare_us: float
    wrapped_rps: float
    bare_rps: float


def _rounds(times: list[float], per_round: int) -> list[float]:
    """Per-round totals of the slices' times (each round: its variant's n requests)."""
    return [sum(times[i : i + per_round]) for i in range(0, len(times), per_round)]


@dataclasses.dataclass(frozen=True)
class Rounds:
    """The per-round totals (seconds) of a keep-alive comparison: wall time of the wrapped
    client, the bare one and the A/A control, and the process's CPU time during the first two.

    Kept raw, not summarised, so that the rounds of several processes pool into one figure
    (:meth:`pooled`) that rests on more than one draw of the memory layout (ASLR, the hash
    seed)."""

    wrapped: list[float]
    bare: list[float]
    control: list[float]
    cpu_wrapped: list[float]
    cpu_bare: list[float]

    @classmethod
    def of_slices(
        cls,
        wrapped: list[float],
        bare: list[float],
        control: list[float],
        cpu_wrapped: list[float],
        cpu_bare: list[float],
        per_round: int,
    ) -> Rounds:
        """The rounds of :func:`interleaved` slices, ``per_round`` slices a round."""
        return cls(
            *(_rounds(t, per_round) for t in (wrapped, bare, control, cpu_wrapped, cpu_bare))
        )

    @classmethod
    def pooled(cls, many: Sequence[Rounds]) -> Rounds:
        """Every round of ``many``, in order."""
        return cls(*([x for r in many for x in getattr(r, f.name)] for f in _ROUND_FIELDS))


_ROUND_FIELDS = dataclasses.fields(Rounds)


def throughput(rounds: Rounds, n: int) -> Throughput:
    """The figures of ``rounds`` of ``n`` requests each: medians of per-round ratios."""
    wrapped, bare, control = rounds.wrapped, rounds.bare, rounds.control
    cpu_a, cpu_b = rounds.cpu_wrapped, rounds.cpu_bare
    ratios = [b / a for a, b in zip(wrapped, bare)]
    controls = [b / c for c, b in zip(control, bare)]
    return Throughput(
        control_ratio=median(controls),
        control_min=min(controls),
        control_max=max(controls),
        cpu_ratio=median([b / a for a, b in zip(cpu_a, cpu_b)]),
        wrapped_cpu_us=median(cpu_a) / n * 1e6,
        bare_cpu_us=median(cpu_b) / n * 1e6,
        best_ratio=min(bare) / min(wrapped),
        throughput_ratio=median(ratios),
        ratio_min=min(ratios),
        ratio_max=max(ratios),
        wrapped_us=median(wrapped) / n * 1e6,
        bare_us=median(bare) / n * 1e6,
        wrapped_rps=n / median(wrapped),
        bare_rps=n / median(bare),
    )
