"""``dockercerts demo``: a local mTLS registry, a folder whose first certificate is wrong, and
the transport, inspect and probe at work on it.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any, Callable, Optional, TextIO

import httpx

from ..transport import Transport
from .inspect import inspect_report, render_inspect
from .probe import probe_report, render_probe
from .render import Cell, Style, table

log = logging.getLogger("dockercerts")


class _Capture(logging.Handler):
    """Collects the transport's own log lines, to show its decisions as it makes them."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C while the demo runs, so its cleanup runs for both."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Optional[FrameType]) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_demo(out: TextIO, style: Style, *, keep: bool = False) -> int:
    """The README's first command: everything local, cleaned up even on Ctrl-C."""
    from ..testing import CA, CertsD, MTLSServer

    def say(*lines: str) -> None:
        for line in lines:
            print(line, file=out)
        out.flush()

    server: Optional[MTLSServer] = None
    # The handler first, then the folder: a SIGTERM in between would leak it.
    with _terminate_as_interrupt():
        tmp = Path(tempfile.mkdtemp(prefix="dockercerts-demo-"))
        try:
            say(
                style("bold", "dockercerts demo"),
                "A local mTLS registry, a certs.d folder whose first client certificate is wrong,",
                "and dockercerts.Transport stepping to the right one. Nothing leaves this machine.",
                "",
            )
            good_ca = CA(name="demo registry client CA")
            old_ca = CA(name="old laptop CA")
            wrong = old_ca.issue_client("old-laptop")
            right = good_ca.issue_client("ci-runner")
            # Assigned before start(): stop() is safe on a server that never started.
            server = MTLSServer(client_ca=good_ca, reject="tls")
            server.start()
            root = tmp / "certs.d"
            host = (
                CertsD(root)
                .host(server.host)
                .ca(server.server_ca)
                .pair("a-old-laptop", wrong)
                .pair("b-ci-runner", right)
            )
            say(style("bold", "1. The setup"))
            say(
                *table(
                    [
                        [
                            "registry",
                            f"{server.url}  (rejects untrusted client certificates "
                            "in the TLS handshake, like docker-registry)",
                        ],
                        ["accepts", f"client certificates issued by {good_ca.subject}"],
                        ["certs.d", str(host.path)],
                        [
                            "",
                            f"a-old-laptop.cert  {wrong.subject}, issued by {old_ca.subject}"
                            "  (wrong, sorts first)",
                        ],
                        [
                            "",
                            f"b-ci-runner.cert   {right.subject}, issued by {good_ca.subject}"
                            "  (right)",
                        ],
                        ["", "ca.crt             the registry's server CA"],
                    ],
                    style,
                ),
                "",
            )

            say(style("bold", f"2. dockercerts inspect {server.url} --root {root}"))
            report = inspect_report(server.url, root=str(root))
            say(*("  " + line if line else "" for line in render_inspect(report, style)), "")

            say(style("bold", f"3. Three requests through dockercerts.Transport(root={root})"))
            ok = _demo_requests(server, root, say, style)
            say("")

            url = server.url + "/v2/_catalog"
            say(style("bold", f"4. dockercerts probe {url} --root {root}"))
            probe = probe_report(url, root=str(root))
            say(*("  " + line if line else "" for line in render_probe(probe, style)), "")
            ok = ok and probe["winner"] == 2
        finally:
            if server is not None:
                server.stop()
            if not keep:
                shutil.rmtree(tmp, ignore_errors=True)
    where = f"kept {tmp} (remove it when done)" if keep else f"removed {tmp}"
    say(f"Cleaned up: registry stopped, {where}.")
    if not ok:
        say(style("red", "The demo did not go as expected; please report it with the output."))
        return 1
    return 0


def _demo_requests(server: Any, root: Path, say: Callable[..., None], style: Style) -> bool:
    capture = _Capture()
    previous_level = log.level
    log.addHandler(capture)
    if log.getEffectiveLevel() > logging.INFO:
        log.setLevel(logging.INFO)
    url = server.url + "/v2/_catalog"
    rows: list[list[Cell]] = [["#", "request", "answer", "new TLS connections", "transport"]]
    counts = []
    statuses = []
    try:
        transport = Transport(root=root)
        with httpx.Client(transport=transport, timeout=5.0) as client:
            for number in (1, 2, 3):
                before = server.connections
                del capture.messages[:]
                response = client.get(url)
                new = server.connections - before
                counts.append(new)
                statuses.append(response.status_code)
                prefix = f"{server.host}: "
                said = [m[len(prefix) :] if m.startswith(prefix) else m for m in capture.messages]
                if not said:
                    kept = transport.winner(url)
                    said = [f"kept {kept} from an earlier request, connection reused"]
                answer = f"{response.status_code} {response.text.strip()}"
                rows.append([str(number), "GET /v2/_catalog", answer, str(new), said[0]])
                rows += [["", "", "", "", line] for line in said[1:]]
    finally:
        log.removeHandler(capture)
        log.setLevel(previous_level)
    say(*table(rows, style))
    story = ", then ".join(str(n) for n in counts)
    say(f"  Server side, new TLS connections per request: {story}.")
    expected = counts == [2, 0, 0] and statuses == [200, 200, 200]
    if expected:
        say(
            "  "
            + style(
                "green", "The wrong certificate was rejected once, the right one accepted and kept:"
            )
            + " later requests need no handshake at all."
        )
    return expected
