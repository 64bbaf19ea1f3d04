"""1b. The wrapper's own cost per request, over an in-memory ``httpx.MockTransport``."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any, Callable

import httpx

from ..material import Pki, write_host
from ..measure import (
    OwnCosts,
    own_cost_details,
    own_cost_rows,
    own_costs,
    self_time_profile,
)
from ..section import Results, Row, Section
from ..transports import MockedAsyncTransport, MockedTransport, ok

TARGET_US = 3.0


@dataclasses.dataclass(frozen=True)
class Knobs:
    calls: int
    rounds: int


@dataclasses.dataclass(frozen=True)
class Wrapper(OwnCosts):
    pass


def measure(knobs: Knobs) -> Wrapper:
    calls, rounds = knobs.calls, knobs.rounds
    with tempfile.TemporaryDirectory(prefix="dockercerts-bench-") as tmp:
        root = Path(tmp) / "certs.d"
        write_host(root, "reg.bench.test:5000", Pki.local(Path(tmp) / "pki"), pairs=5)
        url = "https://reg.bench.test:5000/v2/"
        request = httpx.Request("GET", url)

        wrapped, bare = MockedTransport(root=root), httpx.MockTransport(ok)
        wrapped.handle_request(request).close()  # loads the host directory, settles the winner

        async def make_async() -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
            awrapped, abare = MockedAsyncTransport(root=root), httpx.MockTransport(ok)
            await (await awrapped.handle_async_request(request)).aclose()
            return awrapped.handle_async_request, abare.handle_async_request

        modes = own_costs(
            request, calls, rounds, (wrapped.handle_request, bare.handle_request), make_async
        )
        profile = self_time_profile(wrapped.handle_request, request, calls)
    return Wrapper(modes=modes, profile=profile, calls=calls, rounds=rounds)


def rows(results: Results) -> list[Row]:
    return own_cost_rows(
        results.one(Wrapper),
        "1b. wrapper's own cost per request, {kind} (over MockTransport)",
        lambda d: f"{d.cost_us:.2f} µs (bare MockTransport call {d.mock_us:.2f} µs)",
        TARGET_US,
        f"<= {TARGET_US:.0f} µs",
        "wrapped",
    )


def details(results: Results) -> list[str]:
    return own_cost_details(
        results.one(Wrapper),
        "1b. Wrapper's own cost",
        "dockercerts over MockTransport | bare MockTransport",
    )


SECTION = Section(
    name="wrapper",
    number="1b",
    result=Wrapper,
    # Many short rounds: a burst of other work on the machine spoils a few of them, and the
    # median of the per-round differences passes over those (15 x 20,000 spread 2.5-3.3 µs).
    full=Knobs(calls=2000, rounds=151),
    quick=Knobs(calls=1000, rounds=41),
    measure=measure,
    rows=rows,
    details=details,
)
