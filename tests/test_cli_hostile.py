"""Issue 15, the command line: file-system errors are reports, odd arguments are errors.

Permission errors need an unprivileged user: as root the tests run the CLI as ``nobody``
(``subprocess`` with ``user=``) on a tree under a world-readable temporary folder; as any
other user they run it as that user. A FIFO and a symlink loop run in-process with a time
guard: a regression fails instead of hanging.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import httpx
import pytest

from dockercerts import cli
from dockercerts.cli import inspect, main, probe
from dockercerts.testing import CA, CertsD, Leaf

pytestmark = pytest.mark.reliability

HOST = "localhost:5443"
NOBODY = "nobody"


@pytest.fixture(scope="module")
def alice(mtls_ca: CA) -> Leaf:
    return mtls_ca.issue_client("alice")


def no_crash(err: str) -> None:
    assert "unexpected" not in err
    assert "Traceback" not in err


# --------------------------------------------------------------------------- unprivileged


def _ids() -> Optional[tuple[int, int]]:
    """``(uid, gid)`` to drop to, ``(-1, -1)`` when already unprivileged, ``None``: impossible."""
    if not hasattr(os, "fork") or not hasattr(os, "geteuid"):
        return None
    if os.geteuid() != 0:
        return (-1, -1)
    try:
        import pwd

        entry = pwd.getpwnam(NOBODY)
    except (ImportError, KeyError):
        return None
    return entry.pw_uid, entry.pw_gid


@pytest.fixture
def shared_root() -> Iterator[Path]:
    """A certs.d root an unprivileged user can reach (pytest's tmp_path is 0700)."""
    base = Path(tempfile.mkdtemp(prefix="dockercerts-cli-"))
    os.chmod(base, 0o755)
    root = base / "certs.d"
    root.mkdir(mode=0o755)
    try:
        yield root
    finally:
        os.chmod(root, 0o755)
        for folder, dirs, _ in os.walk(base):
            for name in dirs:
                with contextlib.suppress(OSError):
                    os.chmod(os.path.join(folder, name), 0o755)
        shutil.rmtree(base, ignore_errors=True)


def run_unprivileged(*argv: str) -> subprocess.CompletedProcess[str]:
    """``dockercerts ARGV`` in a forked child that dropped to ``nobody`` (the interpreter
    lives under root's 0700 home here, so ``subprocess`` with ``user=`` cannot start it)."""
    ids = _ids()
    if ids is None:
        pytest.skip("cannot run a child as an unprivileged user on this platform")
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        pid = os.fork()
        if pid == 0:  # the child: never returns into pytest
            code = 99
            try:
                if ids != (-1, -1):
                    os.setgroups([])
                    os.setgid(ids[1])
                    os.setuid(ids[0])
                sys.stdout, sys.stderr = out, err
                code = main(list(argv))
            except BaseException as exc:
                err.write(f"child failed: {exc!r}")
            finally:
                out.flush()
                err.flush()
                os._exit(code)
        deadline = time.monotonic() + 60
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail(f"dockercerts {' '.join(argv)} hangs")
            time.sleep(0.02)
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(
            argv, os.waitstatus_to_exitcode(status), out.read(), err.read()
        )


def _write_host(root: Path, mtls_ca: CA, alice: Leaf) -> Path:
    hd = CertsD(root).host(HOST).ca(mtls_ca).pair("alice", alice)
    for path in [hd.path, *hd.path.iterdir()]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    return hd.path


@pytest.mark.parametrize("command", ["inspect", "probe"])
@pytest.mark.parametrize("json_flag", [True, False])
def test_an_unreadable_root_is_a_report_not_a_crash(
    shared_root: Path, mtls_ca: CA, alice: Leaf, command: str, json_flag: bool
) -> None:
    _write_host(shared_root, mtls_ca, alice)
    os.chmod(shared_root, 0)
    target = HOST if command == "inspect" else f"https://{HOST}/v2/"
    argv = [command, target, "--root", str(shared_root), *(["--json"] if json_flag else [])]
    done = run_unprivileged(*argv)
    no_crash(done.stderr)
    assert done.returncode == 2, done.stderr
    if json_flag:
        report = json.loads(done.stdout)
        assert report["error"]["type"] == "CertsDirReadError"
        assert "permission denied" in report["error"]["message"]
    else:
        assert "permission denied" in done.stdout


@pytest.mark.parametrize("json_flag", [True, False])
def test_a_host_folder_readable_but_not_searchable_is_a_report(
    shared_root: Path, mtls_ca: CA, alice: Leaf, json_flag: bool
) -> None:
    folder = _write_host(shared_root, mtls_ca, alice)
    os.chmod(folder, 0o644)  # names can be listed, files cannot be reached
    done = run_unprivileged(
        "inspect", HOST, "--root", str(shared_root), *(["--json"] if json_flag else [])
    )
    no_crash(done.stderr)
    assert done.returncode == 2, done.stderr
    if json_flag:
        report = json.loads(done.stdout)
        assert report["error"]["type"] == "CertsDirReadError"
        assert {f["kind"] for f in report["files"]} == {"unreadable"}
    else:
        assert "permission denied" in done.stdout


def test_any_os_error_while_building_a_report_is_still_a_report(
    run: Any, certs_d: CertsD, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A safety net, root-proof: an OSError nobody foresaw gives exit 2 and valid JSON."""
    certs_d.host(HOST)

    def broken(*args: object, **kwargs: object) -> object:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(inspect, "file_reports", broken)
    code, out, err = run("inspect", HOST, "--root", str(certs_d.path), "--json")
    no_crash(err)
    assert code == 2
    report = json.loads(out)
    assert report["exit_code"] == 2
    assert "Input/output error" in report["error"]["message"]
    code, out, err = run("inspect", HOST, "--root", str(certs_d.path))
    assert code == 2
    assert "Input/output error" in err
    no_crash(err)


# --------------------------------------------------------------------------- odd files


def test_a_symlink_loop_is_listed_as_a_loop(run: Any, certs_d: CertsD) -> None:
    hd = certs_d.host(HOST)
    os.symlink("b.crt", hd / "a.crt")
    os.symlink("a.crt", hd / "b.crt")
    _code, out, _err = run("inspect", HOST, "--root", str(certs_d.path), "--json")
    report = json.loads(out)
    assert [f["kind"] for f in report["files"]] == ["symlink-loop", "symlink-loop"]
    assert "symbolic link loop" in report["error"]["message"]
    _code, out, _err = run("inspect", HOST, "--root", str(certs_d.path))
    assert "dangling" not in out
    assert "symlink-loop" in out


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_inspect_does_not_hang_on_a_fifo(run: Any, certs_d: CertsD, mtls_ca: CA) -> None:
    hd = certs_d.host(HOST).ca(mtls_ca, "a.crt")
    os.mkfifo(hd / "b.crt")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "dockercerts",
            "inspect",
            HOST,
            "--root",
            str(certs_d.path),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    no_crash(done.stderr)
    assert done.returncode == 2
    report = json.loads(done.stdout)
    assert [f["kind"] for f in report["files"]] == ["file", "fifo"]
    assert "named pipe" in report["error"]["message"]
    assert len(report["ca_certificates"]) == 1


def test_a_root_that_is_a_file_says_so_once(run: Any, tmp_path: Path) -> None:
    root = tmp_path / "not-a-folder"
    root.write_bytes(b"")
    code, out, _err = run("inspect", HOST, "--root", str(root), "--json")
    report = json.loads(out)
    assert code == 2
    assert report["root_exists"] is False
    assert report["root_state"] == "not-a-directory"
    assert "host-directory-missing" not in {w["code"] for w in report["warnings"]}
    assert str(root) in report["error"]["message"]
    assert "is a file" in report["error"]["message"]
    code, out, _err = run("inspect", HOST, "--root", str(root))
    assert "does not exist" not in out
    assert "system roots, no client certificate" not in out
    assert "not a directory" in out


# --------------------------------------------------------------------------- arguments


@pytest.mark.parametrize("url", ["https://[::1", "https://[::1/v2/", "https://reg:5000:x/"])
def test_probe_refuses_a_malformed_url(run: Any, url: str) -> None:
    code, _out, err = run("probe", url)
    no_crash(err)
    assert code == 2
    assert "not a valid URL" in err or "is not a registry host" in err


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e300", "0", "-1"])
def test_probe_refuses_a_timeout_that_is_not_a_usable_number(run: Any, value: str) -> None:
    code, _out, err = run("probe", "https://localhost:1/v2/", "--timeout", value)
    no_crash(err)
    assert code == 2
    assert "--timeout" in err


def test_a_server_certificate_for_another_name_gets_the_name_hint() -> None:
    message = (
        "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: Hostname mismatch, "
        "certificate is not valid for 'localhost'. (_ssl.c:1006)"
    )
    exc = httpx.ConnectError(message)
    exc.__context__ = ssl.SSLCertVerificationError(1, message)
    hint = probe.error_hint(exc, httpx.URL("https://localhost:5443/v2/"), 5.0)
    assert "ca.crt" not in hint
    assert "localhost" in hint
    assert "name" in hint
    expired = httpx.ConnectError(
        "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: certificate has expired"
    )
    assert "expired" in probe.error_hint(expired, httpx.URL("https://localhost:5443/"), 5.0)
    unknown = httpx.ConnectError(
        "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get local "
        "issuer certificate"
    )
    assert "ca.crt" in probe.error_hint(unknown, httpx.URL("https://localhost:5443/"), 5.0)


def test_credentials_in_a_url_are_never_echoed(run: Any, certs_d: CertsD) -> None:
    url = "https://alice:Sup3r-s3cret@reg.example.com:5000/v2/"
    for argv in (
        ["inspect", url, "--root", str(certs_d.path)],
        ["inspect", url, "--root", str(certs_d.path), "--json"],
    ):
        _code, out, err = run(*argv)
        assert "Sup3r-s3cret" not in out + err
        assert "alice" not in out + err
    report = json.loads(run("inspect", url, "--root", str(certs_d.path), "--json")[1])
    assert report["argument"] == "https://***@reg.example.com:5000/v2/"


def test_probe_strips_credentials_and_says_so(
    run: Any, certs_d: CertsD, mtls_server: Any, mtls_ca: CA, alice: Leaf
) -> None:
    server = mtls_server(reject="tls")
    certs_d.host(server.host).ca(server.server_ca).pair("alice", alice)
    url = server.url.replace("https://", "https://bob:Sup3r-s3cret@") + "/v2/"
    code, out, err = run("probe", url, "--root", str(certs_d.path), "--json")
    assert code == 0, err
    assert "Sup3r-s3cret" not in out + err
    assert "bob" not in out
    assert "credentials" in err  # said on stderr; stdout stays the JSON report
    report = json.loads(out)
    assert "@" not in report["url"]
    assert "authorization" not in server.requests[-1].headers


def test_an_overlong_repository_name_is_refused(run: Any) -> None:
    code, _out, err = run("inspect", "a" * 100_000)
    no_crash(err)
    assert code == 2
    assert "255" in err
    assert len(err) < 1000
    code, _out, err = run("inspect", "team/" + "a" * 251)  # docker.io/team/... is longer
    assert code == 2
    assert classify_ok("team/" + "a" * 200)


def classify_ok(argument: str) -> bool:
    return cli.classify(argument)[0] == "image"


def test_a_port_above_65535_is_pointed_out(run: Any, certs_d: CertsD) -> None:
    _code, out, _err = run("inspect", "reg:99999", "--root", str(certs_d.path), "--json")
    report = json.loads(out)
    assert report["host"] == "docker.io"  # Docker reads it as the image reg, tag 99999
    assert any("65535" in note for note in report["notes"])
