"""Real ``ctr`` (containerd) and ``skopeo`` (containers/image) for the parity tests, and the
CONNECT proxy that lets them reach a loopback registry by a name of its own.

Not public API. Why a proxy: containerd treats ``localhost`` and loopback IPs specially (1.x
speaks plain HTTP to them, 2.x skips verification), so a registry reached as
``127.0.0.1:<port>`` would not exercise its TLS rules. Every tool here honours
``HTTPS_PROXY`` (Go's ``ProxyFromEnvironment``; httpx's ``proxy=``), so the registry is named
``registry.test:5000`` in references and folders, and :class:`ConnectProxy` tunnels every
``CONNECT`` to the one loopback port that serves it. Nothing resolves ``registry.test``.

What the tools say about the folder and files they used:

* ``ctr --debug``: ``loading host directory`` with the folder, ``failed to decode
  hosts.toml`` when it could not, and its error line (``ctr: ...``);
* ``skopeo --debug``: ``Looking for TLS certificates and private keys in <folder>`` and one
  `` crt:``/`` cert:``/`` key:`` line per file it read.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Optional

import pytest
from peers import REQUIRE_ENV

__all__ = ["ConnectProxy", "ToolRun", "require_tool", "run_ctr", "run_skopeo", "tool_version"]

_INSTALL = {"ctr": "apt-get install containerd", "skopeo": "apt-get install skopeo"}
_TIMEOUT = 60.0


def require_tool(name: str) -> str:
    """The binary for ``ctr`` or ``skopeo``, or skip (fail under ``DOCKERCERTS_REQUIRE_PEERS``)."""
    found = shutil.which(name) or next(
        (p for p in (f"/usr/bin/{name}", f"/usr/local/bin/{name}") if os.access(p, os.X_OK)), None
    )
    if found:
        return found
    reason = f"{name} not installed: {_INSTALL[name]} (or run .ci/run)"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason}; {REQUIRE_ENV}=1 forbids skipping", pytrace=False)
    pytest.skip(reason)


def tool_version(binary: str) -> tuple[int, ...]:
    """``(1, 6, 20)`` from ``ctr --version`` / ``skopeo --version``."""
    out = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, timeout=_TIMEOUT, check=True
    ).stdout
    match = re.search(r"(\d+)\.(\d+)\.(\d+)", out)
    assert match is not None, out
    return tuple(int(part) for part in match.groups())


class ConnectProxy:
    """An HTTP ``CONNECT`` proxy on ``127.0.0.1:<free port>`` that tunnels every request to
    ``127.0.0.1:<upstream>``, or to the port ``names`` gives its target (``host:port`` as
    asked: several registries by name); ``targets`` lists what was asked for.

    A context manager: on exit it closes the listener and every tunnel and joins its threads.
    """

    def __init__(self, upstream: int, names: Optional[Mapping[str, int]] = None) -> None:
        self.upstream = upstream
        self.names = dict(names or {})
        self.targets: list[str] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False
        self._start(self._accept)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _start(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _track(self, sock: socket.socket) -> bool:
        with self._lock:
            if self._closed:
                sock.close()
                return False
            self._sockets.append(sock)
            return True

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._track(client):
                self._start(self._serve, client)

    def _serve(self, client: socket.socket) -> None:
        head = b""
        with contextlib.suppress(OSError):
            while b"\r\n\r\n" not in head and len(head) < 8192:
                chunk = client.recv(4096)
                if not chunk:
                    break
                head += chunk
        request = head.split(b"\r\n", 1)[0].decode("latin-1")
        method, _, rest = request.partition(" ")
        if method != "CONNECT":
            with contextlib.suppress(OSError):
                client.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
                client.close()
            return
        wanted = rest.split(" ")[0]
        with self._lock:
            self.targets.append(wanted)
        port = self.names.get(wanted, self.upstream)
        try:
            upstream = socket.create_connection(("127.0.0.1", port), timeout=5)
        except OSError:
            with contextlib.suppress(OSError):
                client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                client.close()
            return
        upstream.settimeout(None)
        if not self._track(upstream):
            return
        with contextlib.suppress(OSError):
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        self._start(self._pipe, upstream, client)
        self._pipe(client, upstream)

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            sockets, self._sockets = self._sockets, []
        # close() alone does not wake a thread blocked in accept() on Linux; shutdown does.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout=5)

    def __enter__(self) -> ConnectProxy:
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()


@dataclass
class ToolRun:
    """One run of ``ctr`` or ``skopeo``: exit status, output, and what it said it read."""

    returncode: int
    stdout: str
    stderr: str
    folders: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    decode_errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def error(self) -> str:
        """The tool's last error line (``ctr: ...``, ``FATA[0000] ...``)."""
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        return lines[-1] if lines else ""


def _env(proxy: ConnectProxy, home: Path) -> dict[str, str]:
    # Only what the tools need: no NO_PROXY from the caller, a HOME of the test's own.
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "HTTPS_PROXY": proxy.url,
        "https_proxy": proxy.url,
        "XDG_RUNTIME_DIR": str(home / "run"),
        "XDG_CONFIG_HOME": str(home / ".config"),
    }


_CTR_DIR = re.compile(r'msg="loading host directory" dir="?([^"\s]+)"?')
_CTR_DECODE = re.compile(r'msg="failed to decode[^"]*" error="((?:[^"\\]|\\.)*)"')


def run_ctr(binary: str, hosts_dir: Path, ref: str, proxy: ConnectProxy, home: Path) -> ToolRun:
    """``ctr content fetch-object --hosts-dir`` (no daemon needed): resolve ``ref`` and fetch
    its manifest."""
    done = subprocess.run(
        [binary, "--debug", "content", "fetch-object", "--hosts-dir", str(hosts_dir), ref],
        env=_env(proxy, home),
        capture_output=True,
        text=True,
        timeout=_TIMEOUT,
        check=False,
    )
    return ToolRun(
        done.returncode,
        done.stdout,
        done.stderr,
        folders=list(dict.fromkeys(_CTR_DIR.findall(done.stderr))),
        decode_errors=list(dict.fromkeys(_CTR_DECODE.findall(done.stderr))),
    )


_SKOPEO_DIR = re.compile(r"Looking for TLS certificates and private keys in (\S+)")
_SKOPEO_FILE = re.compile(r"\s(crt|cert|key): (\S+)")


def run_skopeo(
    binary: str,
    ref: str,
    proxy: ConnectProxy,
    home: Path,
    cert_dir: Optional[Path] = None,
) -> ToolRun:
    """``skopeo --debug inspect --raw [--cert-dir DIR] docker://REF`` with ``HOME=home``."""
    argv = [binary, "--debug", "inspect", "--raw"]
    if cert_dir is not None:
        argv += ["--cert-dir", str(cert_dir)]
    done = subprocess.run(
        [*argv, f"docker://{ref}"],
        env=_env(proxy, home),
        capture_output=True,
        text=True,
        timeout=_TIMEOUT,
        check=False,
    )
    files = [m.group(2).rstrip('"') for m in _SKOPEO_FILE.finditer(done.stderr)]
    return ToolRun(
        done.returncode,
        done.stdout,
        done.stderr,
        folders=list(dict.fromkeys(p.rstrip('"') for p in _SKOPEO_DIR.findall(done.stderr))),
        files=list(dict.fromkeys(files)),
    )
