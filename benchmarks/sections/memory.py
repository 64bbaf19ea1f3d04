"""6. Resident memory per host (5 pairs) against bare transports, one per host, and its growth
over many requests; with this machine's trust setup and with another bundle."""

from __future__ import annotations

import dataclasses
import gc
from typing import Any, Optional

import httpx

import dockercerts

from ..material import WILDCARD, write_host
from ..measure import settled_rss_kb
from ..section import Results, Row, Run, Section
from ..server import ServerSpec, served
from ..transports import LoopbackTransport, client, contexts_built, get_ok, resolve_to_loopback
from ..trust_env import ENV_LABELS
from .context import Context

VARIANTS = ("dockercerts", "bare")


@dataclasses.dataclass(frozen=True)
class Knobs:
    hosts: int
    requests: int
    variant: str = "dockercerts"


@dataclasses.dataclass(frozen=True)
class Figures:
    source: str
    hosts: int
    requests: int
    kb_per_host: float
    growth_kb: int
    trace: tuple[tuple[int, int], ...]  # (requests done, RSS KiB) after each quarter
    objects_per_host: float
    objects_growth: int
    contexts_per_host: Optional[float]


@dataclasses.dataclass(frozen=True)
class Memory:
    variant: str
    figures: Optional[Figures]  # None without /proc


def plan(knobs: Knobs) -> list[Run[Knobs]]:
    # Growth is followed over the full count in this machine's environment; the other bundle
    # is there for the per-host figure.
    counts = {"set": knobs.requests, "bundle": knobs.requests // 5}
    return [
        Run(
            dataclasses.replace(knobs, variant=variant, requests=counts[mode]),
            key=f"{variant}, {mode}",
            env=mode,
        )
        for mode in ("set", "bundle")
        for variant in VARIANTS
    ]


def measure(knobs: Knobs) -> Memory:
    hosts, requests, variant = knobs.hosts, knobs.requests, knobs.variant
    spec = ServerSpec(wrong=4, names=(WILDCARD,), max_workers=hosts + 8)
    with served(spec) as (srv, tmp):
        root = tmp / "certs.d"
        names = [f"m{i:03d}.bench.test:{srv.port}" for i in range(hosts)]
        for name in names:
            write_host(root, name, srv.pki, pairs=5)
        urls = [f"https://{name}/v2/" for name in names]
        # Warm-up outside the figure: imports, OpenSSL and httpx lazy state.
        with client(httpx.HTTPTransport(verify=srv.pki.bare_context())) as c:
            get_ok(c, f"https://127.0.0.1:{srv.port}/v2/", 3)
        base_rss = settled_rss_kb()
        base_objects = len(gc.get_objects())
        if variant == "dockercerts":
            transport: Any = LoopbackTransport(port=srv.port, root=root)
            c = client(transport)
        else:
            mounts = {
                f"https://{name}": resolve_to_loopback(
                    httpx.HTTPTransport(verify=srv.pki.bare_context()), srv.port
                )
                for name in names
            }
            c = httpx.Client(mounts=mounts, trust_env=False)
        with c:
            for url in urls:
                get_ok(c, url, 5)
            for _ in range(max(1, requests // 10 // len(urls))):
                for url in urls:  # allocator and pool warm-up, not counted as growth
                    get_ok(c, url, 1)
            srv.take()
            warm_rss = settled_rss_kb()
            warm_objects = len(gc.get_objects())
            trace = [(0, warm_rss)]
            step = requests // 4
            done = 0
            while done < requests:
                for _ in range(step // len(urls)):
                    for url in urls:
                        get_ok(c, url, 1)
                done += (step // len(urls)) * len(urls)
                srv.take()
                trace.append((done, settled_rss_kb()))
            after_objects = len(gc.get_objects())
            built = contexts_built(transport) if variant == "dockercerts" else hosts
    if base_rss is None or warm_rss is None:
        return Memory(variant, None)
    known = tuple((count, rss) for count, rss in trace if rss is not None)
    if len(known) < len(trace):
        return Memory(variant, None)
    return Memory(
        variant,
        Figures(
            source=dockercerts.system_trust().source,
            hosts=hosts,
            requests=done,
            kb_per_host=(warm_rss - base_rss) / hosts,
            growth_kb=known[-1][1] - warm_rss,
            trace=known,
            objects_per_host=(warm_objects - base_objects) / hosts,
            objects_growth=after_objects - warm_objects,
            contexts_per_host=None if built is None else built / hosts,
        ),
    )


def _rows(mode: str, mine: Figures, bare: Figures, context: Optional[Context]) -> list[Row]:
    per_context = None if context is None else context.kb_per_context.get("candidate")
    why = ""
    if mine.contexts_per_host is not None:
        count = mine.contexts_per_host
        why = f"{count:.0f} candidate context{'' if count == 1 else 's'} built per host"
        if per_context:
            why += f", about {per_context:.0f} KiB each with this trust (4)"
        why += "."
    # The first quarter still settles the allocator (both variants step once); growth after
    # it is the leak test: a few KiB of RSS noise at most, no new objects.
    trace = mine.trace
    later = trace[-1][1] - trace[1][1]
    bare_later = bare.trace[-1][1] - bare.trace[1][1]
    flat = later <= 64 and mine.objects_growth < 100
    return [
        Row(
            f"6. memory per host (5 pairs), {ENV_LABELS[mode]} (trust: {mine.source})",
            f"{mine.kb_per_host:.0f} KiB vs bare {bare.kb_per_host:.0f} KiB "
            f"({mine.kb_per_host / bare.kb_per_host:.2f}x)",
            "(report)",
            "info",
            f"{mine.objects_per_host:.0f} Python objects per host",
            why,
        ),
        Row(
            f"6. memory growth over {mine.requests} requests, {ENV_LABELS[mode]}",
            f"{later:+d} KiB over the last {trace[-1][0] - trace[1][0]} "
            f"({mine.growth_kb:+d} KiB in all), {mine.objects_growth:+d} objects "
            f"(bare {bare_later:+d} / {bare.growth_kb:+d} KiB, "
            f"{bare.objects_growth:+d} objects)",
            "no growth",
            "met" if flat else "missed",
            f"RSS after each quarter: {' / '.join(str(v) for _, v in trace)} KiB",
        ),
    ]


def rows(results: Results) -> list[Row]:
    runs, contexts = results.runs(Memory), results.runs(Context)
    out = []
    for mode in ("set", "bundle"):
        mine, bare = runs.get(f"dockercerts, {mode}"), runs.get(f"bare, {mode}")
        if mine and mine.figures and bare and bare.figures:
            out += _rows(mode, mine.figures, bare.figures, contexts.get(mode))
    return out


def details(results: Results) -> list[str]:
    runs = results.runs(Memory)
    if not runs:
        return []
    out = [
        "### 6. Memory (RSS from /proc/self/status after gc.collect())",
        "",
        "| variant, environment | trust | KiB per host | objects per host | "
        "RSS after 0 / 25 / 50 / 75 / 100% of the requests (KiB) | objects growth |",
        "|---|---|---|---|---|---|",
    ]
    for key, run in runs.items():
        d = run.figures
        if d is None:
            out.append(f"| {key} | n/a (no /proc) | | | | |")
            continue
        trace = " / ".join(str(v) for _, v in d.trace)
        out.append(
            f"| {key} | {d.source} | {d.kb_per_host:.0f} | "
            f"{d.objects_per_host:.0f} | {trace} | {d.objects_growth:+d} |"
        )
    out += [
        "",
        "Per host: one client with the transport serving N host directories (1 CA + 5 pairs"
        ", right first) vs N bare `HTTPTransport`s (`create_default_context()` + CA + pair) "
        "mounted on one client; both keep one connection per host open.",
        "",
    ]
    return out


SECTION = Section(
    name="memory",
    number="6",
    result=Memory,
    full=Knobs(hosts=20, requests=10000),
    quick=Knobs(hosts=10, requests=2000),
    measure=measure,
    rows=rows,
    details=details,
    runs=plan,
)
