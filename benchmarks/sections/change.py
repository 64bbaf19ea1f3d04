"""5. Change detection: what watching certs.d costs per request (``refresh=0`` and the
default 1 s), against a keep-alive request of the steady state (1)."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import httpx

from dockercerts.scan import snapshot

from ..material import Pki, write_host
from ..measure import CPU, gc_paused, interleaved, median
from ..section import Results, Row, Section
from ..transports import MockedTransport
from .steady import pooled

TARGET_PCT = 1.0


@dataclasses.dataclass(frozen=True)
class Knobs:
    calls: int
    rounds: int


@dataclasses.dataclass(frozen=True)
class Change:
    full_us: float  # refresh=0: a check on every request
    fast_us: float  # the default, when no check is due
    snapshot_us: float
    files: int
    refresh_s: float


def measure(knobs: Knobs) -> Change:
    """The per-request cost of watching certs.d: the same wrapped call with ``refresh=0``
    (check every request), the default (1 s) and a refresh that never comes, compared."""
    calls, rounds = knobs.calls, knobs.rounds
    with tempfile.TemporaryDirectory(prefix="dockercerts-bench-") as tmp:
        root = Path(tmp) / "certs.d"
        folder = write_host(root, "reg.bench.test:5000", Pki.local(Path(tmp) / "pki"), pairs=5)
        request = httpx.Request("GET", "https://reg.bench.test:5000/v2/")
        every = MockedTransport(root=root, refresh=0.0)
        default = MockedTransport(root=root)  # refresh=1.0
        never = MockedTransport(root=root, refresh=1e9)
        for transport in (every, default, never):
            transport.handle_request(request).close()

        def per_call(fn: Callable[[], Any], n: int) -> Callable[[], float]:
            def run() -> float:
                with gc_paused():
                    start = CPU()
                    for _ in range(n):
                        fn()
                    return (CPU() - start) / n

            return run

        full, fast, none, snap = interleaved(
            rounds,
            per_call(lambda: every.handle_request(request).close(), calls),
            per_call(lambda: default.handle_request(request).close(), calls * 20),
            per_call(lambda: never.handle_request(request).close(), calls * 20),
            per_call(lambda: snapshot(folder), calls),
        )
        files = len([n for n in os.listdir(folder) if n.endswith((".crt", ".cert", ".key"))])
    return Change(
        full_us=median([(a - b) * 1e6 for a, b in zip(full, none)]),
        fast_us=max(0.0, median([(a - b) * 1e6 for a, b in zip(fast, none)])),
        snapshot_us=median(snap) * 1e6,
        files=files,
        refresh_s=1.0,
    )


def rows(results: Results) -> list[Row]:
    change, steady = results.one(Change), pooled(results)
    # The figures are shares of a keep-alive request: without the steady state, none.
    if change is None or steady is None:
        return []
    keepalive_us = steady.modes["sync"].throughput.bare_us
    if not keepalive_us:
        return []
    full, fast = change.full_us, change.fast_us
    amortized = fast + full * (keepalive_us / 1e6) / change.refresh_s
    pct_default = amortized / keepalive_us * 100
    return [
        Row(
            "5. change detection, refresh=0 (every request)",
            f"{full:.1f} µs/req = {full / keepalive_us * 100:.2f}% of a keep-alive request",
            "(report)",
            "info",
            f"snapshot() of {change.files} files: {change.snapshot_us:.1f} µs",
        ),
        Row(
            "5. change detection, default (refresh=1 s)",
            f"{amortized:.2f} µs/req = {pct_default:.3f}% of a keep-alive request",
            f"<= {TARGET_PCT:.0f}%",
            "met" if pct_default <= TARGET_PCT else "missed",
            f"fast path {fast:.2f} µs + one {full:.0f} µs check per second",
        ),
    ]


def details(results: Results) -> list[str]:
    change = results.one(Change)
    if change is None:
        return []
    return [
        "### 5. Change detection (checked by the transport on every request)",
        "",
        "The same wrapped call over MockTransport with `refresh=0`, the default and "
        "`refresh=1e9` (never due); the differences are what watching certs.d costs.",
        "",
        f"- refresh=0: {change.full_us:.1f} µs per request (directory lookup and "
        f"`snapshot()` of {change.files} files, which alone takes "
        f"{change.snapshot_us:.1f} µs)",
        f"- refresh=1 s (default): {change.fast_us:.2f} µs per request when no check is "
        "due (below the noise when 0.00), plus one full check per second, spread over "
        "that second's requests",
        "",
    ]


SECTION = Section(
    name="change",
    number="5",
    result=Change,
    full=Knobs(calls=2000, rounds=9),
    quick=Knobs(calls=500, rounds=5),
    measure=measure,
    rows=rows,
    details=details,
)
