"""certs.d material for the sections: the PEM files a server process writes, and host
folders with the right pair sorted k-th among pairs the server refuses."""

from __future__ import annotations

import dataclasses
import os
import ssl
from pathlib import Path
from typing import Optional

from dockercerts.testing import CA, CertsD

WILDCARD = "*.bench.test"  # names for many "hosts" served by one loopback server


@dataclasses.dataclass(frozen=True)
class Pki:
    """PEM material: the CA that signed the server, the accepted client and rejected ones."""

    server_ca: bytes
    right: tuple[bytes, bytes]
    wrong: tuple[tuple[bytes, bytes], ...]
    folder: Path

    @classmethod
    def read(cls, folder: Path) -> Pki:
        wrong = []
        for cert in sorted(folder.glob("wrong-*.cert")):
            wrong.append((cert.read_bytes(), cert.with_suffix(".key").read_bytes()))
        return cls(
            server_ca=(folder / "server-ca.pem").read_bytes(),
            right=((folder / "right.cert").read_bytes(), (folder / "right.key").read_bytes()),
            wrong=tuple(wrong),
            folder=folder,
        )

    @classmethod
    def local(cls, folder: Path, wrong: int = 4) -> Pki:
        """Material for sections that need no server."""
        folder.mkdir(parents=True, exist_ok=True)
        write_pki(folder, CA(name="bench server CA"), CA(name="bench client CA"), wrong)
        return cls.read(folder)

    def bare_context(self) -> ssl.SSLContext:
        """The baseline: ``ssl.create_default_context()`` + the server's CA + the right pair."""
        context = ssl.create_default_context()
        context.load_verify_locations(cadata=self.server_ca.decode("ascii"))
        context.load_cert_chain(self.folder / "right.cert", self.folder / "right.key")
        return context


def write_pki(
    folder: Path, server_ca: CA, client_ca: CA, wrong: int, untrusted: Optional[CA] = None
) -> None:
    """The server's CA, the accepted pair ``right`` and ``wrong`` pairs the server refuses."""
    (folder / "server-ca.pem").write_bytes(server_ca.cert_pem)
    client_ca.issue_client("right").write(folder / "right.cert", folder / "right.key")
    untrusted = untrusted or CA(name="bench untrusted CA")
    for number in range(1, wrong + 1):
        leaf = untrusted.issue_client(f"wrong-{number:02d}")
        leaf.write(folder / f"wrong-{number:02d}.cert", folder / f"wrong-{number:02d}.key")


def write_host(root: Path, host: str, pki: Pki, *, pairs: int, right_at: int = 1) -> Path:
    """``root/host``: ``ca.crt`` and ``pairs`` pairs, the right one sorted ``right_at``-th."""
    folder = CertsD(root).host(host).ca(pki.server_ca)
    wrong = iter(pki.wrong)
    for position in range(1, pairs + 1):
        cert, key = pki.right if position == right_at else next(wrong)
        folder.file(f"p{position:02d}.cert", cert).file(f"p{position:02d}.key", key)
        os.chmod(folder / f"p{position:02d}.key", 0o600)
    return folder.path
