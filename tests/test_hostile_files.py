"""Issue 15: hostile files in a host directory: no hang, bounded memory, typed errors.

Docker reads every ``.crt``, ``.cert`` and ``.key`` whole, whatever it is. A library in a
long-running process must not: a FIFO would block it forever and ``/dev/zero`` would eat its
memory. These tests put such files where Docker would read them and require a
:class:`~dockercerts.CertsDirReadError` naming the file, quickly. Every read that could hang
on a regression runs in a thread joined with a timeout, so a regression fails instead of
hanging the suite; the ones that could eat memory run in a child with a memory limit.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable

import pytest

import dockercerts
from dockercerts import CertsDirReadError, load_dir
from dockercerts import scan as scan_mod
from dockercerts.testing import CA, CertsD, HostDir, Leaf

pytestmark = pytest.mark.reliability

HOST = "localhost:5443"
GUARD = 10.0  # seconds a load may take before the test calls it a hang
POSIX = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs (POSIX)")


@pytest.fixture(scope="module")
def alice(mtls_ca: CA) -> Leaf:
    return mtls_ca.issue_client("alice")


@pytest.fixture
def hd(certs_d: CertsD) -> HostDir:
    return certs_d.host(HOST)


def guarded(call: Callable[[], Any]) -> Any:
    """Run ``call`` in a thread; its result or exception, or fail if it hangs."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(("value", call()))
        except BaseException as exc:
            outcome.append(("error", exc))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(GUARD)
    if thread.is_alive():
        # Unblock a reader stuck on a FIFO so the thread can end, then fail.
        pytest.fail(f"still running after {GUARD} s: it hangs")
    kind, value = outcome[0]
    if kind == "error":
        raise value
    return value


def unblock(fifo: Path) -> None:
    """Open the writing end once, so a reader blocked on ``fifo`` by a regression returns."""
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return
    os.close(fd)


@POSIX
@pytest.mark.parametrize("name", ["ca.crt", "client.cert", "client.key"])
def test_a_fifo_is_an_error_not_a_hang(hd: HostDir, alice: Leaf, name: str) -> None:
    hd.pair("client", alice)
    target = hd / name
    target.unlink(missing_ok=True)
    os.mkfifo(target)
    try:
        with pytest.raises(CertsDirReadError) as info:
            guarded(lambda: load_dir(hd.path))
    finally:
        unblock(target)
    assert info.value.path == target
    assert info.value.directory == hd.path
    assert "named pipe" in info.value.problem
    assert "regular file" in info.value.fix


@POSIX
def test_a_fifo_behind_a_symlink_is_an_error(hd: HostDir, tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    os.symlink(fifo, hd / "ca.crt")
    try:
        with pytest.raises(CertsDirReadError) as info:
            guarded(lambda: load_dir(hd.path))
    finally:
        unblock(fifo)
    assert info.value.path == hd / "ca.crt"
    assert "named pipe" in info.value.problem


@POSIX
@pytest.mark.parametrize("name", ["client.cert", "client.key"])
def test_a_pair_file_swapped_for_a_fifo_after_load_fails_at_first_use(
    hd: HostDir, alice: Leaf, name: str
) -> None:
    """The context is built later than the load: OpenSSL must not be handed a FIFO either."""
    hd.pair("client", alice)
    certs = load_dir(hd.path)
    target = hd / name
    target.unlink()
    os.mkfifo(target)
    (candidate,) = certs.candidates()
    try:
        with pytest.raises(CertsDirReadError) as info:
            guarded(lambda: candidate.context)
    finally:
        unblock(target)
    assert info.value.path == target
    assert "named pipe" in info.value.problem


def test_a_socket_is_an_error(hd: HostDir, tmp_path: Path) -> None:
    if not hasattr(socket, "AF_UNIX"):
        pytest.skip("needs Unix sockets")
    path = hd / "ca.crt"
    if len(os.fsencode(path)) > 100:
        pytest.skip("the temporary path is too long for a Unix socket")
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(os.fspath(path))
        with pytest.raises(CertsDirReadError) as info:
            guarded(lambda: load_dir(hd.path))
    finally:
        server.close()
    assert info.value.path == path
    assert "socket" in info.value.problem


# A child process: /dev/zero must fail fast and small; a regression must not take the machine.
_DEVICE_CHILD = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
import dockercerts
try:
    dockercerts.load_dir(sys.argv[1])
except dockercerts.CertsDirReadError as exc:
    print("CertsDirReadError", exc.path, "|", exc.problem)
except BaseException as exc:
    print("other", type(exc).__name__)
else:
    print("loaded")
"""


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom", "/dev/null"])
@pytest.mark.parametrize("name", ["ca.crt", "client.key"])
def test_a_device_is_an_error(hd: HostDir, alice: Leaf, device: str, name: str) -> None:
    if not os.path.exists(device):
        pytest.skip(f"no {device}")
    pytest.importorskip("resource")
    hd.pair("client", alice)
    (hd / name).unlink(missing_ok=True)
    os.symlink(device, hd / name)
    done = subprocess.run(
        [sys.executable, "-c", _DEVICE_CHILD, str(hd.path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.stdout.strip() == (
        f"CertsDirReadError {hd / name} | is a character device, not a regular file"
    ), done.stderr


def test_an_oversized_crt_is_an_error_and_its_limit_is_8_mib(hd: HostDir, mtls_ca: CA) -> None:
    assert scan_mod.MAX_CA_FILE_SIZE == 8 * 1024 * 1024
    # Comment lines around a real certificate: Go would read it, and so do we up to the cap.
    padding = b"# padding\n" * ((scan_mod.MAX_CA_FILE_SIZE - len(mtls_ca.cert_pem)) // 10)
    exactly = mtls_ca.cert_pem + padding
    exactly += b"\n" * (scan_mod.MAX_CA_FILE_SIZE - len(exactly))
    assert len(exactly) == scan_mod.MAX_CA_FILE_SIZE
    hd.file("ca.crt", exactly)
    assert len(load_dir(hd.path).ca_certificates) == 1
    hd.file("ca.crt", exactly + b"\n")
    with pytest.raises(CertsDirReadError) as info:
        load_dir(hd.path)
    assert info.value.path == hd / "ca.crt"
    assert "8 MiB" in info.value.problem
    assert "MAX_CA_FILE_SIZE" in info.value.fix


@pytest.mark.parametrize("name", ["client.cert", "client.key"])
def test_an_oversized_pair_file_is_an_error_and_its_limit_is_1_mib(
    hd: HostDir, alice: Leaf, name: str
) -> None:
    assert scan_mod.MAX_PAIR_FILE_SIZE == 1024 * 1024
    hd.pair("client", alice)
    path = hd / name
    data = path.read_bytes()
    path.write_bytes(data + b"\n" * (scan_mod.MAX_PAIR_FILE_SIZE - len(data)))
    assert load_dir(hd.path).pairs[0].name == "client"
    path.write_bytes(data + b"\n" * (scan_mod.MAX_PAIR_FILE_SIZE + 1 - len(data)))
    with pytest.raises(CertsDirReadError) as info:
        load_dir(hd.path)
    assert info.value.path == path
    assert "1 MiB" in info.value.problem
    assert "MAX_PAIR_FILE_SIZE" in info.value.fix


def test_the_limits_are_configurable(
    hd: HostDir, mtls_ca: CA, monkeypatch: pytest.MonkeyPatch
) -> None:
    hd.ca(mtls_ca)
    monkeypatch.setattr(scan_mod, "MAX_CA_FILE_SIZE", 100)
    with pytest.raises(CertsDirReadError) as info:
        load_dir(hd.path)
    assert "more than 100 bytes" in info.value.problem
    monkeypatch.setattr(scan_mod, "MAX_CA_FILE_SIZE", len(mtls_ca.cert_pem))
    assert len(load_dir(hd.path).ca_certificates) == 1


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs Linux /proc")
def test_the_limit_holds_while_reading_not_only_by_the_size_stat_reports(
    hd: HostDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/proc files say they are empty and are not: the cap must count what is read."""
    assert os.stat("/proc/self/maps").st_size == 0
    assert stat.S_ISREG(os.stat("/proc/self/maps").st_mode)
    os.symlink("/proc/self/maps", hd / "ca.crt")
    monkeypatch.setattr(scan_mod, "MAX_CA_FILE_SIZE", 64)
    reads: list[int] = []
    real_read = os.read

    def counting_read(fd: int, size: int) -> bytes:
        data = real_read(fd, size)
        reads.append(len(data))
        return data

    monkeypatch.setattr(os, "read", counting_read)
    with pytest.raises(CertsDirReadError) as info:
        load_dir(hd.path)
    assert "more than 64 bytes" in info.value.problem
    assert sum(reads) == 65  # cap + 1: enough to know, not a byte more


def test_a_folder_named_like_a_certificate_is_still_an_error(hd: HostDir) -> None:
    (hd / "ca.crt").mkdir()
    with pytest.raises(CertsDirReadError) as info:
        load_dir(hd.path)
    assert info.value.problem == "is a directory"


def test_the_limits_are_public_constants() -> None:
    assert dockercerts.scan.MAX_CA_FILE_SIZE == 8 << 20
    assert dockercerts.scan.MAX_PAIR_FILE_SIZE == 1 << 20
