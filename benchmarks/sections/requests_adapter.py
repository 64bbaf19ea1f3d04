"""9. The requests adapter (issue 12): keep-alive throughput through
``dockercerts.requests.Adapter`` against a bare ``requests.Session`` with the right pair (and a
second one, the A/A control), and the adapter's own cost per request over a mocked urllib3
connection."""

from __future__ import annotations

import dataclasses
import ssl
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Optional

from ..material import Pki, write_host
from ..measure import (
    OwnCost,
    Rounds,
    Throughput,
    cpu_per_request,
    interleaved,
    log,
    own_cost,
    self_time_profile,
    shares,
    slices,
    slicing,
    throughput,
)
from ..section import Results, Row, Section
from ..server import ServerSpec, one_host
from .steady import CONCURRENT_TARGET

TARGET = 0.97  # steady state against a bare requests.Session with the right pair


@dataclasses.dataclass(frozen=True)
class Knobs:
    requests: int
    rounds: int
    calls: int
    call_rounds: int


@dataclasses.dataclass(frozen=True)
class AdapterMode:
    throughput: Throughput
    new_connections: int  # accepted by the server in the timed runs, all variants
    warm_connections: int


@dataclasses.dataclass(frozen=True)
class MockedCost:
    cost: OwnCost
    profile: tuple[tuple[str, float], ...]
    calls: int
    rounds: int


@dataclasses.dataclass(frozen=True)
class RequestsAdapter:
    requests: int
    rounds: int
    modes: dict[str, AdapterMode]  # "sync", "8 threads"
    mocked: MockedCost
    requests_version: str


def _session(root: Optional[Path] = None, pki: Optional[Pki] = None) -> Any:
    """A ``requests.Session`` ignoring the environment: through ``dockercerts.requests.Adapter``
    over ``root``, or bare with ``pki``'s server CA and right pair (``verify=``, ``cert=``)."""
    import requests

    import dockercerts.requests

    session = requests.Session()
    session.trust_env = False
    if root is not None:
        session.mount("https://", dockercerts.requests.Adapter(root=root))
    elif pki is not None:
        session.verify = str(pki.folder / "server-ca.pem")
        session.cert = (str(pki.folder / "right.cert"), str(pki.folder / "right.key"))
    return session


def _mocked(root: Path) -> tuple[Any, Any]:
    """The adapter over candidates whose urllib3 pool answers at once (a mocked connection),
    and one such candidate alone: the difference is the adapter's own cost."""
    import urllib3

    import dockercerts.requests

    class Pool:
        """What ``HTTPAdapter.send`` asks of a urllib3 pool, answered from memory."""

        def urlopen(self, method: str, url: str, **kwargs: Any) -> urllib3.HTTPResponse:
            return urllib3.HTTPResponse(
                body=b"{}", headers={"Content-Length": "2"}, status=200, preload_content=False
            )

    pool = Pool()

    class Candidate(dockercerts.requests.CandidateAdapter):
        def get_connection_with_tls_context(self, *args: Any, **kwargs: Any) -> Any:
            return pool

    # The same pools (one connection, no retries) for both: only the adapter's work differs.
    alone = Candidate(
        ssl.create_default_context(), pool_connections=1, pool_maxsize=1, max_retries=0
    )
    adapter = dockercerts.requests.Adapter(
        root=root, inner=Candidate, pool_connections=1, pool_maxsize=1, max_retries=0
    )
    return adapter, alone


def _steady(knobs: Knobs) -> dict[str, AdapterMode]:
    n, rounds = knobs.requests, knobs.rounds
    warm = max(n // 4, 128)
    modes: dict[str, AdapterMode] = {}
    with one_host(ServerSpec(wrong=4, max_workers=32), pairs=5) as (srv, root, url):
        sessions = {
            "dockercerts": _session(root=root),
            "bare": _session(pki=srv.pki),
            "control": _session(pki=srv.pki),  # A/A: a second bare session
        }

        def get_n(session: Any, count: int) -> None:
            bad = sum(session.get(url).status_code != 200 for _ in range(count))
            if bad:
                raise RuntimeError(f"{bad} of {count} requests to {url} did not answer 200")

        def timed(fn: Callable[[], None], cpu: list[float]) -> Callable[[], float]:
            def run() -> float:
                start, cpu_start = time.perf_counter(), time.process_time()
                fn()
                cpu.append(time.process_time() - cpu_start)
                return time.perf_counter() - start

            return run

        with ThreadPoolExecutor(8) as pool:

            def shaped(mode: str, session: Any, count: int) -> Callable[[], None]:
                def threads() -> None:
                    for future in [pool.submit(get_n, session, k) for k in shares(count, 8)]:
                        future.result()

                return (lambda: get_n(session, count)) if mode == "sync" else threads

            for mode in ("sync", "8 threads"):
                log(f"  requests: steady, {mode}")
                for session in sessions.values():  # connections opened, winner settled
                    shaped(mode, session, warm)()
                opened = srv.take().connections
                cpu: dict[str, list[float]] = {name: [] for name in sessions}
                k = slices(n, mode)
                a, b, control = interleaved(
                    rounds * k,
                    *(timed(shaped(mode, s, n // k), cpu[name]) for name, s in sessions.items()),
                )
                timed_rounds = Rounds.of_slices(
                    a, b, control, cpu["dockercerts"], cpu["bare"], per_round=k
                )
                figures = throughput(timed_rounds, n)
                modes[mode] = AdapterMode(figures, srv.take().connections, opened)
        for session in sessions.values():
            session.close()
    return modes


def measure(knobs: Knobs) -> RequestsAdapter:
    import requests

    modes = _steady(knobs)
    calls, call_rounds = knobs.calls, knobs.call_rounds
    with tempfile.TemporaryDirectory(prefix="dockercerts-bench-") as tmp:
        root = Path(tmp) / "certs.d"
        write_host(root, "reg.bench.test:5000", Pki.local(Path(tmp) / "pki"), pairs=5)
        adapter, alone = _mocked(root)
        request = requests.Request("GET", "https://reg.bench.test:5000/v2/").prepare()
        adapter.send(request).close()  # loads the host directory, settles the winner
        wrapped, bare = interleaved(
            call_rounds,
            cpu_per_request(adapter.send, request, calls),
            cpu_per_request(alone.send, request, calls),
        )
        mocked = MockedCost(
            cost=own_cost(wrapped, bare),
            profile=self_time_profile(adapter.send, request, calls),
            calls=calls,
            rounds=call_rounds,
        )
    return RequestsAdapter(
        requests=knobs.requests,
        rounds=knobs.rounds,
        modes=modes,
        mocked=mocked,
        requests_version=requests.__version__,
    )


def rows(results: Results) -> list[Row]:
    data = results.one(RequestsAdapter)
    if data is None:
        return []
    out = []
    for mode, figures in data.modes.items():
        d = figures.throughput
        target = TARGET if mode == "sync" else CONCURRENT_TARGET
        ratio = d.throughput_ratio
        out.append(
            Row(
                f"9. requests adapter, steady {mode} ({data.requests} GETs): throughput vs "
                "a bare requests.Session with the right pair",
                f"{ratio:.3f}x ({d.wrapped_us:.0f} vs {d.bare_us:.0f} µs/req)",
                f">= {target:.2f}x",
                "met" if ratio >= target else f"missed by {(target - ratio) * 100:.1f} points",
                f"rounds {d.ratio_min:.3f}..{d.ratio_max:.3f}; best-of "
                f"{d.best_ratio:.3f}x; client CPU {d.cpu_ratio:.3f}x; A/A control "
                f"{d.control_ratio:.3f}x; new connections while measured: "
                f"{figures.new_connections}",
                ""
                if ratio >= target
                else f"Two identical bare sessions in the same rounds came out at "
                f"{d.control_ratio:.3f}x (per round {d.control_min:.2f}.."
                f"{d.control_max:.2f}); client CPU per request {d.cpu_ratio:.3f}x of bare.",
            )
        )
    m = data.mocked
    top = ", ".join(f"{name} {share:.0f}%" for name, share in m.profile)
    out.append(
        Row(
            "9b. requests adapter's own cost per request (over a mocked urllib3 connection)",
            f"{m.cost.cost_us:.2f} µs (the candidate's HTTPAdapter alone {m.cost.mock_us:.2f} µs)",
            "(report)",
            "info",
            f"rounds {m.cost.cost_min_us:.2f}..{m.cost.cost_max_us:.2f} µs; self time: {top}",
        )
    )
    return out


def details(results: Results) -> list[str]:
    data = results.one(RequestsAdapter)
    if data is None:
        return []
    m = data.mocked
    out = [
        "### 9. The requests adapter (issue 12)",
        "",
        f"requests {data.requests_version}. Steady state: {data.requests} GETs per "
        f"round and variant, {data.rounds} rounds, {slicing(list(data.modes))}, "
        "against the same `MTLSServer` process, 5 pairs in the folder, the winner settled; "
        "baseline a bare `requests.Session` with `verify=` the server's CA and `cert=` the "
        "right pair, control a second such session (A/A). Both sessions ignore the "
        "environment (`trust_env=False`). 8 threads share one session.",
        "",
        "| mode | ratio | per round | µs/req adapter / bare | client CPU | A/A control |",
        "|---|---|---|---|---|---|",
    ]
    for mode, figures in data.modes.items():
        d = figures.throughput
        out.append(
            f"| {mode} | {d.throughput_ratio:.3f}x | {d.ratio_min:.3f}..{d.ratio_max:.3f}"
            f" | {d.wrapped_us:.0f} / {d.bare_us:.0f} | {d.cpu_ratio:.3f}x | "
            f"{d.control_ratio:.3f}x |"
        )
    out += [
        "",
        f"Own cost: `Adapter.send` over a candidate whose urllib3 pool answers from memory, "
        f"minus that candidate's `HTTPAdapter.send` alone (requests' own work: pool lookup, "
        f"`urlopen`, `build_response`), CPU time of this thread, {m.calls} calls a round, "
        f"median of {m.rounds} interleaved rounds: {m.cost.cost_us:.2f} µs "
        f"({m.cost.cost_min_us:.2f}..{m.cost.cost_max_us:.2f}) over {m.cost.mock_us:.2f} µs.",
        "",
    ]
    return out


SECTION = Section(
    name="requests",
    number="9",
    result=RequestsAdapter,
    full=Knobs(requests=2000, rounds=10, calls=2000, call_rounds=51),
    quick=Knobs(requests=500, rounds=3, calls=1000, call_rounds=21),
    measure=measure,
    rows=rows,
    details=details,
)
