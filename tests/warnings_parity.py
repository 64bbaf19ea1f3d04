"""``dockercerts inspect``'s warnings against the library's, for every report a CLI test makes.

:func:`checked` wraps the CLI's report function: each Docker or podman report it builds is
compared, warning by warning (code, path, message, fix), with what ``dockercerts.load`` says
of the same folder; a folder Docker refuses (``load`` raises) is compared with
:func:`dockercerts.diagnose.refused_folder_warnings`. A containerd report lists every
endpoint's warnings: it is compared with ``load_hosts(...).warnings_for(host)``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable

import dockercerts
from dockercerts.containerd import load_hosts
from dockercerts.diagnose import refused_folder_warnings
from dockercerts.errors import CertsDirError
from dockercerts.scan import CertsWarning

Report = dict[str, Any]


def library_warnings(report: Report, root: Any, cert_dir: Any) -> list[Report]:
    """What the library says of the folder ``report`` describes, as the report lists it."""
    log = logging.getLogger("dockercerts")
    was = log.disabled
    log.disabled = True  # the wrapped test may look at the log: it sees the CLI's only
    found: Sequence[CertsWarning]
    try:
        if report["runtime"] == "containerd":
            try:
                hosts = load_hosts(
                    report["host"], root=root, platform=report["platform"], trust=report["trust"]
                )
            except CertsDirError:
                found = ()  # the report has the error, and no warning
            else:
                found = hosts.warnings_for(report["host"])
            return _as_reports(found)
        found = dockercerts.load(
            report["host"],
            root=root,
            cert_dir=cert_dir,
            platform=report["platform"],
            trust=report["trust"],
            runtime=report["runtime"],
        ).warnings
    except CertsDirError:
        found = refused_folder_warnings(Path(report["directory"]))
    finally:
        log.disabled = was
    return _as_reports(found)


def _as_reports(found: Sequence[CertsWarning]) -> list[Report]:
    return [
        {"code": w.code, "path": str(w.path), "message": w.message, "fix": w.fix} for w in found
    ]


def checked(report_function: Callable[..., Report], seen: list[str]) -> Callable[..., Report]:
    """``report_function`` that also compares each report's warnings with the library's;
    ``seen`` gets one line per report compared, and each mismatch raises."""

    def wrapper(argument: str, **options: Any) -> Report:
        report = report_function(argument, **options)
        root = report["root"] if report["runtime"] == "docker" else options.get("root")
        expected = library_warnings(report, root, options.get("cert_dir"))
        if report["warnings"] != expected:
            seen.append(f"MISMATCH {argument}: {report['warnings']} != {expected}")
        else:
            codes = ",".join(w["code"] for w in expected) or "-"
            seen.append(f"ok {report['runtime']} {argument} {codes}")
        return report

    return wrapper
