"""TLS handshakes between two ``ssl`` contexts through memory BIOs, for trust tests.

No sockets: the client and server objects are pumped in turns until both are done, so a
test can compare what different trust setups accept without starting a server.
"""

from __future__ import annotations

import ssl
from typing import Optional

__all__ = ["handshake", "verdict"]


def handshake(
    client_ctx: ssl.SSLContext, server_ctx: ssl.SSLContext, hostname: str = "localhost"
) -> ssl.SSLObject:
    """A full TLS handshake over memory; raises the client's ``ssl.SSLError`` on failure."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=hostname)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    client_done = server_done = False
    server_error: Optional[ssl.SSLError] = None
    for _ in range(50):
        if not client_done:
            try:
                client.do_handshake()
                client_done = True
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        if not server_done and server_error is None:
            try:
                server.do_handshake()
                server_done = True
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError as exc:  # the client will see the alert
                server_error = exc
        c_in.write(s_out.read())
        if client_done and (server_done or server_error):
            break
    if server_error is not None:
        raise server_error
    assert client_done, "handshake did not finish"
    return client


def verdict(
    client_ctx: ssl.SSLContext, server_ctx: ssl.SSLContext, hostname: str = "localhost"
) -> str:
    """``"ok"``, or ``"refused: <why>"`` when the client refused the server's certificate."""
    try:
        handshake(client_ctx, server_ctx, hostname)
    except ssl.SSLCertVerificationError as exc:
        return f"refused: {exc.verify_message}"
    return "ok"
