"""The TLS server of a section, in a process of its own (``run.py --serve``), so that its Python
work stays off the client's GIL, as a real registry's would.

It listens on 127.0.0.1 only and stops when its client closes the pipe, or after a deadline.
Commands on stdin, one JSON reply (:class:`Counters`) per line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, Optional

from dockercerts.testing import CA, ClientCertInfo, MTLSServer

from . import ENTRY
from .material import Pki, write_host, write_pki
from .typed import from_json, to_json

SERVER_DEADLINE = 900.0  # a server process never outlives this, whatever its client does
REPLY_TIMEOUT = 60.0


@dataclasses.dataclass(frozen=True)
class ServerSpec:
    """How a section's server behaves; ``wrong``: how many refused pairs to write."""

    reject: Literal["tls", "http", "status"] = "tls"
    wrong: int = 0
    tls: Optional[Literal["1.2", "1.3"]] = None
    names: tuple[str, ...] = ()
    send_ca_names: bool = True
    max_workers: int = 16
    # An authorization rule (reject="status"): 200 until the "refuse" command, then `status`.
    refusable: bool = False
    status: int = 403


@dataclasses.dataclass(frozen=True)
class Counters:
    """The server's counters since the last ``take``."""

    handshakes: int
    failed: int
    connections: int
    requests: int
    last_subject: Optional[str]
    errors: tuple[str, ...]


def serve(argument: str) -> None:
    """``--serve``: an MTLSServer for one child, ``argument`` its folder and spec as JSON."""
    data = json.loads(argument)
    folder = Path(data.pop("dir"))
    spec = from_json(ServerSpec, data)
    folder.mkdir(parents=True, exist_ok=True)
    server_ca, client_ca = CA(name="bench server CA"), CA(name="bench client CA")
    untrusted = CA(name="bench untrusted CA")
    write_pki(folder, server_ca, client_ca, spec.wrong, untrusted)
    # nginx-like HTTP rejections need the refused pairs to pass the handshake first.
    handshake_cas = [untrusted] if spec.reject != "tls" else []
    refusing = threading.Event()
    extra: dict[str, Any] = {}
    if spec.refusable:
        # The client CA's pair passes the handshake and gets 200 until the "refuse" command,
        # then 403; pairs from other CAs fail the handshake itself (unknown_ca), as they are
        # in no CA the handshake trusts.
        handshake_cas = []

        def accept(info: Optional[ClientCertInfo]) -> bool:
            return info is not None and info.trusted and not refusing.is_set()

        extra = {"accept": accept, "status": spec.status}
    server = MTLSServer(
        server_cert=server_ca.issue_server("localhost", "127.0.0.1", *spec.names),
        client_ca=client_ca,
        reject=spec.reject,
        handshake_cas=handshake_cas,
        tls_version=spec.tls,
        send_ca_names=spec.send_ca_names,
        max_workers=spec.max_workers,
        idle_timeout=120.0,
        handshake_timeout=10.0,
        **extra,
    )
    deadline = time.monotonic() + SERVER_DEADLINE
    with server:
        # Without TCP_NODELAY, a new connection's first response waits ~40 ms for a delayed
        # ACK (Nagle: the session tickets are still unacknowledged). Real registries set it;
        # on Linux accepted sockets inherit it from the listener.
        for listener in getattr(server, "_listeners", ()):
            listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        print(json.dumps({"port": server.port}), flush=True)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([sys.stdin], [], [], remaining)[0]:
                break
            command = sys.stdin.readline().strip()
            if command not in ("stats", "take", "refuse", "allow"):
                break
            if command == "refuse":
                refusing.set()
            elif command == "allow":
                refusing.clear()
            records = server.requests
            reply = Counters(
                handshakes=server.handshakes,
                failed=server.failed_handshakes,
                connections=server.connections,
                requests=len(records),
                last_subject=records[-1].client_subject if records else None,
                errors=tuple(server.errors),
            )
            if command == "take":
                server.reset_counters()
            print(json.dumps(to_json(reply)), flush=True)


class ServerProcess:
    """The client side of ``--serve``: start, ask for counters, stop (always)."""

    def __init__(self, folder: Path, spec: Optional[ServerSpec] = None) -> None:
        self.spec = spec or ServerSpec()
        self.folder = folder
        self.port = 0
        self._proc: Optional[subprocess.Popen[str]] = None

    def __enter__(self) -> ServerProcess:
        argument = json.dumps({"dir": str(self.folder), **to_json(self.spec)})
        self._proc = subprocess.Popen(
            [sys.executable, str(ENTRY), "--serve", argument],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            self.port = json.loads(self._readline())["port"]
        except BaseException:
            self.__exit__()
            raise
        self.pki = Pki.read(self.folder)
        return self

    def _readline(self) -> str:
        assert self._proc is not None
        assert self._proc.stdout is not None
        if not select.select([self._proc.stdout], [], [], REPLY_TIMEOUT)[0]:
            raise RuntimeError("the benchmark server did not answer")
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError("the benchmark server exited")
        return line

    def command(self, name: str) -> Counters:
        assert self._proc is not None
        assert self._proc.stdin is not None
        self._proc.stdin.write(name + "\n")
        self._proc.stdin.flush()
        reply = from_json(Counters, json.loads(self._readline()))
        if reply.errors:
            raise RuntimeError(f"server errors: {list(reply.errors)}")
        return reply

    def take(self) -> Counters:
        """The counters since the last take, then reset them."""
        return self.command("take")

    def settled(self) -> Counters:
        """Counters once every accepted connection has finished its handshake (or failed)."""
        stats = self.command("stats")
        for _ in range(100):  # at most ~2 s
            if stats.connections == stats.handshakes + stats.failed:
                break
            time.sleep(0.02)
            stats = self.command("stats")
        return stats

    def __exit__(self, *exc_info: object) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError):
            assert proc.stdin is not None
            proc.stdin.close()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


@contextlib.contextmanager
def served(spec: ServerSpec) -> Iterator[tuple[ServerProcess, Path]]:
    """A server process, and the temporary folder that holds its material and the caller's
    certs.d (removed once the server has stopped)."""
    with (
        tempfile.TemporaryDirectory(prefix="dockercerts-bench-") as tmp,
        ServerProcess(Path(tmp) / "pki", spec) as srv,
    ):
        yield srv, Path(tmp)


@contextlib.contextmanager
def one_host(spec: ServerSpec, *, pairs: int) -> Iterator[tuple[ServerProcess, Path, str]]:
    """A server process and a certs.d with its one host, the right pair first: the server,
    the certs.d root and the host's URL."""
    with served(spec) as (srv, tmp):
        root = tmp / "certs.d"
        host = f"127.0.0.1:{srv.port}"
        write_host(root, host, srv.pki, pairs=pairs)
        yield srv, root, f"https://{host}/v2/"
