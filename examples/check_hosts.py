"""Check every host directory under a certs.d root the way Docker would read it.

    python examples/check_hosts.py /etc/docker/certs.d
    python examples/check_hosts.py ./certs.d --platform windows

One line per host directory (OK / WARN / FAIL), then its client pairs in try order, its
warnings and, when Docker would refuse the directory, Docker's own error. The exit status is 1
when Docker would refuse any host directory, else 0 (warnings alone do not fail the check
unless ``--strict`` is given), so it can guard a provisioning script or a CI job.

Only the public API is used: :func:`dockercerts.load_dir`, :class:`dockercerts.CertsDirError`
and :func:`dockercerts.locate.check_host`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import dockercerts
from dockercerts.locate import check_host


@dataclass
class HostReport:
    """What one host directory holds, or why Docker would not load it."""

    name: str
    pairs: list[str] = field(default_factory=list)
    ca_files: int = 0
    warnings: list[str] = field(default_factory=list)
    error: Optional[str] = None

    @property
    def status(self) -> str:
        if self.error is not None:
            return "FAIL"
        return "WARN" if self.warnings else "OK"


def check_dir(path: Path, platform: Optional[str]) -> HostReport:
    report = HostReport(path.name)
    if platform != "windows":
        # Docker only ever reads folders named like a registry host; on Windows every ':'
        # is removed from the name, so this check would be meaningless there.
        try:
            check_host(path.name)
        except dockercerts.InvalidHostError as exc:
            report.warnings.append(f"Docker never reads this folder: {exc.reason}")
    try:
        certs = dockercerts.load_dir(path, platform=platform)
    except dockercerts.CertsDirError as exc:
        # For a .cert without its .key (and the reverse) str(exc) is Docker's own message.
        report.error = str(exc)
        return report
    report.ca_files = len(certs.ca_files)
    for pair in certs.pairs:
        until = pair.not_after.strftime("%Y-%m-%d") if pair.not_after else "?"
        report.pairs.append(f"{pair.name}: {pair.subject}, {pair.key_type}, until {until}")
    report.warnings += [f"{w.path.name}: {w.message} (fix: {w.fix})" for w in certs.warnings]
    return report


def check_root(root: Path, platform: Optional[str] = None) -> list[HostReport]:
    """One report per host directory under ``root``, in Docker's (byte) order."""
    names = [name for name in os.listdir(root) if (root / name).is_dir()]
    return [check_dir(root / name, platform) for name in sorted(names, key=os.fsencode)]


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="the certs.d folder to check")
    parser.add_argument("--platform", choices=("linux", "windows", "darwin"))
    parser.add_argument("--strict", action="store_true", help="fail on warnings too")
    args = parser.parse_args(argv)
    # dockercerts logs each warning as it loads; this report prints them already, so keep
    # Python's last-resort handler from repeating them on stderr.
    logging.getLogger("dockercerts").addHandler(logging.NullHandler())
    if not args.root.is_dir():
        print(f"check_hosts: {args.root} is not a folder", file=sys.stderr)
        return 2

    reports = check_root(args.root, args.platform)
    print(f"certs.d root: {args.root}")
    width = max((len(r.name) for r in reports), default=0)
    for report in reports:
        summary = report.error or (
            f"{len(report.pairs)} client pair(s), {report.ca_files} CA file(s)"
        )
        print(f"  {report.status:<4}  {report.name:<{width}}  {summary}")
        for number, pair in enumerate(report.pairs, 1):
            print(f"        {number}. {pair}")
        for warning in report.warnings:
            print(f"        ! {warning}")

    failed = sum(r.status == "FAIL" for r in reports)
    warned = sum(r.status == "WARN" for r in reports)
    ok = len(reports) - failed - warned
    print(f"{len(reports)} host directories: {ok} ok, {warned} with warnings, {failed} failed")
    if failed or (args.strict and warned):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
