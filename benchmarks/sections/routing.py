"""1c. containerd routing's own cost per request on a sticky endpoint (issue 14).

Two ``runtime="containerd"`` wrappers over the same in-memory inner transport, the same blob
request, steady (every endpoint's winner known): ``routed`` reads a ``hosts.toml`` with a
pull mirror in front of the server, so each request is mapped to its operation and rewritten
for the mirror (URL, ``Host``, ``?ns=``); ``plain`` reads the same pair from a folder without
``hosts.toml`` (nothing routed, the wrapper's cost of 1b). The difference is routing's own.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any, Callable

import httpx

from dockercerts.testing import CA

from ..measure import (
    OwnCosts,
    own_cost_details,
    own_cost_rows,
    own_costs,
    self_time_profile,
)
from ..section import Results, Row, Section
from ..transports import MockedAsyncTransport, MockedTransport

TARGET_US = 3.0

HOST = "reg.bench.test:5000"
MIRROR = "https://mirror.bench.test:5001/v2"
URL = f"https://{HOST}/v2/team/app/blobs/sha256:" + "a" * 64


@dataclasses.dataclass(frozen=True)
class Knobs:
    calls: int
    rounds: int


@dataclasses.dataclass(frozen=True)
class Routing(OwnCosts):
    """``modes``: routed over not routed."""


def _folders(tmp: Path) -> tuple[Path, Path]:
    """``routed`` (a pull mirror, then the server) and ``plain`` (no hosts.toml): one client
    pair at each endpoint, so every winner is known and the steady path is taken."""
    routed, plain = tmp / "routed", tmp / "plain"
    leaf = CA(name="bench routing CA").issue_client("bench")
    for folder in (routed / HOST, plain / HOST):
        leaf.write(folder / "client.cert", folder / "client.key")
    (routed / HOST / "hosts.toml").write_text(
        f'server = "https://{HOST}"\nclient = [["client.cert", "client.key"]]\n'
        f'[host."{MIRROR[: -len("/v2")]}"]\ncapabilities = ["pull"]\n'
        'client = [["client.cert", "client.key"]]\n'
    )
    return routed, plain


def _check(response: httpx.Response, endpoint: object) -> None:
    """The routed transport sends to the mirror, the plain one where the URL says."""
    attempts = response.extensions["dockercerts.attempts"]
    if [a.endpoint for a in attempts] != [endpoint]:
        raise RuntimeError(f"expected one attempt at {endpoint}, got {attempts}")


def measure(knobs: Knobs) -> Routing:
    calls, rounds = knobs.calls, knobs.rounds
    request = httpx.Request("GET", URL)
    with tempfile.TemporaryDirectory(prefix="dockercerts-bench-routing-") as tmp:
        routed_root, plain_root = _folders(Path(tmp))
        options: dict[str, Any] = {"runtime": "containerd", "refresh": 3600}
        routed = MockedTransport(root=routed_root, **options)
        plain = MockedTransport(root=plain_root, **options)
        for transport, endpoint in ((routed, MIRROR), (plain, None)):
            transport.handle_request(request).close()  # loads the folder, settles the winners
            _check(transport.handle_request(request), endpoint)

        async def make_async() -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
            arouted = MockedAsyncTransport(root=routed_root, **options)
            aplain = MockedAsyncTransport(root=plain_root, **options)
            for transport, endpoint in ((arouted, MIRROR), (aplain, None)):
                await (await transport.handle_async_request(request)).aclose()
                _check(await transport.handle_async_request(request), endpoint)
            return arouted.handle_async_request, aplain.handle_async_request

        modes = own_costs(
            request, calls, rounds, (routed.handle_request, plain.handle_request), make_async
        )
        profile = self_time_profile(routed.handle_request, request, calls)
        routed.close()
        plain.close()
    return Routing(modes=modes, profile=profile, calls=calls, rounds=rounds)


def rows(results: Results) -> list[Row]:
    return own_cost_rows(
        results.one(Routing),
        "1c. containerd routing's own cost per request, sticky endpoint, {kind}",
        lambda d: (
            f"{d.cost_us:.2f} µs (not routed {d.mock_us:.2f} µs, routed {d.wrapped_us:.2f} µs)"
        ),
        TARGET_US,
        f"<= {TARGET_US:.0f} µs over 1b",
        "routed",
    )


def details(results: Results) -> list[str]:
    return own_cost_details(
        results.one(Routing),
        "1c. containerd routing's own cost, a blob GET sent to a pull mirror",
        "routed (hosts.toml: mirror, then server) | not routed (same pair, no hosts.toml)",
    )


SECTION = Section(
    name="routing",
    number="1c",
    result=Routing,
    full=Knobs(calls=2000, rounds=151),
    quick=Knobs(calls=1000, rounds=41),
    measure=measure,
    rows=rows,
    details=details,
)
