"""What is wrong with a host directory beyond Docker's own errors, and how to fix it.

Docker reports one error and nothing else; :func:`folder_warnings` adds what a user wants to
hear about: no host directory at all, an expired CA certificate, a client certificate saved
without its intermediate. :func:`~dockercerts.load` puts them on
:attr:`HostCerts.warnings <dockercerts.HostCerts.warnings>`, after the scan's own, so the
library and ``dockercerts inspect`` give the same diagnosis. :func:`explain` turns Docker's
error into a message and a fix that looks at the files involved.

The rest describes a folder for reports (its entries and their roles, the state of a root,
near misses: folders that look meant for the registry but are not the one read). Every
check here is computed from what the scan read, except where a folder fails to load: then
the scan has no result and :func:`explain` and :func:`ca_details_of` read the files they need.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .errors import (
    CertsDirError,
    CertsDirReadError,
    KeyPairError,
    MissingCertificateError,
    MissingKeyError,
)
from .gochoice import leaf_without_intermediate
from .hoststoml import HOSTS_TOML, Endpoint, is_localhost
from .locate import split_port
from .scan import (
    MOBY,
    CACertificate,
    CertsWarning,
    Dialect,
    Scan,
    ca_certificates,
    describe_ca,
    describe_cas,
    extension,
    is_ca,
    read_capped,
    same_public_key,
    sorted_names,
)

__all__ = [
    "HOST_DIRECTORY_MISSING",
    "NOT_LOGGED",
    "Entry",
    "NearMiss",
    "ca_details_of",
    "entries",
    "expired_cas",
    "explain",
    "folder_cas",
    "folder_warnings",
    "is_dir",
    "kind_of",
    "localhost_note",
    "missing_folder",
    "near_misses",
    "no_endpoint_warning",
    "refused_folder_warnings",
    "root_state",
]

HOST_DIRECTORY_MISSING = "host-directory-missing"
#: Warning codes the loader and the transport do not log: most registries have no folder,
#: and a log line per host would bury the warnings that matter.
NOT_LOGGED = frozenset({HOST_DIRECTORY_MISSING})

_ROLES = {".crt": "ca", ".cert": "client-cert", ".key": "client-key"}


def folder_warnings(
    found: Scan, dialect: Dialect = MOBY, now: Optional[datetime] = None
) -> tuple[CertsWarning, ...]:
    """The warnings that compare a folder's files with each other, or note its absence.

    ``host-directory-missing`` (none for Docker Hub under Docker's rules: Docker reads no
    folder for it), ``ca-cert-expired`` per expired ``.crt`` certificate, and
    ``leaf-without-intermediate`` (see :func:`~dockercerts.gochoice.leaf_without_intermediate`).
    """
    found_warnings: list[CertsWarning] = []
    # Docker reads no folder for Docker Hub; the other runtimes do.
    if not found.exists and (dialect is not MOBY or found.directory.name != "docker.io"):
        found_warnings.append(missing_folder(dialect.name, found.directory))
    when = now or datetime.now(timezone.utc)
    expired = [i for i, not_after in enumerate(found.ca_expiry) if not_after < when]
    if expired:  # only those are described (a subject to name): a large bundle is not
        found_warnings.extend(
            expired_cas(
                describe_cas(
                    tuple(found.ca_sources[i] for i in expired),
                    tuple(found.ca_der[i] for i in expired),
                ),
                when,
            )
        )
    if found.pairs:  # without pairs there is nothing to check, and a bundle is not parsed
        found_warnings.extend(leaf_without_intermediate(found.pairs, found.ca_der))
    return tuple(found_warnings)


def missing_folder(runtime: str, path: Path) -> CertsWarning:
    """``host-directory-missing`` for ``runtime`` (``"docker"``, ``"podman"``,
    ``"containerd"``); ``path`` is the folder it would read first."""
    if runtime == "docker":
        return CertsWarning(
            HOST_DIRECTORY_MISSING,
            path,
            "no host directory: Docker trusts the system roots and sends no client certificate",
            "create it (the registry's CA as ca.crt, client pairs as <name>.cert + "
            "<name>.key), or check its name against the near misses",
        )
    return CertsWarning(
        HOST_DIRECTORY_MISSING,
        path,
        f"no folder in any root: {runtime} trusts the system roots and sends no client certificate",
        "create one of the folders listed as tried, or check the near misses",
    )


def expired_cas(
    details: tuple[CACertificate, ...], now: Optional[datetime] = None
) -> tuple[CertsWarning, ...]:
    """``ca-cert-expired`` for each certificate of ``details`` expired at ``now``."""
    when = now or datetime.now(timezone.utc)
    return tuple(
        CertsWarning(
            "ca-cert-expired",
            ca.file,
            f"the CA certificate {ca.subject} expired on {ca.not_after:%Y-%m-%d}",
            "replace it with the registry's current CA certificate",
        )
        for ca in details
        if ca.not_after < when
    )


def refused_folder_warnings(directory: Path) -> tuple[CertsWarning, ...]:
    """What can still be said of a folder Docker refuses: its expired CA certificates."""
    return expired_cas(ca_details_of(directory))


# --------------------------------------------------------------------------- errors


def explain(exc: CertsDirError) -> tuple[str, str]:
    """``(message, fix)`` for Docker's error ``exc``; the fix looks at the files involved."""
    if isinstance(exc, MissingKeyError):
        return str(exc), _fix_missing_key(exc)
    if isinstance(exc, MissingCertificateError):
        return str(exc), _fix_missing_certificate(exc)
    if isinstance(exc, KeyPairError):
        return f"client pair {exc.cert.name} + {exc.key.name}: {exc.problem}", exc.fix
    if isinstance(exc, CertsDirReadError):
        return f"cannot read {exc.path}: {exc.problem}", exc.fix
    return str(exc), ""


def _read(path: Path) -> Optional[bytes]:
    """The bytes of ``path`` as the loader reads them, or ``None``: its error says why."""
    try:
        return read_capped(path, path.parent)
    except CertsDirError:
        return None


def _first_certificate(path: Path) -> Optional[x509.Certificate]:
    data = _read(path)
    found = ca_certificates(data) if data is not None else []
    return x509.load_der_x509_certificate(found[0]) if found else None


def _key_matches(cert: x509.Certificate, key_path: Path) -> Optional[bool]:
    """Whether the (unencrypted) key at ``key_path`` belongs to ``cert``; None if unknown."""
    data = _read(key_path)
    if data is None:
        return None
    try:
        key = serialization.load_pem_private_key(
            data, password=None, unsafe_skip_rsa_key_validation=True
        )
    except Exception:  # encrypted, unsupported: we simply cannot tell
        return None
    finally:
        del data  # no key bytes in this frame once it is done
    return same_public_key(cert, key)


def _fix_missing_key(exc: MissingKeyError) -> str:
    stem = exc.cert.name[: -len(".cert")]
    cert = _first_certificate(exc.cert)
    if cert is not None and is_ca(cert):
        return (
            f"{exc.cert.name} holds a CA certificate ({cert.subject.rfc4514_string()}): "
            f"rename {exc.cert.name} -> {stem}.crt"
        )
    if cert is None:
        return f"rename {exc.cert.name} -> {stem}.crt if it is a CA root, else remove it"
    return (
        f"{exc.cert.name} is a client certificate ({cert.subject.rfc4514_string()}): "
        f"put its private key beside it as {exc.key.name}"
    )


def _fix_missing_certificate(exc: MissingCertificateError) -> str:
    stem = exc.key.name[: -len(".key")]
    sibling = exc.key.parent / f"{stem}.crt"
    cert = _first_certificate(sibling)
    if cert is None:
        return f"add the client certificate as {exc.cert.name}, or remove {exc.key.name}"
    layout = "a Kubernetes TLS secret layout (tls.crt + tls.key); " if stem == "tls" else ""
    if is_ca(cert):
        return (
            f"{layout}{sibling.name} holds a CA certificate, so it stays; add the client "
            f"certificate as {exc.cert.name}, or remove {exc.key.name}"
        )
    matches = _key_matches(cert, exc.key)
    if matches is False:
        return (
            f"{layout}{sibling.name} is not the certificate of {exc.key.name}; add the "
            f"right one as {exc.cert.name}, or remove {exc.key.name}"
        )
    return (
        f"{layout}Docker reads .crt as a CA root: if {sibling.name} is the client "
        f"certificate{' (its key matches)' if matches else ''}, rename {sibling.name} -> "
        f"{exc.cert.name}"
    )


def ca_details_of(directory: Path) -> tuple[CACertificate, ...]:
    """The ``.crt`` certificates of a folder that failed to load, for its report.

    A loaded folder has them already (:attr:`HostCerts.ca_details`); this reads each
    ``.crt`` that is a regular file, in Docker's order, passing over those it cannot read.
    """
    found: list[CACertificate] = []
    for entry in entries(directory):
        if entry.role != "ca" or entry.kind != "file":
            continue
        data = _read(entry.path)
        if data is not None:
            found.extend(describe_ca(entry.path, der) for der in ca_certificates(data))
    return tuple(found)


# --------------------------------------------------------------------------- folders


@dataclass(frozen=True)
class Entry:
    """One name in a host directory: Docker's ``role`` for it (``"ca"``, ``"client-cert"``,
    ``"client-key"``, ``"ignored"``), what it is (``kind``, see :func:`kind_of`) and a
    symbolic link's target (``link``)."""

    name: str
    path: Path
    role: str
    kind: str
    link: Optional[str]


def entries(directory: Path) -> tuple[Entry, ...]:
    """Every name in ``directory`` in Docker's order; none when it cannot be listed (the
    loader's error says why)."""
    try:
        names = os.listdir(directory)
    except OSError:
        return ()
    found = []
    for name in sorted_names(names):
        path = directory / name
        kind, link = kind_of(path)
        found.append(Entry(name, path, _ROLES.get(extension(name), "ignored"), kind, link))
    return tuple(found)


def is_dir(path: Path) -> bool:
    """``Path.is_dir()`` that is ``False``, not an exception, when ``path`` cannot be
    reached (Python 3.11 raises ``PermissionError`` for a folder that is not searchable)."""
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def root_state(path: Path) -> str:
    """``"directory"``, ``"missing"``, ``"not-a-directory"`` or ``"unreadable"``."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return "missing"
    except (OSError, ValueError):
        return "unreadable"
    return "directory" if stat.S_ISDIR(mode) else "not-a-directory"


def kind_of(path: Path) -> tuple[str, Optional[str]]:
    """What ``path`` is, following links, and the link's target when it is one.

    ``"file"``, ``"directory"``, ``"fifo"``, ``"socket"``, ``"device"``,
    ``"dangling-symlink"``, ``"symlink-loop"``, ``"missing"`` or ``"unreadable"``.
    """
    link: Optional[str] = None
    try:
        if stat.S_ISLNK(os.lstat(path).st_mode):
            with contextlib.suppress(OSError):
                link = os.readlink(path)
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return ("dangling-symlink" if link is not None else "missing"), link
    except OSError as exc:
        return ("symlink-loop" if exc.errno == errno.ELOOP else "unreadable"), link
    if stat.S_ISREG(mode):
        return "file", link
    if stat.S_ISDIR(mode):
        return "directory", link
    if stat.S_ISFIFO(mode):
        return "fifo", link
    if stat.S_ISSOCK(mode):
        return "socket", link
    return "device", link


def folder_cas(folder: Path) -> list[str]:
    """The names of ``folder``'s ``.crt`` files, sorted; none when it cannot be listed."""
    try:
        return sorted(n for n in os.listdir(folder) if n.endswith(".crt"))
    except OSError:
        return []


# --------------------------------------------------------------------------- near misses


@dataclass(frozen=True)
class NearMiss:
    """A folder that looks meant for the registry but is not the one read, and why."""

    name: str
    path: Path
    reason: str
    fix: str


_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return True


def _maybe_same_machine(a: str, b: str) -> bool:
    """Two names that may well reach one registry: an IP and a name, or two loopback names.

    Two DNS names are not flagged: whether they resolve alike cannot be known offline.
    """
    if _is_ip(a) != _is_ip(b):
        return True
    return a.lower() in _LOOPBACK_NAMES and b.lower() in _LOOPBACK_NAMES


def near_misses(
    root: Path, folder: str, host: str, platform: str, exists: bool
) -> tuple[NearMiss, ...]:
    """Folders under ``root`` that look like ``folder``, the one Docker reads for ``host``.

    Only what is on disk: whether a name and an IP address are the same registry cannot be
    known offline, so an IP-versus-name folder is mentioned only when it exists and the
    folder Docker reads does not (otherwise two registries on one port would be flagged).
    """
    try:
        names = [e for e in os.listdir(root) if is_dir(root / e)]
    except OSError:
        return ()
    name, port = split_port(host)
    found = []
    for entry in sorted_names(names):
        if entry == folder:
            continue
        reason, fix = _near_miss(entry, folder, host, name, port, platform, exists)
        if reason:
            found.append(NearMiss(entry, root / entry, reason, fix))
    return tuple(found)


def _near_miss(
    entry: str,
    folder: str,
    host: str,
    name: str,
    port: Optional[str],
    platform: str,
    exists: bool,
) -> tuple[str, str]:
    rename = f"rename {entry} -> {folder}"
    if entry.lower() == folder.lower():
        return (
            "differs only in case; Docker names the folder exactly as the reference is written",
            f"{rename}, or write the reference as {entry}",
        )
    if port is not None and entry in (f"{name}_{port}_", f"{name.strip('[]')}_{port}_"):
        return (
            "containerd's spelling (host_port_); Docker's classic loader does not read it",
            f"copy it to {folder}",
        )
    if platform == "windows":
        if entry == host:
            return ("a Linux-style name; on Windows Docker removes every ':'", rename)
        if port is not None and entry == name:
            return ("the same host without the port", f"{rename} if references say {host}")
        return "", ""
    if port is not None and entry == host.replace(":", ""):
        return (
            "a Windows-style name (':' removed); on Linux and macOS Docker keeps the ':'",
            rename,
        )
    entry_name, entry_port = split_port(entry)
    if entry_name == name and entry_port != port:
        if port is not None and entry_port is None:
            return (
                f"the same host without the port; references written {host}/... use {folder}",
                f"{rename} if your references include :{port}",
            )
        if port is None:
            return (
                f"the same host with :{entry_port}; Docker uses it only for references "
                f"written {entry}/...",
                f"{rename} if your references have no port",
            )
        return (
            f"the same host on another port ({entry_port})",
            "use the port your image references are written with",
        )
    if not exists and entry_port == port and _maybe_same_machine(entry_name, name):
        return (
            f"same port, {entry_name} instead of {name}; Docker never resolves one name to "
            "the other, it uses the name as written in the reference",
            f"{rename} if your references say {host}/...",
        )
    return "", ""


def no_endpoint_warning(folder: Path, host: str, endpoints: Sequence[str]) -> CertsWarning:
    """``no-endpoint-for-host``: the containerd folder names no endpoint at ``host`` itself,
    only ``endpoints`` (their URLs)."""
    others = ", ".join(endpoints)
    return CertsWarning(
        "no-endpoint-for-host",
        folder / HOSTS_TOML,
        f"names no endpoint at {host} (containerd sends these requests to: {others}); the "
        "transports route registry requests there too, but this host's own TLS (for load() "
        "and the requests adapter, which do not route) is the system roots and no client "
        "certificate",
        f'Add [host."https://{host}"] with its ca/client, or send the requests to one of '
        "those endpoints",
    )


def localhost_note(endpoint: Endpoint, registry: str) -> Optional[str]:
    """What containerd does that dockercerts does not, for an endpoint it made up for a
    loopback registry: it skips TLS verification there."""
    port = split_port(registry)[1]
    if endpoint.implicit and is_localhost(registry) and port != "80":
        return (
            f"containerd skips TLS verification for {registry} (a loopback registry with no "
            "server in hosts.toml); dockercerts verifies it"
        )
    return None
