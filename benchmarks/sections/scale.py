"""7. Scale: many host directories, one request each; linear in time and memory, and flat once
``max_hosts`` hosts are cached."""

from __future__ import annotations

import dataclasses
import time

import httpx

import dockercerts

from ..material import WILDCARD, write_host
from ..measure import settled_rss_kb
from ..section import Results, Row, Run, Section
from ..server import ServerSpec, served
from ..transports import LoopbackTransport, client, get_ok
from ..trust_env import ENV_LABELS


@dataclasses.dataclass(frozen=True)
class Knobs:
    hosts: int
    # SSL_CERT_FILE=other bundle: each host parses it (~25 ms, ~0.8 MB)
    hosts_bundle: int
    bounded: int  # the max_hosts of the bounded runs
    chunk: int
    max_hosts: int = 0  # this run's


@dataclasses.dataclass(frozen=True)
class Chunk:
    hosts: int  # done so far
    ms_per_host: float
    rss_kb: int
    cached_hosts: int


@dataclasses.dataclass(frozen=True)
class Scale:
    hosts: int
    max_hosts: int
    source: str
    base_rss_kb: int
    chunks: tuple[Chunk, ...]


def plan(knobs: Knobs) -> list[Run[Knobs]]:
    runs = []
    for mode, hosts in (("set", knobs.hosts), ("bundle", knobs.hosts_bundle)):
        for max_hosts in (hosts, knobs.bounded):
            runs.append(
                Run(
                    dataclasses.replace(knobs, hosts=hosts, max_hosts=max_hosts),
                    key=f"{mode}, max_hosts={max_hosts}",
                    env=mode,
                    note=f"  scale: {ENV_LABELS[mode]}, max_hosts={max_hosts}",
                )
            )
    return runs


def _rss_kb() -> int:
    rss = settled_rss_kb()
    if rss is None:
        raise RuntimeError("no resident memory figure here (it comes from /proc/self/status)")
    return rss


def measure(knobs: Knobs) -> Scale:
    hosts, max_hosts, chunk = knobs.hosts, knobs.max_hosts, knobs.chunk
    spec = ServerSpec(names=(WILDCARD,), max_workers=16)
    with served(spec) as (srv, tmp):
        root = tmp / "certs.d"
        names = [f"h{i:04d}.bench.test:{srv.port}" for i in range(hosts)]
        for name in names:
            write_host(root, name, srv.pki, pairs=1)
        with client(httpx.HTTPTransport(verify=srv.pki.bare_context())) as c:
            get_ok(c, f"https://127.0.0.1:{srv.port}/v2/", 3)
        transport = LoopbackTransport(port=srv.port, root=root, max_hosts=max_hosts)
        chunks = []
        base_rss = _rss_kb()
        with client(transport) as c:
            # Connection: close so that 1,000 hosts do not hold 1,000 server threads.
            headers = {"Connection": "close"}
            for offset in range(0, hosts, chunk):
                start = time.perf_counter()
                for name in names[offset : offset + chunk]:
                    status = c.get(f"https://{name}/v2/", headers=headers).status_code
                    if status != 200:
                        raise RuntimeError(f"{name}: {status}")
                elapsed = time.perf_counter() - start
                srv.take()
                rss = _rss_kb()
                done = names[: offset + chunk]
                chunks.append(
                    Chunk(
                        hosts=len(done),
                        ms_per_host=elapsed / chunk * 1e3,
                        rss_kb=rss,
                        # A host still cached remembers its winner; an evicted one forgets.
                        cached_hosts=sum(
                            transport.winner(f"https://{name}/v2/") is not None for name in done
                        ),
                    )
                )
    return Scale(
        hosts=hosts,
        max_hosts=max_hosts,
        source=dockercerts.system_trust().source,
        base_rss_kb=base_rss,
        chunks=tuple(chunks),
    )


def _row(key: str, data: Scale) -> Row:
    chunks = data.chunks
    first, last = chunks[0], chunks[-1]
    mode, bound = key.split(", ", 1)
    figure = f"7. scale, {data.hosts} hosts, {ENV_LABELS[mode]}, {bound} (trust: {data.source})"
    note = f"{first.ms_per_host:.1f} -> {last.ms_per_host:.1f} ms/host"
    base = data.base_rss_kb
    if data.max_hosts < data.hosts:
        # Growth per host while the cache fills, then after it is full.
        full = next(c for c in chunks if c.cached_hosts >= data.max_hosts)
        filling = (full.rss_kb - base) / full.hosts
        after = (last.rss_kb - full.rss_kb) / max(1, last.hosts - full.hosts)
        flat = last.cached_hosts <= data.max_hosts and after <= 0.1 * filling
        return Row(
            figure,
            f"{filling:.0f} KiB/host until {full.hosts} hosts, then {after:.1f} KiB/host; "
            f"cache holds {last.cached_hosts} hosts",
            "flat once max_hosts are cached",
            "met" if flat else "missed",
            note,
        )
    middle = chunks[len(chunks) // 2 - 1]
    slope_first = (middle.rss_kb - base) / middle.hosts
    slope_second = (last.rss_kb - middle.rss_kb) / (last.hosts - middle.hosts)
    time_ratio = last.ms_per_host / first.ms_per_host
    memory_ratio = slope_second / slope_first if slope_first > 0 else float("nan")
    linear = 0.5 <= time_ratio <= 2 and 0.67 <= memory_ratio <= 1.5
    return Row(
        figure,
        f"time/host last/first chunk {time_ratio:.2f}x; RSS {slope_first:.0f} then "
        f"{slope_second:.0f} KiB/host ({memory_ratio:.2f}x)",
        "linear (ratios ~1)",
        "met" if linear else "missed",
        note,
    )


def rows(results: Results) -> list[Row]:
    return [_row(key, data) for key, data in results.runs(Scale).items()]


def details(results: Results) -> list[str]:
    runs = results.runs(Scale)
    if not runs:
        return []
    out = ["### 7. Scale (one request per host directory, `Connection: close`)", ""]
    for key, d in runs.items():
        mode, bound = key.split(", ", 1)
        out += [
            f"**{ENV_LABELS[mode]}, {bound}** (trust: {d.source}; RSS before: {d.base_rss_kb} KiB)",
            "",
            "| hosts done | ms per host (this chunk) | RSS KiB | hosts cached |",
            "|---|---|---|---|",
        ]
        out += [
            f"| {c.hosts} | {c.ms_per_host:.2f} | {c.rss_kb} | {c.cached_hosts} |" for c in d.chunks
        ]
        out.append("")
    return out


SECTION = Section(
    name="scale",
    number="7",
    result=Scale,
    full=Knobs(hosts=1000, hosts_bundle=300, bounded=100, chunk=100),
    quick=Knobs(hosts=300, hosts_bundle=150, bounded=100, chunk=50),
    measure=measure,
    rows=rows,
    details=details,
    runs=plan,
)
