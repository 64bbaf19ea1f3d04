"""``dockercerts inspect``: Docker's report and its text.

The other runtimes' reports are in :mod:`.inspect_runtimes`.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import httpx

from ..diagnose import (
    ca_details_of,
    is_dir,
    near_misses,
    refused_folder_warnings,
)
from ..diagnose import root_state as diagnose_root_state
from ..errors import (
    CertsDirError,
)
from ..loader import HostCerts, load_dir
from ..locate import (
    current_platform,
    host_dir,
    is_image_reference,
)
from ..transport import docker_host_names
from .args import PORT_LIKE, SCHEMA, Report, classify, redact, resolve_root, trust_rule
from .inspect_runtimes import render_runtime, runtime_report
from .render import Cell, Style, day_iso, notes_and_near_misses, plural, refusal, table
from .reports import (
    ca_reports,
    error_report,
    file_reports,
    near_miss_reports,
    pair_report,
    warning_reports,
)

_ROLE_TEXT = {
    "ca": "CA root",
    "client-cert": "client cert",
    "client-key": "client key",
    "ignored": "ignored",
}


def inspect_report(
    argument: str,
    *,
    root: Optional[str] = None,
    platform: Optional[str] = None,
    trust: Optional[str] = None,
    now: Optional[datetime] = None,
    runtime: str = "docker",
    cert_dir: Optional[str] = None,
) -> Report:
    """Everything ``inspect`` knows about ``argument``, as the ``--json`` dict.

    ``runtime="podman"`` or ``"containerd"`` (or podman's ``cert_dir``): that runtime's
    report (:mod:`.inspect_runtimes`).
    """
    if runtime != "docker" or cert_dir is not None:
        return runtime_report(
            argument,
            runtime=runtime,
            root=root,
            cert_dir=cert_dir,
            platform=platform,
            trust=trust,
            now=now,
        )
    plat = platform or current_platform()
    kind, host = classify(argument)
    base = resolve_root(root, plat)
    directory = host_dir(host, root=base, platform=plat)
    rule = trust_rule(trust, plat)
    when = now or datetime.now(timezone.utc)
    notes = _notes(argument, kind, host, plat, base, directory, root is None)

    files = file_reports(directory)
    certs: Optional[HostCerts] = None
    error: Optional[Report] = None
    try:
        certs = load_dir(directory, platform=plat, trust=rule)
    except CertsDirError as exc:
        error = error_report(exc)
    exists = is_dir(directory)
    if certs is not None:
        cas = ca_reports(certs.ca_details, when)
        warnings = warning_reports(certs.warnings)
    else:
        cas = ca_reports(ca_details_of(directory), when)
        warnings = warning_reports(refused_folder_warnings(directory))
    root_state = diagnose_root_state(base)
    exit_code = 2 if error else 1 if warnings else 0
    return {
        "schema": SCHEMA,
        "command": "inspect",
        "runtime": "docker",
        "argument": redact(argument),
        "argument_kind": kind,
        "host": host,
        "platform": plat,
        "trust": rule,
        "uses_system_roots": certs.uses_system_roots if certs else None,
        "root": str(base),
        "root_exists": root_state == "directory",
        "root_state": root_state,
        "directory": str(directory),
        "directory_exists": exists,
        "notes": notes,
        "near_misses": near_miss_reports(near_misses(base, directory.name, host, plat, exists)),
        "files": files,
        "ca_certificates": cas,
        "pairs": [pair_report(p, when) for p in certs.pairs] if certs else [],
        "error": error,
        "warnings": warnings,
        "status": ("error", "warnings", "ok")[[2, 1, 0].index(exit_code)],
        "exit_code": exit_code,
    }


def _notes(
    argument: str,
    kind: str,
    host: str,
    platform: str,
    root: Path,
    directory: Path,
    default_root: bool,
) -> list[str]:
    notes = []
    text = argument.strip()
    # Only for dot-less names (reg:5000, localhost:5000): with a dot nobody means an image.
    if kind == "host" and ":" in text and "." not in text and is_image_reference(text):
        name, _, tag = text.partition(":")
        notes.append(
            f"read as a registry host, as 'docker login {text}' does (as an image reference "
            f"it would be the image {name}, tag {tag}, on Docker Hub)"
        )
    port = PORT_LIKE.match(text)
    if kind == "image" and port is not None and int(port.group(1)) > 65535:
        notes.append(
            f"read as the image {text.split(':')[0]}, tag {port.group(1)}, on Docker Hub: "
            f"{port.group(1)} cannot be a port (ports end at 65535); if you meant a "
            "registry, check the port"
        )
    if host == "docker.io":
        notes.append(
            "Docker Hub: Docker reads no certs.d folder for Docker Hub pulls and pushes; a "
            "mirror uses the folder of the mirror's host[:port]"
        )
    if kind == "url":
        url = httpx.URL(text)
        names = docker_host_names(url)
        dirs = [host_dir(n, root=root, platform=platform) for n in names]
        chosen = next((d for d in dirs if is_dir(d)), dirs[0])
        if chosen != directory:
            notes.append(f"dockercerts.Transport, given this URL, reads {chosen}")
    if default_root and platform != current_platform():
        notes.append(f"the {platform} root does not exist here: pass --root to read a copy")
    return notes


def render_inspect(report: Report, style: Style) -> list[str]:
    if report.get("runtime", "docker") != "docker":
        return render_runtime(report, style)
    lines = [
        style("bold", f"dockercerts inspect {report['argument']}")
        + f"  ({_KIND_TEXT[report['argument_kind']]} -> {report['host']})"
    ]
    root_text = {
        "directory": "",
        "missing": "  (does not exist)",
        "not-a-directory": "  (not a directory)",
        "unreadable": "  (cannot be read)",
    }[report.get("root_state", "directory" if report["root_exists"] else "missing")]
    root_state = style("yellow", root_text) if root_text else ""
    if report["directory_exists"]:
        dir_state = ""
    elif report["error"] or root_text:
        dir_state = ""  # the root's state, or the error below, says what is wrong
    else:
        dir_state = style("yellow", "  (missing: system roots, no client certificate)")
    trust = (
        "system roots + the .crt files (merge)"
        if report["trust"] == "merge"
        else "only the .crt files; the system roots when there is none (replace)"
    )
    lines += table(
        [
            ["root", report["root"] + root_state],
            ["directory", report["directory"] + dir_state],
            ["platform", f"{report['platform']}; trust: {trust}"],
        ],
        style,
    )
    lines += notes_and_near_misses(report, style, "Near misses under the root", "name")

    if report["files"]:
        lines += ["", style("bold", "Files, in Docker's order")]
        rows: list[list[Cell]] = []
        for entry in report["files"]:
            role = _ROLE_TEXT[entry["role"]]
            extra = []
            if entry["kind"] != "file":
                extra.append(entry["kind"])
            if entry["link"] is not None:
                extra.append(f"-> {entry['link']}")
            rows.append(
                [
                    entry["name"],
                    ("dim", role) if entry["role"] == "ignored" else role,
                    " ".join(extra),
                ]
            )
        lines += table(rows, style)

    if report["ca_certificates"]:
        lines += ["", style("bold", "CA certificates (.crt)")]
        rows = []
        for ca in report["ca_certificates"]:
            expiry: Cell = f"expires {day_iso(ca['not_after'])}"
            if ca["validity"] == "expired":
                expiry = ("red", f"EXPIRED {day_iso(ca['not_after'])}")
            kind = "root" if ca["self_signed"] else "intermediate" if ca["is_ca"] else "not a CA"
            rows.append([ca["file"], ca["subject"], kind, expiry])
        lines += table(rows, style)

    if report["pairs"]:
        lines += ["", style("bold", "Client certificates, in the order they are tried")]
        rows = [["#", "pair", "subject", "issuer", "key", "validity", "chain"]]
        for number, pair in enumerate(report["pairs"], 1):
            validity: Cell = f"until {day_iso(pair['not_after'])}"
            if pair["validity"] == "expired":
                validity = ("red", f"EXPIRED {day_iso(pair['not_after'])}")
            elif pair["validity"] == "not-yet-valid":
                validity = ("yellow", f"from {day_iso(pair['not_before'])}")
            n = pair["chain_length"]
            chain = "leaf only" if n == 1 else f"leaf + {plural(n - 1, 'intermediate')}"
            rows.append(
                [
                    str(number),
                    pair["name"],
                    pair["subject"],
                    pair["issuer"],
                    pair["key_type"],
                    validity,
                    chain,
                ]
            )
        lines += table(rows, style)
    elif report["directory_exists"] and not report["error"]:
        lines += ["", "  No client certificate: connections send none."]

    lines += refusal(report, style)

    if report["warnings"]:
        lines += ["", style("bold", "Warnings")]
        for warning in report["warnings"]:
            lines.append(
                f"  {style('yellow', '!')} {Path(warning['path']).name}: "
                f"{warning['message']}  [{warning['code']}]"
            )
            lines.append(f"    fix: {warning['fix']}")

    summary = {
        0: style("green", "OK: Docker would load this directory as it is"),
        1: style("yellow", f"{plural(len(report['warnings']), 'warning')}"),
        2: style("red", "Docker would fail"),
    }[report["exit_code"]]
    lines += ["", f"Result: {summary} (exit {report['exit_code']})"]
    return lines


_KIND_TEXT = {"host": "registry host", "url": "URL", "image": "image reference"}
