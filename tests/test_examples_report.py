"""The examples in ``examples/`` run here, as users would run them, so they cannot rot.

``check_hosts.py`` is run as a script against a generated certs.d tree;
``test_with_fixtures.py`` is run by a separate pytest process (it lives outside ``testpaths``
so the project's own run does not collect it a second time).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from dockercerts.testing import CA, CertsD

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def check_hosts(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / "check_hosts.py"), str(root), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_hosts_reports_a_good_and_a_broken_host(certs_d: CertsD, mtls_ca: CA) -> None:
    certs_d.host("good.test:5000").ca(mtls_ca).pair("alice", mtls_ca.issue_client("alice"))
    certs_d.host("broken.test:5000").ca_as_cert(mtls_ca)

    proc = check_hosts(certs_d.path)

    assert proc.returncode == 1, proc.stdout + proc.stderr
    # The library's warnings are in the report, not repeated on stderr.
    assert proc.stderr == ""
    lines = proc.stdout.splitlines()
    assert lines[0] == f"certs.d root: {certs_d.path}"
    # Byte order: "broken" before "good".
    assert re.match(
        r"  FAIL  broken\.test:5000  missing key ca\.key for client certificate ca\.cert\. "
        r"CA certificates must use the extension \.crt$",
        lines[1],
    )
    assert re.match(r"  OK    good\.test:5000    1 client pair\(s\), 1 CA file\(s\)$", lines[2])
    assert re.match(r"        1\. alice: CN=alice, EC secp256r1, until \d{4}-\d\d-\d\d$", lines[3])
    assert lines[-1] == "2 host directories: 1 ok, 0 with warnings, 1 failed"


def test_check_hosts_passes_with_warnings_unless_strict(certs_d: CertsD, mtls_ca: CA) -> None:
    host = certs_d.host("good.test:5000").ca(mtls_ca)
    host.pair("old", mtls_ca.issue_client("old", expired=True))
    certs_d.host("not a host")  # a folder Docker never reads

    proc = check_hosts(certs_d.path)
    assert proc.returncode == 0, proc.stdout
    assert "  WARN  good.test:5000" in proc.stdout
    assert "! old.cert: the client certificate expired on" in proc.stdout
    assert "  WARN  not a host" in proc.stdout
    assert "Docker never reads this folder: contains whitespace" in proc.stdout
    assert proc.stdout.endswith("2 host directories: 0 ok, 2 with warnings, 0 failed\n")

    assert check_hosts(certs_d.path, "--strict").returncode == 1


def test_check_hosts_missing_root(tmp_path: Path) -> None:
    proc = check_hosts(tmp_path / "nowhere")
    assert proc.returncode == 2
    assert "is not a folder" in proc.stderr


def test_fixture_example_passes(tmp_path: Path) -> None:
    env = dict(os.environ)
    env.pop("PYTEST_ADDOPTS", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(EXAMPLES / "test_with_fixtures.py"),
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:xdist",
            "--basetemp",
            str(tmp_path / "basetemp"),
        ],
        capture_output=True,
        text=True,
        cwd=EXAMPLES.parent,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    # Every test in the file ran and passed: none skipped, none deselected.
    assert re.search(r"\b4 passed\b", proc.stdout), proc.stdout[-2000:]
    assert "skipped" not in proc.stdout
