"""``dockercerts inspect``'s warnings against the library's, for every report a CLI test makes.

:func:`checked` wraps the CLI's report function: each Docker or podman report it builds is
compared, warning by warning (code, path, message, fix), with what ``dockercerts.load`` says
of the same folder; a folder Docker refuses (``load`` raises) is compared with
:func:`dockercerts.diagnose.refused_folder_warnings`. containerd reports are not compared:
``inspect`` lists every endpoint's warnings, ``load`` one endpoint's.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import dockercerts
from dockercerts.diagnose import refused_folder_warnings
from dockercerts.errors import CertsDirError

Report = dict[str, Any]


def library_warnings(report: Report, root: Any, cert_dir: Any) -> list[Report]:
    """What the library says of the folder ``report`` describes, as the report lists it."""
    log = logging.getLogger("dockercerts")
    was = log.disabled
    log.disabled = True  # the wrapped test may look at the log: it sees the CLI's only
    try:
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
    return [
        {"code": w.code, "path": str(w.path), "message": w.message, "fix": w.fix} for w in found
    ]


def checked(report_function: Callable[..., Report], seen: list[str]) -> Callable[..., Report]:
    """``report_function`` that also compares each report's warnings with the library's;
    ``seen`` gets one line per report compared, and each mismatch raises."""

    def wrapper(argument: str, **options: Any) -> Report:
        report = report_function(argument, **options)
        if report["runtime"] == "containerd":
            return report
        root = report["root"] if report["runtime"] == "docker" else options.get("root")
        expected = library_warnings(report, root, options.get("cert_dir"))
        if report["warnings"] != expected:
            seen.append(f"MISMATCH {argument}: {report['warnings']} != {expected}")
        else:
            codes = ",".join(w["code"] for w in expected) or "-"
            seen.append(f"ok {report['runtime']} {argument} {codes}")
        return report

    return wrapper
