"""4. One context with system trust: ``docker_context(system=True)`` and a real ``HostCerts``
candidate against ``ssl.create_default_context()``, under each trust setup."""

from __future__ import annotations

import dataclasses
import os
import ssl
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

import dockercerts

from ..material import Pki, write_host
from ..measure import CPU, interleaved, median, paired, settled_rss_kb
from ..section import Results, Row, Section
from ..trust_env import ENV_LABELS, each_trust_env, env_is_platform_store

TARGET = 0.05
# The builders, in the order of the details' columns.
KINDS = ("create_default_context", "docker_context", "candidate", "default_with_pair", "pair_only")


@dataclasses.dataclass(frozen=True)
class Knobs:
    calls: int
    rounds: int
    memory: int  # contexts kept per builder to measure resident memory


@dataclasses.dataclass(frozen=True)
class Context:
    env_is_platform_store: bool
    source: str
    cafile: Optional[str]
    capath: Optional[str]
    ssl_cert_file: Optional[str]
    ssl_cert_dir: Optional[str]
    decide_ms: float
    ms: dict[str, float]  # by builder (KINDS)
    ratio: dict[str, float]  # against create_default_context
    candidate_vs_default_with_pair: float
    kb_per_context: dict[str, Optional[float]]


def _shown(path: Optional[str]) -> Optional[str]:
    """A path for the report: the run's own files (in a temporary folder) by name only."""
    if path and Path(path).is_relative_to(tempfile.gettempdir()):
        return f"<tmp>/{Path(path).name}"
    return path


def measure(knobs: Knobs) -> Context:
    calls, rounds = knobs.calls, knobs.rounds
    start = time.perf_counter()
    trust = dockercerts.system_trust()
    decide_ms = (time.perf_counter() - start) * 1e3
    with tempfile.TemporaryDirectory(prefix="dockercerts-bench-") as tmp:
        root = Path(tmp) / "certs.d"
        folder = write_host(root, "reg.bench.test:5000", Pki.local(Path(tmp) / "pki"), pairs=5)
        certs = dockercerts.load_dir(folder)

        def fresh_candidate() -> ssl.SSLContext:
            # A HostCerts with an empty candidate cache: the context is built, not reused.
            copy = dataclasses.replace(certs)
            object.__setattr__(copy, "_candidates", [])
            return copy.candidates()[0].context

        def default_with_pair() -> ssl.SSLContext:
            # What a bare client presenting the same certificate builds.
            context = ssl.create_default_context()
            context.load_cert_chain(certs.pairs[0].cert, certs.pairs[0].key)
            return context

        def pair_only() -> ssl.SSLContext:
            # The client pair alone, in an empty context: what presenting a certificate costs.
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.load_cert_chain(certs.pairs[0].cert, certs.pairs[0].key)
            return context

        builders: dict[str, Callable[[], ssl.SSLContext]] = {
            "create_default_context": ssl.create_default_context,
            "docker_context": lambda: dockercerts.docker_context(system=True),
            "candidate": fresh_candidate,
            "default_with_pair": default_with_pair,
            "pair_only": pair_only,
        }

        def per_call(build: Callable[[], ssl.SSLContext]) -> Callable[[], float]:
            def run() -> float:
                begin = CPU()
                for _ in range(calls):
                    build()
                return (CPU() - begin) / calls

            return run

        for build in builders.values():
            build()
        # Memory first, before the timing loops leave freed memory for malloc to reuse; and
        # every context is kept until the end, so no builder reuses another's memory.
        memory: dict[str, Optional[float]] = {}
        kept: list[ssl.SSLContext] = []
        for name, build in builders.items():
            before = settled_rss_kb()
            kept += [build() for _ in range(knobs.memory)]
            after = settled_rss_kb()
            count = knobs.memory
            memory[name] = None if before is None or after is None else (after - before) / count
        del kept
        samples = dict(zip(builders, interleaved(rounds, *map(per_call, builders.values()))))
    base = samples["create_default_context"]
    return Context(
        env_is_platform_store=env_is_platform_store(),
        source=trust.source,
        cafile=_shown(trust.cafile),
        capath=trust.capath,
        ssl_cert_file=os.environ.get("SSL_CERT_FILE"),
        ssl_cert_dir=os.environ.get("SSL_CERT_DIR"),
        decide_ms=decide_ms,
        ms={name: median(values) * 1e3 for name, values in samples.items()},
        ratio={name: paired(values, base) for name, values in samples.items()},
        candidate_vs_default_with_pair=paired(samples["candidate"], samples["default_with_pair"]),
        kb_per_context=memory,
    )


def _why(mode: str, name: str, data: Context, met: bool) -> str:
    ms = data.ms
    if mode == "unset" and not met and name == "candidate":
        return (
            f"{ms['pair_only']:.2f} ms of the candidate's {ms['candidate']:.2f} ms "
            "is an empty SSLContext plus load_cert_chain of the client pair "
            "(OpenSSL decoding the key), which a bare client presenting the same "
            "certificate pays too (vs create_default_context() + load_cert_chain: "
            f"{data.candidate_vs_default_with_pair:.3f}x); the trust alone "
            f"costs {data.ratio['docker_context']:.3f}x."
        )
    if mode != "unset" and name == "docker_context" and data.source == "environment":
        return (
            "SSL_CERT_FILE names a bundle that is not the platform's own, and its "
            "certificates can only be honoured by loading them: OpenSSL parses the "
            "whole file for every context, as create_default_context() does."
        )
    if mode != "unset" and name == "docker_context" and data.env_is_platform_store:
        return (
            "The variables name the platform's own store (the same files as "
            "OpenSSL's defaults), so the lazy hashed folder is used as when unset."
        )
    return ""


def rows(results: Results) -> list[Row]:
    out = []
    for mode, data in results.runs(Context).items():
        ms = data.ms
        for name in ("docker_context", "candidate"):
            ratio = data.ratio[name]
            met = ratio <= TARGET
            if mode == "unset":
                target_text = f"<= {TARGET:.2f}x"
                verdict = "met" if met else f"missed by {(ratio / TARGET - 1) * 100:.0f}%"
            else:
                target_text, verdict = "(report)", "info"
            note = ""
            if name == "candidate":
                note = (
                    "vs create_default_context() + the same load_cert_chain: "
                    f"{data.candidate_vs_default_with_pair:.3f}x"
                )
            out.append(
                Row(
                    f"4. context cost, {name}, {ENV_LABELS[mode]} (trust: {data.source})",
                    f"{ratio:.3f}x ({ms[name]:.2f} vs {ms['create_default_context']:.2f} ms)",
                    target_text,
                    verdict,
                    note,
                    _why(mode, name, data, met),
                )
            )
    return out


def details(results: Results) -> list[str]:
    runs = results.runs(Context)
    if not runs:
        return []
    out = [
        "### 4. Context cost (each case in a fresh process with the environment prepared)",
        "",
        "| environment | trust (cafile / capath) | create_default_context | "
        "docker_context(system=True) | HostCerts candidate | create_default_context + "
        "load_cert_chain | empty SSLContext + load_cert_chain | KiB per context (in the "
        "same order) | trust decision |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, d in runs.items():
        kb = d.kb_per_context
        kbs = " / ".join("?" if kb[k] is None else f"{kb[k]:.0f}" for k in KINDS)
        cells = " | ".join(f"{d.ms[k]:.2f} ms ({d.ratio[k]:.3f}x)" for k in KINDS)
        out.append(
            f"| {ENV_LABELS[mode]} | {d.source} ({d.cafile} / {d.capath}) | "
            f"{cells} | {kbs} | "
            f"{d.decide_ms:.1f} ms once |"
        )
    out += [
        "",
        "CPU time of this thread per context, median of interleaved rounds; ratios against "
        "`ssl.create_default_context()` in the same process.",
        "",
    ]
    return out


SECTION = Section(
    name="context",
    number="4",
    result=Context,
    full=Knobs(calls=4, rounds=9, memory=30),
    quick=Knobs(calls=2, rounds=5, memory=10),
    measure=measure,
    rows=rows,
    details=details,
    runs=each_trust_env,
)
