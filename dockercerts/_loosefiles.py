"""containerd's rules for a registry folder without a usable ``hosts.toml``: its loose files
(``loadCertFiles``) read as the server's TLS settings."""

from __future__ import annotations

import os
from pathlib import Path

from ._gowords import os_error
from .errors import CertsDirReadError, EndpointTLSError
from .hoststoml import HOSTS_TOML, ClientEntry, Endpoint, Ignored
from .scan import sorted_names

__all__ = ["loose_files"]


def loose_files(folder: Path, registry: str) -> tuple[Endpoint, list[Ignored]]:
    """containerd's ``loadCertFiles``: the folder's files as the server's TLS settings."""
    try:
        entries = {e.name: e for e in os.scandir(folder)}
    except FileNotFoundError:
        entries = {}
    except OSError as exc:
        raise CertsDirReadError(
            folder,
            folder,
            os_error("open", folder, exc),
            "Fix the folder's permissions, or run as a user that can read it",
        ) from None
    ca: list[Path] = []
    client: list[ClientEntry] = []
    ignored: list[Ignored] = []
    for name in sorted_names(entries):
        entry = entries[name]
        path = folder / name
        try:
            is_dir = entry.is_dir(follow_symlinks=False)
        except OSError:
            is_dir = False
        if is_dir:
            ignored.append(Ignored(name, "a sub-folder: containerd skips it"))
            continue
        if name.endswith(".crt"):
            ca.append(path)
        elif name.endswith(".cert"):
            key = folder / (name[: -len(".cert")] + ".key")
            try:
                os.stat(key)
            except FileNotFoundError:
                client.append(ClientEntry(path))  # read as certificate and key in one file
                continue
            except OSError as exc:
                raise EndpointTLSError(
                    os_error("stat", key, exc),
                    key,
                    endpoint=registry,
                    fix="Fix the key's permissions, or run as a user that can read it",
                ) from None
            client.append(ClientEntry(path, key))
        elif name.endswith(".key"):
            if name[: -len(".key")] + ".cert" not in entries:
                ignored.append(
                    Ignored(
                        name,
                        "a .key without its .cert: containerd ignores it (Docker would refuse "
                        "the folder)",
                    )
                )
        elif name != HOSTS_TOML:
            ignored.append(Ignored(name, "not .crt, .cert or .key: containerd ignores it"))
    server = Endpoint(
        key="",
        scheme="",
        host="",
        path="",
        ca=tuple(ca) if ca else None,
        client=tuple(client) if client else None,
        is_server=True,
    )
    return server, ignored
