"""The test server's sockets on loopback: listeners on one free port for ``127.0.0.1``
(and ``::1``), and the readiness check that tells a worker whether more bytes are coming.

Internal to :class:`~dockercerts.testing.MTLSServer`.
"""

from __future__ import annotations

import errno
import select
import socket

__all__ = ["listen_on_loopback", "readable"]


def listen_on_loopback(*, ipv6: bool) -> list[socket.socket]:
    """Non-blocking listeners on a free port of ``127.0.0.1``, and with ``ipv6`` on the same
    port of ``::1`` (the IPv4 socket first)."""
    for _attempt in range(20):
        v4 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        v4.bind(("127.0.0.1", 0))
        if not ipv6:
            v4.listen(128)
            v4.setblocking(False)
            return [v4]
        port = v4.getsockname()[1]
        try:
            v6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        except OSError:
            v4.close()
            raise
        v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            v6.bind(("::1", port))
        except OSError as exc:
            v4.close()
            v6.close()
            if exc.errno == errno.EADDRINUSE:
                continue  # the port is free on IPv4 only: try another one
            raise
        for sock in (v4, v6):
            sock.listen(128)
            sock.setblocking(False)
        return [v4, v6]
    raise OSError("could not find a port free on both 127.0.0.1 and ::1")


def readable(sock: socket.socket, timeout: float) -> bool:
    """Whether ``sock`` has bytes to read within ``timeout`` seconds."""
    if hasattr(select, "poll"):  # not limited to descriptors below FD_SETSIZE like select()
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(timeout * 1000))
    ready, _, _ = select.select([sock], [], [], timeout)
    return bool(ready)
