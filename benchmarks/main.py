"""The command line behind ``benchmarks/run.py``: run the chosen sections, each run in a fresh
child process, then write the report.

A child process per run keeps trust decisions cached per process, resident memory and
``SSL_CERT_FILE``/``SSL_CERT_DIR`` under control. The same script serves the children:
``--child SECTION --config KNOBS`` measures and prints the result as JSON on its last line;
``--serve SPEC`` is a section's TLS server (``benchmarks/server.py``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional, Union

from . import ENTRY, RESULTS
from .measure import log
from .report import Meta, command_line, evaluate, machine, report, table
from .section import Failure, Results, Row, Run, Section
from .sections import REGISTRY, SECTIONS
from .server import serve
from .trust_env import ssl_env
from .typed import from_json, to_json

TITLE = "dockercerts benchmarks (issue 6): what the transport costs once warm, and when cold."
CHILD_TIMEOUT = 480.0  # a section that overruns is stopped and reported as FAILED


def run_child(
    section: Section[Any, Any], run: Run[Any], env: Optional[dict[str, str]] = None
) -> Union[object, Failure]:
    """One run of a section in a fresh process: its result, or why there is none."""
    command = [
        sys.executable,
        str(ENTRY),
        "--child",
        section.name,
        "--config",
        json.dumps(to_json(run.knobs)),
    ]
    try:
        proc = subprocess.run(
            command, env=env, stdout=subprocess.PIPE, text=True, timeout=CHILD_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        log(f"  {section.name}: no result after {CHILD_TIMEOUT:.0f} s, stopped")
        return Failure(f"no result after {CHILD_TIMEOUT:.0f} s (stopped)")
    if proc.returncode != 0:
        return Failure(f"the section's process failed (exit {proc.returncode}; see its output)")
    result: object = from_json(section.result, json.loads(proc.stdout.strip().splitlines()[-1]))
    return result


def collect(
    sections: Sequence[Section[Any, Any]], quick: bool, workdir: Path
) -> tuple[Results, list[Row], dict[str, Any]]:
    """Every run of the sections: the results, a FAILED row for each run without one, and
    everything as JSON (``--json``)."""
    results, failed, raw = Results(), [], {}
    for section in sections:
        started = time.monotonic()
        log(f"[{section.name}]")
        for run in section.plan(quick):
            if run.note:
                log(run.note)
            env = None if run.env is None else ssl_env(run.env, workdir)
            outcome = run_child(section, run, env)
            if isinstance(outcome, Failure):
                where = (
                    f"{section.name}: the whole section"
                    if run.key is None
                    else f"{section.name}, {run.key}"
                )
                failed.append(Row(where, outcome.error, "", "FAILED"))
            else:
                results.add(run.key, outcome)
            if run.key is None:
                raw[section.name] = to_json(outcome)
            else:
                raw.setdefault(section.name, {})[run.key] = to_json(outcome)
        log(f"  ({time.monotonic() - started:.0f} s)")
    return results, failed, raw


def child(name: str, config: str) -> None:
    section = SECTIONS[name]
    knobs = from_json(type(section.full), json.loads(config))
    print(json.dumps(to_json(section.measure(knobs))), flush=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    names = tuple(SECTIONS)
    parser = argparse.ArgumentParser(description=TITLE)
    parser.add_argument("--quick", action="store_true", help="fewer rounds, smaller counts")
    parser.add_argument(
        "--only", default=",".join(names), help=f"comma-separated subset of {names}"
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help="where to write the report")
    parser.add_argument("--json", type=Path, help="also write the raw results as JSON")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve)
        return 0
    if args.child:
        child(args.child, args.config)
        return 0
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(only) - set(names))
    if unknown:
        parser.error(f"unknown sections {unknown}; choose from {names}")
    load_start = " ".join(f"{x:.2f}" for x in os.getloadavg())
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="dockercerts-bench-") as workdir:
        chosen = [section for section in REGISTRY if section.name in only]
        results, failed, raw = collect(chosen, args.quick, Path(workdir))
    rows = evaluate(REGISTRY, results) + failed
    meta = Meta(
        command=command_line(),
        quick=args.quick,
        date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        elapsed=time.monotonic() - started,
        load_start=load_start,
        load_end=" ".join(f"{x:.2f}" for x in os.getloadavg()),
        machine=machine(),
    )
    print(table(rows))
    args.output.write_text(report(REGISTRY, results, rows, meta))
    log(f"wrote {args.output} ({meta.elapsed:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(raw, indent=1))
    return 1 if any(r.verdict == "FAILED" for r in rows) else 0
