"""``dockercerts inspect --runtime podman|containerd``: the report and its text.

What the Docker report shows, per runtime: every root and folder name the runtime tried, in
its order, and which one won; near misses across roots (another spelling of the registry, a
folder shadowed by the one that won, since nothing is merged); for podman the files with
containers/image's rules; for containerd ``hosts.toml`` (or the loose files), every endpoint
with its TLS material, what was ignored, and ``skip_verify`` shown loudly. The report is a
plain dict (the ``--json`` output, documented in ``docs/cli.md``) rendered as text.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from .._layouts import Layout, layout
from .._nearmisses import runtime_near_misses, top_level_misses
from ..containerd import ContainerdHost, load_hosts
from ..diagnose import (
    ca_details_of,
    is_dir,
    localhost_note,
    refused_folder_warnings,
    root_state,
)
from ..errors import CertsDirError, EndpointTLSError
from ..hoststoml import HOSTS_TOML, HUB
from ..loader import HostCerts, unwrap
from ..locate import current_platform
from ..runtimes import Lookup
from ..trust import Trust
from .args import SCHEMA, Report, classify, redact
from .render import Cell, Style, day_iso, notes_and_near_misses, plural, table
from .reports import (
    ca_reports,
    error_report,
    file_reports,
    near_miss_reports,
    pair_report,
    warning_reports,
)

__all__ = ["render_runtime", "runtime_report"]

_STATE_TEXT = {
    "directory": "found",
    "file": "a file, not a folder",
    "missing": "missing",
    "denied": "permission denied: skipped",
    "error": "error: the search stops here",
}


def _looked(lookup: Lookup) -> list[Report]:
    return [
        {
            "root": str(entry.place.root),
            "name": entry.place.name,
            "path": str(entry.place.path),
            "state": entry.state,
            "detail": entry.detail,
            "chosen": lookup.chosen is not None and entry.place == lookup.chosen,
        }
        for entry in lookup.looked
    ]


def _roots(chosen: Layout) -> list[Report]:
    if chosen.cert_dir is not None:
        return [{"path": str(chosen.cert_dir), "state": root_state(chosen.cert_dir)}]
    return [{"path": str(r), "state": root_state(r)} for r in chosen.roots]


def runtime_report(
    argument: str,
    *,
    runtime: str,
    root: Optional[str] = None,
    cert_dir: Optional[str] = None,
    platform: Optional[str] = None,
    trust: Optional[str] = None,
    now: Optional[datetime] = None,
) -> Report:
    """Everything ``inspect --runtime`` knows about ``argument``, as the ``--json`` dict."""
    plat = platform or current_platform()
    kind, host = classify(argument)
    absolute = None if root is None else str(Path(root).absolute())
    flat = None if cert_dir is None else str(Path(cert_dir).absolute())
    chosen = layout(runtime, root=absolute, cert_dir=flat, platform=plat)
    rule: Trust = "replace" if trust == "replace" else "merge"
    when = now or datetime.now(timezone.utc)
    lookup = chosen.lookup((host,))
    folder = lookup.folder
    report: Report = {
        "schema": SCHEMA,
        "command": "inspect",
        "runtime": chosen.runtime,
        "argument": redact(argument),
        "argument_kind": kind,
        "host": host,
        "platform": plat,
        "trust": rule,
        "roots": _roots(chosen),
        "cert_dir": flat,
        "looked": _looked(lookup),
        "directory": str(folder) if folder is not None else None,
        "directory_exists": folder is not None and is_dir(folder),
        "notes": [],
        "near_misses": near_miss_reports(runtime_near_misses(chosen, host, lookup)),
    }
    if chosen.runtime == "containerd":
        _containerd(report, host, absolute, plat, rule, when)
    else:
        _podman(report, chosen, host, lookup, rule, when)
    warnings = report["warnings"]
    code = 2 if report["error"] else 1 if warnings else 0
    report["status"] = ("error", "warnings", "ok")[[2, 1, 0].index(code)]
    report["exit_code"] = code
    return report


def _podman(
    report: Report, chosen: Layout, host: str, lookup: Lookup, rule: Trust, when: datetime
) -> None:
    names = (host,)
    folder = chosen.pick(names, chosen.paths(names))
    certs: Optional[HostCerts] = None
    error: Optional[Report] = None
    try:
        certs = unwrap(chosen.read(folder, names, rule, None))
    except CertsDirError as exc:
        error = error_report(exc)
    exists = lookup.folder is not None
    files = file_reports(folder) if exists else []
    if certs is not None:
        cas = ca_reports(certs.ca_details, when)
        warnings = warning_reports(certs.warnings)
    else:
        cas = ca_reports(ca_details_of(folder) if exists else (), when)
        warnings = warning_reports(refused_folder_warnings(folder) if exists else ())
    if host == HUB:
        report["notes"].append(
            "Docker Hub: containers/image reads the docker.io folder (Docker reads none)"
        )
    report.update(
        files=files,
        ca_certificates=cas,
        pairs=[pair_report(p, when) for p in certs.pairs] if certs and exists else [],
        error=error,
        warnings=warnings,
    )


def _endpoint(found: ContainerdHost, index: int, host: str, when: datetime) -> Report:
    entry = found.endpoints[index]
    endpoint, certs = entry.endpoint, entry.certs
    matched = found.endpoint_for(host)
    return {
        "url": endpoint.url,
        "key": endpoint.key,
        "kind": "server" if endpoint.is_server else "host",
        "implicit": endpoint.implicit,
        "capabilities": list(endpoint.capabilities),
        "skip_verify": bool(endpoint.skip_verify),
        "explicit_tls": endpoint.explicit_tls,
        "ca_files": [str(p) for p in certs.ca_files],
        "pairs": [pair_report(p, when) for p in certs.pairs],
        "override_path": endpoint.override_path,
        "dial_timeout": endpoint.dial_timeout,
        "header": [name for name, _ in endpoint.header],
        "this_host": matched is entry,
    }


def _containerd_files(folder: Path, found: Optional[ContainerdHost]) -> list[Report]:
    """The folder's entries with the role containerd gives them."""
    files = file_reports(folder)
    if found is None:
        return files
    used: dict[str, str] = {}
    for entry in found.endpoints:
        for path in entry.certs.ca_files:
            used[str(path)] = "ca"
        for pair in entry.certs.pairs:
            used.setdefault(str(pair.cert), "client-cert")
            used.setdefault(str(pair.key), "client-key")
    ignored = {i.key for i in found.ignored}
    for item in files:
        if item["name"] == HOSTS_TOML:
            item["role"] = "hosts.toml" if found.hosts_file is not None else "ignored"
        elif item["path"] in used:
            item["role"] = used[item["path"]]
        else:
            item["role"] = "ignored"
        if item["name"] in ignored:
            item["role"] = "ignored"
    return files


def _containerd(
    report: Report, host: str, root: Optional[str], plat: str, rule: Trust, when: datetime
) -> None:
    found: Optional[ContainerdHost] = None
    error: Optional[Report] = None
    try:
        found = load_hosts(host, root=root, platform=plat, trust=rule)
    except CertsDirError as exc:
        error = error_report(exc)
        if isinstance(exc, EndpointTLSError):
            error["endpoint"] = exc.endpoint
    folder = Path(report["directory"]) if report["directory"] else None
    warnings: list[Report] = []
    notes: list[str] = report["notes"]
    endpoints: list[Report] = []
    if found is not None:
        endpoints = [_endpoint(found, i, host, when) for i in range(len(found.endpoints))]
        warnings = warning_reports(found.warnings_for(host))
        for entry in found.endpoints:
            note = localhost_note(entry.endpoint, host)
            if note:
                notes.append(note)
        hosts_file = found.hosts_file
        if hosts_file is not None:
            report["near_misses"] += near_miss_reports(top_level_misses(hosts_file))
    report.update(
        source=found.source if found is not None else None,
        hosts_toml=str(found.hosts_file.path) if found and found.hosts_file else None,
        hosts_error=str(found.hosts_error) if found and found.hosts_error else None,
        endpoints=endpoints,
        ignored=[{"key": i.key, "reason": i.reason} for i in found.ignored] if found else [],
        files=_containerd_files(folder, found) if folder is not None else [],
        error=error,
        warnings=warnings,
    )


# --------------------------------------------------------------------------- text


def render_runtime(report: Report, style: Style) -> list[str]:
    lines = [
        style("bold", f"dockercerts inspect {report['argument']} --runtime {report['runtime']}")
        + f"  (-> {report['host']})"
    ]
    rows: list[list[Cell]] = []
    for number, root in enumerate(report["roots"], 1):
        state = "" if root["state"] == "directory" else f"  ({root['state']})"
        rows.append(
            [f"root {number}" if len(report["roots"]) > 1 else "root", root["path"] + state]
        )
    rows.append(["folder", report["directory"] or "(none: system roots, no client certificate)"])
    rows.append(["platform", f"{report['platform']}; trust: system roots + the CA files"])
    lines += table(rows, style)
    lines += ["", style("bold", f"Folders {report['runtime']} looked at, in order")]
    looked: list[list[Cell]] = []
    for entry in report["looked"]:
        mark: Cell = ("green+bold", "<- read") if entry["chosen"] else ""
        state = _STATE_TEXT[entry["state"]]
        looked.append(
            [entry["path"], ("yellow", state) if entry["state"] != "missing" else state, mark]
        )
    lines += table(looked, style)
    lines += notes_and_near_misses(report, style, "Near misses", "path")
    if report["files"]:
        lines += ["", style("bold", "Files, in order")]
        lines += table([[f["name"], f["role"]] for f in report["files"]], style)
    if report["runtime"] == "containerd":
        lines += _render_containerd(report, style)
    else:
        lines += _render_podman(report, style)
    if report["error"]:
        lines += [
            "",
            style("red+bold", f"{report['runtime']} would fail"),
            f"  {report['error']['message']}",
        ]
        if report["error"]["fix"]:
            lines.append(f"  fix: {report['error']['fix']}")
    if report["warnings"]:
        lines += ["", style("bold", "Warnings")]
        for warning in report["warnings"]:
            loud = "red+bold" if warning["code"] == "skip-verify" else "yellow"
            lines.append(
                f"  {style(loud, '!')} {Path(warning['path']).name}: {warning['message']}"
                f"  [{warning['code']}]"
            )
            lines.append(f"    fix: {warning['fix']}")
    summary = {
        0: style("green", f"OK: {report['runtime']} would use this as it is"),
        1: style("yellow", plural(len(report["warnings"]), "warning")),
        2: style("red", f"{report['runtime']} would fail"),
    }[report["exit_code"]]
    lines += ["", f"Result: {summary} (exit {report['exit_code']})"]
    return lines


def _pair_rows(pairs: list[Report]) -> list[list[Cell]]:
    rows: list[list[Cell]] = [["#", "client", "subject", "issuer", "validity"]]
    for number, pair in enumerate(pairs, 1):
        validity: Cell = f"until {day_iso(pair['not_after'])}"
        if pair["validity"] == "expired":
            validity = ("red", f"EXPIRED {day_iso(pair['not_after'])}")
        rows.append([str(number), pair["name"], pair["subject"], pair["issuer"], validity])
    return rows


def _render_podman(report: Report, style: Style) -> list[str]:
    lines: list[str] = []
    if report["pairs"]:
        lines += [
            "",
            style("bold", "Client certificates (Go sends the first the server's CA names match)"),
        ]
        lines += table(_pair_rows(report["pairs"]), style)
    return lines


def _render_containerd(report: Report, style: Style) -> list[str]:
    source = {
        "hosts.toml": f"hosts.toml ({report['hosts_toml']})",
        "files": "the folder's .crt/.cert/.key files (no usable hosts.toml)",
        "none": "nothing: containerd's defaults",
        None: "-",
    }[report["source"]]
    lines = ["", f"  read from: {source}"]
    if report["hosts_error"]:
        lines.append(f"  {style('red', 'hosts.toml ignored')}: {report['hosts_error']}")
    if report["endpoints"]:
        lines += ["", style("bold", "Endpoints, in the order containerd tries them")]
        for number, endpoint in enumerate(report["endpoints"], 1):
            head = f"  {number}. {endpoint['url']}  ({endpoint['kind']}"
            head += ", made up from the registry name" if endpoint["implicit"] else ""
            head += f"; {', '.join(endpoint['capabilities'])})"
            if endpoint["this_host"]:
                head += style("green", "  <- requests to this host use it")
            lines.append(head)
            if endpoint["skip_verify"]:
                lines.append(
                    "     " + style("red+bold", "skip_verify = true: the server is NOT verified")
                )
            cas = ", ".join(Path(p).name for p in endpoint["ca_files"]) or "-"
            lines.append(
                f"     CA: system roots + {cas}"
                if endpoint["ca_files"]
                else "     CA: system roots"
            )
            if endpoint["pairs"]:
                lines += table(_pair_rows(endpoint["pairs"]), style, indent="     ")
            else:
                lines.append("     client certificate: none")
    if report["ignored"]:
        lines += ["", style("bold", "Ignored by containerd")]
        for item in report["ignored"]:
            lines.append(f"  {item['key']}: {item['reason']}")
    return lines
