"""The report pieces both ``inspect`` reports share: the library's facts and diagnosis as the
``--json`` dicts documented in ``docs/cli.md``. Nothing is checked here: the library decides.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Optional, Union

from ..diagnose import (
    NearMiss,
    entries,
    explain,
)
from ..errors import (
    CertsDirError,
)
from ..scan import CACertificate, CertsWarning, ClientPair
from .args import Report
from .render import iso


def validity(not_before: Optional[datetime], not_after: Optional[datetime], now: datetime) -> str:
    if not_after is not None and not_after < now:
        return "expired"
    if not_before is not None and not_before > now:
        return "not-yet-valid"
    return "valid"


def file_reports(directory: Path) -> list[Report]:
    """Every entry in Docker's order with the role Docker gives it (listing errors: none)."""
    return [
        {"name": e.name, "path": str(e.path), "role": e.role, "kind": e.kind, "link": e.link}
        for e in entries(directory)
    ]


def ca_reports(details: tuple[CACertificate, ...], now: datetime) -> list[Report]:
    return [
        {
            "file": ca.file.name,
            "subject": ca.subject,
            "issuer": ca.issuer,
            "not_before": iso(ca.not_before),
            "not_after": iso(ca.not_after),
            "validity": validity(ca.not_before, ca.not_after, now),
            "is_ca": ca.is_ca,
            "self_signed": ca.self_signed,
            "fingerprint": ca.fingerprint,
        }
        for ca in details
    ]


def pair_report(pair: ClientPair, now: datetime) -> Report:
    return {
        "name": pair.name,
        "cert": str(pair.cert),
        "key": str(pair.key),
        "subject": pair.subject,
        "issuer": pair.issuer,
        "key_type": pair.key_type,
        "not_before": iso(pair.not_before),
        "not_after": iso(pair.not_after),
        "validity": validity(pair.not_before, pair.not_after, now),
        "chain_length": pair.chain_length,
        "fingerprint": pair.fingerprint,
    }


def error_report(exc: CertsDirError) -> Report:
    """Docker's message for ``exc`` and a fix that looks at the files involved."""
    message, fix = explain(exc)
    return {
        "type": type(exc).__name__,
        "message": message,
        "fix": fix,
        "paths": [str(p) for p in exc.paths],
    }


def warning_report(code: str, path: Union[str, Path], message: str, fix: str) -> Report:
    return {"code": code, "path": str(path), "message": message, "fix": fix}


def warning_reports(found: Iterable[CertsWarning]) -> list[Report]:
    """The library's warnings as the report lists them."""
    return [warning_report(w.code, w.path, w.message, w.fix) for w in found]


def near_miss_reports(found: Iterable[NearMiss]) -> list[Report]:
    return [{"name": m.name, "path": str(m.path), "reason": m.reason, "fix": m.fix} for m in found]
