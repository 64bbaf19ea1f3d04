"""The ``dockercerts`` command: ``inspect``, ``probe`` and ``demo``.

Docker's only feedback on a broken ``certs.d`` folder is one line in the daemon log. This
command explains instead: which folder Docker reads for a registry, what is in it and in which
order, what Docker would refuse and how to fix it (``inspect``); which client certificate a
registry accepts (``probe``); and a self-contained run of the transport against a local mTLS
registry (``demo``).

Every report is built as a plain dict first and then either dumped as JSON (``--json``, the
schema documented in ``docs/cli.md``) or rendered as text, so the two can never disagree.

Exit status: 0 clean, 1 warnings (``inspect``), 2 Docker would fail / no certificate accepted /
a usage error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import ipaddress
import json
import logging
import math
import os
import re
import shutil
import signal
import ssl
import stat
import sys
import tempfile
import threading
import traceback
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from http import HTTPStatus
from pathlib import Path
from types import FrameType
from typing import Any, Callable, Optional, TextIO, Union
from urllib.parse import urlsplit, urlunsplit

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from . import __version__, canames
from ._layouts import layout as _layout
from ._pem import ca_certificates as _crt_certificates
from .canames import ServerCANames
from .errors import (
    Attempt,
    CANamesError,
    CertsDirError,
    CertsDirReadError,
    CertsDirTransportError,
    InvalidHostError,
    KeyPairError,
    MissingCertificateError,
    MissingExtraError,
    MissingKeyError,
)
from .flow import Decision
from .gochoice import go_sends, issuer_listed, leaf_without_intermediate, name_text
from .loader import HostCerts, default_trust, load_dir, unwrap
from .locate import (
    certs_root,
    check_host,
    current_platform,
    host_dir,
    is_image_reference,
    registry_host,
    split_port,
)
from .proxies import ProxyRules
from .rejection import TLS13_REFUSAL
from .scan import ClientPair, extension, is_ca, read_capped, sorted_names, utc
from .transport import Transport, docker_host_names
from .trust import Trust

__all__ = ["SCHEMA", "main"]

#: Version of the ``--json`` output; bumped only when a key changes meaning or disappears.
SCHEMA = 1

Report = dict[str, Any]

_PLATFORMS = ("linux", "windows", "darwin", "freebsd")
_RUNTIMES = ("docker", "podman", "containerd")
_ROLES = {".crt": "ca", ".cert": "client-cert", ".key": "client-key"}
_ROLE_TEXT = {
    "ca": "CA root",
    "client-cert": "client cert",
    "client-key": "client key",
    "ignored": "ignored",
}
_SSL_LOCATION = re.compile(r" \(_ssl\.c:\d+\)")  # OpenSSL's source line: noise for users

log = logging.getLogger("dockercerts")


class CLIError(Exception):
    """A problem with what the user asked for: one line on stderr, with its fix, exit 2."""

    def __init__(self, message: str, fix: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix


# --------------------------------------------------------------------------- presentation

#: A table cell: plain text, or ``(style, text)`` to colour it.
Cell = Union[str, tuple[str, str]]

_CODES = {"bold": "1", "red": "31", "green": "32", "yellow": "33"}


def use_colour(
    stream: TextIO, mode: str = "auto", environ: Optional[dict[str, str]] = None
) -> bool:
    """Colour only on a terminal, never with a non-empty ``NO_COLOR`` or ``TERM=dumb``.

    An explicit ``--color always`` or ``never`` wins over the environment.
    """
    if mode in ("always", "never"):
        return mode == "always"
    env = os.environ if environ is None else environ
    if env.get("NO_COLOR") or env.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class Style:
    """``style("red+bold", text)``: ANSI colours when enabled, the text unchanged otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, name: str, text: str) -> str:
        if not self.enabled or not text:
            return text
        codes = ";".join(_CODES[part] for part in name.split("+"))
        return f"\x1b[{codes}m{text}\x1b[0m"


def table(rows: Sequence[Sequence[Cell]], style: Style, indent: str = "  ") -> list[str]:
    """Rows as aligned columns; colour is added after padding so columns line up either way."""
    plain = [[cell if isinstance(cell, str) else cell[1] for cell in row] for row in rows]
    widths: dict[int, int] = {}
    for texts in plain:
        for index, text in enumerate(texts[:-1]):
            widths[index] = max(widths.get(index, 0), len(text))
    lines = []
    for cells, texts in zip(rows, plain):
        parts = []
        for index, (cell, text) in enumerate(zip(cells, texts)):
            padding = "" if index == len(cells) - 1 else " " * (widths[index] - len(text))
            shown = text if isinstance(cell, str) else style(cell[0], text)
            parts.append(shown + padding)
        lines.append((indent + "  ".join(parts)).rstrip())
    return lines


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _iso(value: Optional[datetime]) -> Optional[str]:
    """ISO 8601 in UTC with a ``Z``, as documented for ``--json``."""
    if value is None:
        return None
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


# --------------------------------------------------------------------------- arguments


def classify(argument: str) -> tuple[str, str]:
    """``(kind, host)`` for an ``inspect`` argument: ``"url"``, ``"host"`` or ``"image"``.

    A bare ``name:port`` is a *host* here (as in ``docker login reg:5000``), although Docker
    would read ``reg:5000`` alone as the image ``reg`` with tag ``5000`` on Docker Hub.

        >>> classify("reg:5000"), classify("reg:5000/team/app:1.0"), classify("ubuntu:22.04")
        (('host', 'reg:5000'), ('image', 'reg:5000'), ('image', 'docker.io'))
    """
    text = argument.strip()
    if not text:
        raise CLIError("the argument is empty", "give a registry host, URL or image reference")
    if "://" in text:
        return "url", registry_host(text)
    if "/" not in text:
        with contextlib.suppress(InvalidHostError):
            return "host", check_host(text)
    name = _repository_name(text)
    if len(name) > _MAX_NAME:
        # Docker's limit (distribution/reference NameTotalLengthMax), checked before the
        # grammar: a 100 KB argument must be refused, not matched or echoed.
        raise CLIError(
            f"the repository name is {len(name)} characters long; Docker refuses names of "
            f"more than {_MAX_NAME} characters",
            "check the argument",
        )
    if not is_image_reference(text):
        raise CLIError(
            f"{_shorten(redact(argument))!r} is not a registry host, URL or image reference",
            "write a host (reg.example.com:5000), a URL (https://reg.example.com:5000/v2/) "
            "or an image reference (reg.example.com:5000/team/app:1.0)",
        )
    return "image", registry_host(text)


_MAX_NAME = 255  # Docker refuses repository names longer than this
_PORT_LIKE = re.compile(r"[^:/@]+:([0-9]+)\Z")


def _repository_name(text: str) -> str:
    """The name part of an image reference (no digest, no tag), for its length check."""
    name = text.split("@", 1)[0]
    last = name.rfind(":")
    return name[:last] if last > name.rfind("/") else name


def _shorten(text: str, most: int = 200) -> str:
    return text if len(text) <= most else text[:most] + "..."


def redact(argument: str) -> str:
    """``argument`` with the user name and password of a URL replaced by ``***``.

    >>> redact("https://alice:secret@reg:5000/v2/")
    'https://***@reg:5000/v2/'
    """
    if "://" not in argument or "@" not in argument:
        return argument
    scheme, rest = argument.split("://", 1)
    authority, sep, tail = rest.partition("/")
    if "@" not in authority:
        return argument
    return f"{scheme}://***@{authority.rsplit('@', 1)[1]}{sep}{tail}"


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


def _resolve_root(root: Optional[str], platform: str) -> Path:
    # Absolute, so a report copied from a terminal still says where the folder was.
    return Path(root).absolute() if root is not None else certs_root(platform=platform)


def _trust(value: Optional[str], platform: str) -> Trust:
    if value == "merge":
        return "merge"
    if value == "replace":
        return "replace"
    return default_trust(platform)


# --------------------------------------------------------------------------- certificates


def _certificates(data: bytes) -> list[x509.Certificate]:
    """Every certificate the loader would take from a ``.crt`` (Go's rules, in scan.py)."""
    return [x509.load_der_x509_certificate(der) for der in _crt_certificates(data)]


def _read_file(path: Path) -> Optional[bytes]:
    """The bytes of ``path`` read as the loader reads (regular files only, capped, never
    blocking), or ``None`` when it cannot be: the loader's error says why."""
    try:
        return read_capped(path, path.parent)
    except CertsDirError:
        return None


def _is_dir(path: Path) -> bool:
    """``Path.is_dir()`` that is ``False``, not an exception, when ``path`` cannot be
    reached (Python 3.11 raises ``PermissionError`` for a folder that is not searchable)."""
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def _root_state(path: Path) -> str:
    """``"directory"``, ``"missing"``, ``"not-a-directory"`` or ``"unreadable"``."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return "missing"
    except (OSError, ValueError):
        return "unreadable"
    return "directory" if stat.S_ISDIR(mode) else "not-a-directory"


def _kind(path: Path) -> tuple[str, Optional[str]]:
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


def _first_certificate(path: Path) -> Optional[x509.Certificate]:
    data = _read_file(path)
    found = _certificates(data) if data is not None else []
    return found[0] if found else None


def _key_matches(cert: x509.Certificate, key_path: Path) -> Optional[bool]:
    """Whether the (unencrypted) key at ``key_path`` belongs to ``cert``; None if unknown."""
    data = _read_file(key_path)
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
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return bool(key.public_key().public_bytes(*spki) == cert.public_key().public_bytes(*spki))


def _validity(not_before: Optional[datetime], not_after: Optional[datetime], now: datetime) -> str:
    if not_after is not None and not_after < now:
        return "expired"
    if not_before is not None and not_before > now:
        return "not-yet-valid"
    return "valid"


# --------------------------------------------------------------------------- inspect


def _files(directory: Path) -> list[Report]:
    """Every entry in Docker's order with the role Docker gives it (listing errors: none)."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []  # load_dir reports why, in Docker's terms
    entries = []
    for name in sorted_names(names):
        path = directory / name
        kind, link = _kind(path)
        entries.append(
            {
                "name": name,
                "path": str(path),
                "role": _ROLES.get(extension(name), "ignored"),
                "kind": kind,
                "link": link,
            }
        )
    return entries


def _ca_certificates(files: list[Report], now: datetime) -> list[Report]:
    found = []
    for entry in files:
        if entry["role"] != "ca" or entry["kind"] != "file":
            continue
        data = _read_file(Path(entry["path"]))
        if data is None:
            continue
        for cert in _certificates(data):
            not_before, not_after = utc(cert, "not_valid_before"), utc(cert, "not_valid_after")
            found.append(
                {
                    "file": entry["name"],
                    "subject": cert.subject.rfc4514_string(),
                    "issuer": cert.issuer.rfc4514_string(),
                    "not_before": _iso(not_before),
                    "not_after": _iso(not_after),
                    "validity": _validity(not_before, not_after, now),
                    "is_ca": is_ca(cert),
                    "self_signed": cert.subject == cert.issuer,
                    "fingerprint": cert.fingerprint(hashes.SHA256()).hex(),
                }
            )
    return found


def _pair(pair: ClientPair, now: datetime) -> Report:
    return {
        "name": pair.name,
        "cert": str(pair.cert),
        "key": str(pair.key),
        "subject": pair.subject,
        "issuer": pair.issuer,
        "key_type": pair.key_type,
        "not_before": _iso(pair.not_before),
        "not_after": _iso(pair.not_after),
        "validity": _validity(pair.not_before, pair.not_after, now),
        "chain_length": pair.chain_length,
        "fingerprint": pair.fingerprint,
    }


def _near_misses(root: Path, folder: str, host: str, platform: str, exists: bool) -> list[Report]:
    """Folders under ``root`` that look like the one Docker reads but are not it.

    Only what is on disk: whether a name and an IP address are the same registry cannot be
    known offline, so an IP-versus-name folder is mentioned only when it exists and the
    folder Docker reads does not (otherwise two registries on one port would be flagged).
    """
    try:
        entries = [e for e in os.listdir(root) if _is_dir(root / e)]
    except OSError:
        return []
    name, port = split_port(host)
    found = []
    for entry in sorted_names(entries):
        if entry == folder:
            continue
        reason, fix = _near_miss(entry, folder, host, name, port, platform, exists)
        if reason:
            found.append({"name": entry, "path": str(root / entry), "reason": reason, "fix": fix})
    return found


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


def _docker_error(exc: CertsDirError) -> Report:
    """Docker's message for ``exc`` and a fix that looks at the files involved."""
    message, fix = str(exc), ""
    if isinstance(exc, MissingKeyError):
        fix = _fix_missing_key(exc)
    elif isinstance(exc, MissingCertificateError):
        fix = _fix_missing_certificate(exc)
    elif isinstance(exc, KeyPairError):
        message = f"client pair {exc.cert.name} + {exc.key.name}: {exc.problem}"
        fix = exc.fix
    elif isinstance(exc, CertsDirReadError):
        message = f"cannot read {exc.path}: {exc.problem}"
        fix = exc.fix
    return {
        "type": type(exc).__name__,
        "message": message,
        "fix": fix,
        "paths": [str(p) for p in exc.paths],
    }


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


def _warning(code: str, path: Union[str, Path], message: str, fix: str) -> Report:
    return {"code": code, "path": str(path), "message": message, "fix": fix}


def _extra_warnings(
    certs: Optional[HostCerts], cas: list[Report], exists: bool, host: str, directory: Path
) -> list[Report]:
    """What the CLI adds to the loader's warnings: it can compare files with each other."""
    found = []
    if not exists and host != "docker.io":
        found.append(
            _warning(
                "host-directory-missing",
                directory,
                "no host directory: Docker trusts the system roots and sends no client certificate",
                "create it (the registry's CA as ca.crt, client pairs as <name>.cert + "
                "<name>.key), or check its name against the near misses",
            )
        )
    for ca in cas:
        if ca["validity"] == "expired":
            found.append(
                _warning(
                    "ca-cert-expired",
                    directory / ca["file"],
                    f"the CA certificate {ca['subject']} expired on {_day_iso(ca['not_after'])}",
                    "replace it with the registry's current CA certificate",
                )
            )
    if certs is not None:
        for w in leaf_without_intermediate(certs.pairs, certs.ca_certificates):
            found.append(_warning(w.code, w.path, w.message, w.fix))
    return found


def _day_iso(value: Optional[str]) -> str:
    return "?" if value is None else value[:10]


def inspect_report(
    argument: str,
    *,
    root: Optional[str] = None,
    platform: Optional[str] = None,
    trust: Optional[str] = None,
    now: Optional[datetime] = None,
    runtime: str = "docker",
    cert_dir: Optional[str] = None,
) -> Report:
    """Everything ``inspect`` knows about ``argument``, as the ``--json`` dict.

    ``runtime="podman"`` or ``"containerd"`` (or podman's ``cert_dir``): that runtime's
    report (:mod:`dockercerts._inspect_runtimes`).
    """
    if runtime != "docker" or cert_dir is not None:
        from ._inspect_runtimes import runtime_report  # it builds on this module

        return runtime_report(
            argument,
            runtime=runtime,
            root=root,
            cert_dir=cert_dir,
            platform=platform,
            trust=trust,
            now=now,
        )
    plat = platform or current_platform()
    kind, host = classify(argument)
    base = _resolve_root(root, plat)
    directory = host_dir(host, root=base, platform=plat)
    rule = _trust(trust, plat)
    when = now or datetime.now(timezone.utc)
    notes = _notes(argument, kind, host, plat, base, directory, root is None)

    files = _files(directory)
    cas = _ca_certificates(files, when)
    certs: Optional[HostCerts] = None
    error: Optional[Report] = None
    try:
        certs = load_dir(directory, platform=plat, trust=rule)
    except CertsDirError as exc:
        error = _docker_error(exc)
    exists = _is_dir(directory)
    warnings = [
        _warning(w.code, w.path, w.message, w.fix) for w in (certs.warnings if certs else ())
    ]
    # A folder that cannot be read is not a missing one: the error says what is wrong.
    warnings += _extra_warnings(certs, cas, exists or error is not None, host, directory)
    root_state = _root_state(base)
    exit_code = 2 if error else 1 if warnings else 0
    return {
        "schema": SCHEMA,
        "command": "inspect",
        "runtime": "docker",
        "argument": redact(argument),
        "argument_kind": kind,
        "host": host,
        "platform": plat,
        "trust": rule,
        "uses_system_roots": certs.uses_system_roots if certs else None,
        "root": str(base),
        "root_exists": root_state == "directory",
        "root_state": root_state,
        "directory": str(directory),
        "directory_exists": exists,
        "notes": notes,
        "near_misses": _near_misses(base, directory.name, host, plat, exists),
        "files": files,
        "ca_certificates": cas,
        "pairs": [_pair(p, when) for p in certs.pairs] if certs else [],
        "error": error,
        "warnings": warnings,
        "status": ("error", "warnings", "ok")[[2, 1, 0].index(exit_code)],
        "exit_code": exit_code,
    }


def _notes(
    argument: str,
    kind: str,
    host: str,
    platform: str,
    root: Path,
    directory: Path,
    default_root: bool,
) -> list[str]:
    notes = []
    text = argument.strip()
    # Only for dot-less names (reg:5000, localhost:5000): with a dot nobody means an image.
    if kind == "host" and ":" in text and "." not in text and is_image_reference(text):
        name, _, tag = text.partition(":")
        notes.append(
            f"read as a registry host, as 'docker login {text}' does (as an image reference "
            f"it would be the image {name}, tag {tag}, on Docker Hub)"
        )
    port = _PORT_LIKE.match(text)
    if kind == "image" and port is not None and int(port.group(1)) > 65535:
        notes.append(
            f"read as the image {text.split(':')[0]}, tag {port.group(1)}, on Docker Hub: "
            f"{port.group(1)} cannot be a port (ports end at 65535); if you meant a "
            "registry, check the port"
        )
    if host == "docker.io":
        notes.append(
            "Docker Hub: Docker reads no certs.d folder for Docker Hub pulls and pushes; a "
            "mirror uses the folder of the mirror's host[:port]"
        )
    if kind == "url":
        url = httpx.URL(text)
        names = docker_host_names(url)
        dirs = [host_dir(n, root=root, platform=platform) for n in names]
        chosen = next((d for d in dirs if _is_dir(d)), dirs[0])
        if chosen != directory:
            notes.append(f"dockercerts.Transport, given this URL, reads {chosen}")
    if default_root and platform != current_platform():
        notes.append(f"the {platform} root does not exist here: pass --root to read a copy")
    return notes


def _refusal(report: Report, style: Style) -> list[str]:
    """The loader's error in a report (inspect's or probe's), with its fix; none: nothing."""
    error = report["error"]
    if not error:
        return []
    lines = ["", style("red+bold", "Docker would refuse this directory"), f"  {error['message']}"]
    if error["fix"]:
        lines.append(f"  fix: {error['fix']}")
    return lines


def notes_and_near_misses(report: Report, style: Style, heading: str, label: str) -> list[str]:
    """The report's notes, then its near misses under ``heading``, each named by ``label``."""
    lines = [f"  note: {note}" for note in report["notes"]]
    if report["near_misses"]:
        lines += ["", style("bold", heading)]
        for miss in report["near_misses"]:
            lines.append(f"  {style('yellow', miss[label])}: {miss['reason']}")
            lines.append(f"    fix: {miss['fix']}")
    return lines


def render_inspect(report: Report, style: Style) -> list[str]:
    if report.get("runtime", "docker") != "docker":
        from ._inspect_runtimes import render_runtime  # it builds on this module

        return render_runtime(report, style)
    lines = [
        style("bold", f"dockercerts inspect {report['argument']}")
        + f"  ({_KIND_TEXT[report['argument_kind']]} -> {report['host']})"
    ]
    root_text = {
        "directory": "",
        "missing": "  (does not exist)",
        "not-a-directory": "  (not a directory)",
        "unreadable": "  (cannot be read)",
    }[report.get("root_state", "directory" if report["root_exists"] else "missing")]
    root_state = style("yellow", root_text) if root_text else ""
    if report["directory_exists"]:
        dir_state = ""
    elif report["error"] or root_text:
        dir_state = ""  # the root's state, or the error below, says what is wrong
    else:
        dir_state = style("yellow", "  (missing: system roots, no client certificate)")
    trust = (
        "system roots + the .crt files (merge)"
        if report["trust"] == "merge"
        else "only the .crt files; the system roots when there is none (replace)"
    )
    lines += table(
        [
            ["root", report["root"] + root_state],
            ["directory", report["directory"] + dir_state],
            ["platform", f"{report['platform']}; trust: {trust}"],
        ],
        style,
    )
    lines += notes_and_near_misses(report, style, "Near misses under the root", "name")

    if report["files"]:
        lines += ["", style("bold", "Files, in Docker's order")]
        rows: list[list[Cell]] = []
        for entry in report["files"]:
            role = _ROLE_TEXT[entry["role"]]
            extra = []
            if entry["kind"] != "file":
                extra.append(entry["kind"])
            if entry["link"] is not None:
                extra.append(f"-> {entry['link']}")
            rows.append(
                [
                    entry["name"],
                    ("dim", role) if entry["role"] == "ignored" else role,
                    " ".join(extra),
                ]
            )
        lines += table(rows, style)

    if report["ca_certificates"]:
        lines += ["", style("bold", "CA certificates (.crt)")]
        rows = []
        for ca in report["ca_certificates"]:
            expiry: Cell = f"expires {_day_iso(ca['not_after'])}"
            if ca["validity"] == "expired":
                expiry = ("red", f"EXPIRED {_day_iso(ca['not_after'])}")
            kind = "root" if ca["self_signed"] else "intermediate" if ca["is_ca"] else "not a CA"
            rows.append([ca["file"], ca["subject"], kind, expiry])
        lines += table(rows, style)

    if report["pairs"]:
        lines += ["", style("bold", "Client certificates, in the order they are tried")]
        rows = [["#", "pair", "subject", "issuer", "key", "validity", "chain"]]
        for number, pair in enumerate(report["pairs"], 1):
            validity: Cell = f"until {_day_iso(pair['not_after'])}"
            if pair["validity"] == "expired":
                validity = ("red", f"EXPIRED {_day_iso(pair['not_after'])}")
            elif pair["validity"] == "not-yet-valid":
                validity = ("yellow", f"from {_day_iso(pair['not_before'])}")
            n = pair["chain_length"]
            chain = "leaf only" if n == 1 else f"leaf + {_plural(n - 1, 'intermediate')}"
            rows.append(
                [
                    str(number),
                    pair["name"],
                    pair["subject"],
                    pair["issuer"],
                    pair["key_type"],
                    validity,
                    chain,
                ]
            )
        lines += table(rows, style)
    elif report["directory_exists"] and not report["error"]:
        lines += ["", "  No client certificate: connections send none."]

    lines += _refusal(report, style)

    if report["warnings"]:
        lines += ["", style("bold", "Warnings")]
        for warning in report["warnings"]:
            lines.append(
                f"  {style('yellow', '!')} {Path(warning['path']).name}: "
                f"{warning['message']}  [{warning['code']}]"
            )
            lines.append(f"    fix: {warning['fix']}")

    summary = {
        0: style("green", "OK: Docker would load this directory as it is"),
        1: style("yellow", f"{_plural(len(report['warnings']), 'warning')}"),
        2: style("red", "Docker would fail"),
    }[report["exit_code"]]
    lines += ["", f"Result: {summary} (exit {report['exit_code']})"]
    return lines


_KIND_TEXT = {"host": "registry host", "url": "URL", "image": "image reference"}


# --------------------------------------------------------------------------- probe


def _probe_url(argument: str) -> httpx.URL:
    """The URL to probe: https only, ``/v2/`` for no path, and never a user or password
    (probe tests client certificates; credentials would be sent as Basic auth)."""
    text = argument.strip()
    shown = _shorten(redact(argument))
    if "://" not in text:
        try:
            check_host(text)
        except InvalidHostError:
            raise CLIError(
                f"{shown!r} is neither an https:// URL nor a registry host",
                "write https://reg.example.com:5000/v2/ or reg.example.com:5000",
            ) from None
        text = f"https://{text}"
    try:
        parts = urlsplit(text)
    except ValueError as exc:  # an unclosed [ of an IPv6 literal, say
        raise CLIError(f"{shown!r} is not a valid URL: {exc}", "check the URL") from None
    if parts.scheme != "https":
        raise CLIError(
            f"{shown!r}: probe needs an https:// URL (client certificates travel over TLS)",
            f"write https://{redact(text).split('://', 1)[1]}",
        )
    if "@" in parts.netloc:
        text = urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
    registry_host(text)  # the same host check as everywhere else
    try:
        url = httpx.URL(text)
    except httpx.InvalidURL as exc:
        raise CLIError(f"{shown!r} is not a valid URL: {exc}", "check the URL") from None
    if url.path in ("", "/"):
        url = url.copy_with(path="/v2/")
    return url


# What a rejection usually means, for the reader of a probe; keyed by alert or verdict.
_REJECTION_HINTS = {
    "unknown_ca": "the registry does not trust the CA that issued this certificate",
    "bad_certificate": "the registry refused this certificate (untrusted CA, or none sent)",
    "certificate_expired": "the registry says this certificate has expired",
    "certificate_required": "the registry wants a client certificate and got none",
    "HTTP 400 No required SSL certificate was sent": (
        "nginx wants a client certificate and got none"
    ),
    "HTTP 400 The SSL certificate error": (
        "nginx could not verify this certificate (another CA, expired, or a missing intermediate)"
    ),
    TLS13_REFUSAL: (
        "the registry refused this certificate once the TLS 1.3 handshake was done "
        "(untrusted CA, expired, or none sent)"
    ),
}


def _error_hint(exc: BaseException, url: httpx.URL, timeout: float) -> str:
    text = " ".join(str(e) for e in _chain(exc))
    if "CERTIFICATE_VERIFY_FAILED" in text:
        # Only an untrusted issuer is fixed by a ca.crt; say what else OpenSSL found.
        if "Hostname mismatch" in text or "IP address mismatch" in text:
            return (
                f"the registry's server certificate is not valid for the name {url.host}: "
                "connect with a name the certificate lists, or have it reissued with "
                f"{url.host} among its subject alternative names"
            )
        if "certificate has expired" in text:
            return "the registry's server certificate has expired: it must be renewed"
        if "certificate is not yet valid" in text:
            return "the registry's server certificate is not valid yet: check this machine's clock"
        return (
            "the registry's server certificate is not trusted: put its CA in the host "
            "directory as ca.crt"
        )
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, httpx.ConnectError) and (
        "refused" in text.lower() or "Errno 111" in text or "Errno 61" in text
    ):
        return f"nothing listens on {url.host}:{url.port or 443}"
    return _NOT_A_REJECTION


_NOT_A_REJECTION = "not a client-certificate rejection: another certificate cannot help"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: Optional[BaseException] = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _http(status: int) -> str:
    try:
        return f"HTTP {status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"HTTP {status}"


def _probe_attempt(index: int, attempt: Attempt, subject: Optional[str]) -> Report:
    """One attempt record of the flow, as the probe shows it."""
    outcome = {"accepted": "accepted", "returned": "accepted", "error": "error"}.get(
        attempt.verdict, "rejected"
    )
    detail = attempt.outcome
    title = None
    if attempt.status is not None and not detail.startswith("HTTP 400 "):
        detail = _http(attempt.status)
        if attempt.status == 401 and outcome == "accepted" and "challenge" in attempt.outcome:
            detail += " (token auth challenge: says nothing about the certificate)"
    elif attempt.status == 400:
        title = detail[len("HTTP ") :]
    return {
        "index": index,
        "candidate": attempt.candidate,
        "subject": subject,
        "outcome": outcome,
        "detail": _SSL_LOCATION.sub("", detail),
        "layer": attempt.layer,
        "status": attempt.status,
        "title": title,
        "alert": attempt.alert,
        "tls_version": attempt.tls_version,
        "elapsed_ms": round((attempt.elapsed or 0.0) * 1000, 1),
        "hint": _REJECTION_HINTS.get(attempt.alert or "") or _REJECTION_HINTS.get(detail)
        if outcome == "rejected"
        else None,
    }


def _what_the_transport_does(
    decision: Optional[Decision[httpx.Response]], attempts: list[Report]
) -> tuple[Optional[int], str]:
    """The attempt the transport would settle on, and what it does, in words, from the
    flow's own decision (nothing is judged here)."""
    if decision is None or decision.chosen is None:
        return None, "does not connect: Docker would refuse the directory"
    chosen = attempts[decision.chosen]
    label = chosen["candidate"] or "no client certificate"
    if decision.rejected:
        return None, "raises ClientCertificateRejected: every candidate was rejected"
    if decision.error is not None:
        return None, (
            f"raises the error of candidate {chosen['index']}: it is not a "
            "client-certificate rejection, so no other certificate is tried"
        )
    if chosen["outcome"] == "accepted":
        return chosen["index"], (
            f"settles on {label} ({_ordinal(chosen['index'])} of {len(attempts)})"
        )
    return None, (
        f"returns the answer of candidate {chosen['index']} ({chosen['detail']}): every "
        "candidate was rejected, and this answer says the most"
    )


def probe_report(
    argument: str,
    *,
    root: Optional[str] = None,
    platform: Optional[str] = None,
    trust: Optional[str] = None,
    policy: str = "docker",
    timeout: float = 5.0,
    runtime: str = "docker",
    cert_dir: Optional[str] = None,
) -> Report:
    """Send one GET with every candidate in order through the transport's own flow (every
    candidate tried, nothing remembered) and report each verdict; the ``--json`` dict."""
    plat = platform or current_platform()
    url = _probe_url(argument)
    base = _resolve_root(root, plat)
    # Without --root, podman and containerd search their own roots.
    where = base if root is not None or runtime == "docker" else None
    folders = _layout(runtime, root=where, cert_dir=cert_dir, platform=plat)
    host_names = folders.names(url)
    directory = folders.pick(host_names, folders.paths(host_names))
    rule = _trust(trust, plat) if runtime == "docker" else _trust(trust or "merge", plat)
    attempts: list[Report] = []
    error: Optional[Report] = None
    certs: Optional[HostCerts] = None
    decision: Optional[Decision[httpx.Response]] = None
    try:
        certs = unwrap(folders.read(directory, host_names, rule, None))
    except CertsDirError as exc:
        error = _docker_error(exc)
    if certs is not None:
        subjects = {p.name: p.subject for p in certs.pairs}
        chains = {p.name: p.chain_issuers for p in certs.pairs}
        # refresh=0: read the folder now, as Docker does for each pull. No redirect is
        # followed: a probe reaches only this host (through the environment's proxy, if any,
        # as the transport does).
        with Transport(
            root=where,
            platform=plat,
            trust=rule,
            policy=policy,
            refresh=0,
            runtime=runtime,
            cert_dir=cert_dir,
        ) as t:
            request = httpx.Request(
                "GET", url, extensions={"timeout": httpx.Timeout(timeout).as_dict()}
            )
            try:
                decision = t.decide(request, every_candidate=True)
            except CertsDirTransportError as exc:  # changed on disk since load_dir
                error = _docker_error(exc.error)
            if decision is not None and decision.response is not None:
                decision.response.close()
        for index, attempt in enumerate(decision.attempts if decision else (), 1):
            record = _probe_attempt(index, attempt, subjects.get(attempt.candidate or ""))
            if decision is not None and decision.chosen == index - 1 and decision.error:
                record["hint"] = _error_hint(decision.error, url, timeout)
            elif record["outcome"] == "error":
                record["hint"] = (
                    "not a client-certificate rejection: another certificate cannot help"
                )
            chain = chains.get(attempt.candidate or "", ())
            record["issuers"] = [name_text(der) for der in chain]
            record["issuer_listed"] = None  # known once the server's CA names are
            attempts.append(record)
    winner, transport = _what_the_transport_does(decision, attempts)
    names: Optional[Report] = None
    go: Optional[Report] = None
    if certs is not None and attempts:
        names, found = _server_ca_names(url, timeout)
        if found is not None:
            loaded = certs

            def no_certificate() -> Optional[Report]:
                return _without_certificate(loaded, url, base, plat, rule, policy, timeout)

            go = _what_go_does(found, certs, attempts, no_certificate)
    return {
        "schema": SCHEMA,
        "command": "probe",
        "runtime": runtime,
        "url": str(url),
        "platform": plat,
        "trust": rule,
        "policy": policy,
        "root": str(folders.roots[0]),
        "directory": str(directory),
        "directory_exists": _is_dir(directory),
        "ca_files": [str(p) for p in certs.ca_files] if certs else [],
        "error": error,
        "attempts": attempts,
        "winner": winner,
        "transport": transport,
        "ca_names": names,
        "go": go,
        "exit_code": 0 if winner is not None else 2,
    }


_PROBE_EXTRA = "pip install 'dockercerts[probe]'"


def _server_ca_names(url: httpx.URL, timeout: float) -> tuple[Report, Optional[ServerCANames]]:
    """The CA names the server's CertificateRequest lists, read as the transport would
    (through the environment's proxy, if any), for the report; or why they could not be."""
    report: Report = {
        "read": False,
        "requested": None,
        "names": [],
        "tls_version": None,
        "error": None,
        "install": None,
    }
    proxy = ProxyRules.make(None, trust_env=True).for_url(url)
    try:
        found = canames.read_ca_names(url.host, url.port or 443, timeout=timeout, proxy=proxy)
    except MissingExtraError:
        report.update(error="pyOpenSSL is not installed", install=_PROBE_EXTRA)
        return report, None
    except CANamesError as exc:
        report["error"] = _SSL_LOCATION.sub("", exc.reason)
        return report, None
    report.update(
        read=True,
        requested=found.requested,
        names=list(found.texts),
        tls_version=found.tls_version,
    )
    return report, found


def _what_go_does(
    found: ServerCANames,
    certs: HostCerts,
    attempts: list[Report],
    no_certificate: Callable[[], Optional[Report]],
) -> Report:
    """Which pair Docker (Go) sends, and what the server made of it, beside the attempts
    (each gets ``issuer_listed``).

    Go's choice is :func:`~dockercerts.gochoice.go_sends`. Whether it is accepted is the
    verdict the flow gave that pair; when Go sends nothing to a server that asks for a
    certificate, the verdict of ``no_certificate()``: one more request without one."""
    chains = {p.name: p.chain_issuers for p in certs.pairs}
    listed = frozenset(found.names)
    for attempt in attempts:
        chain = chains.get(attempt["candidate"] or "")
        if found.requested and listed and chain is not None:
            attempt["issuer_listed"] = issuer_listed(chain, listed)
    pairs = [chains[a["candidate"]] for a in attempts if a["candidate"] is not None]
    chosen = go_sends(pairs, found.names if found.requested else None)
    answer: Optional[Report]
    if chosen is not None:
        answer = attempts[chosen]
        why = (
            "the first pair with an issuer the server lists"
            if listed
            else "the server lists no CA names, so the first pair"
        )
    else:
        if not found.requested:
            why = "the server asks for no client certificate"
        elif not pairs:
            why = "the folder has no client pair"
        else:
            why = "no pair's issuer is among the CA names the server lists"
        # The first attempt sent no certificate either, unless the folder has pairs and
        # the server asked for one (then Go's "none" differs from every attempt).
        answer = no_certificate() if found.requested and pairs else attempts[0]
    accepted = None if answer is None else answer["outcome"] == "accepted"
    detail = None if answer is None else answer["detail"]
    if chosen is not None:
        label = f"{attempts[chosen]['candidate']} ({_ordinal(chosen + 1)})"
    else:
        label = "no certificate"
    verdict = {True: "accepted", False: "rejected", None: "outcome unknown"}[accepted]
    if accepted is False and detail:
        verdict += f", {detail}"
    return {
        "sends": None if chosen is None else attempts[chosen]["candidate"],
        "index": None if chosen is None else chosen + 1,
        "reason": why,
        "accepted": accepted,
        "detail": detail,
        "summary": f"Docker (Go) sends {label}: {why} ({verdict})",
    }


def _without_certificate(
    certs: HostCerts,
    url: httpx.URL,
    root: Path,
    platform: str,
    trust: Trust,
    policy: str,
    timeout: float,
) -> Optional[Report]:
    """One request with the folder's trust and no client certificate, judged by the flow:
    what the server answers Docker when Go finds no pair to send. The ``.crt`` files are
    copied to a folder of their own, so the transport reads them exactly as from the real
    one."""
    with tempfile.TemporaryDirectory(prefix="dockercerts-probe-") as tmp:
        folder = Path(tmp) / certs.directory.name
        folder.mkdir()
        for ca_file in certs.ca_files:
            try:
                shutil.copyfile(ca_file, folder / ca_file.name)
            except OSError:
                return None  # changed since it was loaded: no answer rather than a wrong one
        with Transport(
            root=tmp, platform=platform, trust=trust, policy=policy, refresh=0
        ) as transport:
            request = httpx.Request(
                "GET", url, extensions={"timeout": httpx.Timeout(timeout).as_dict()}
            )
            try:
                decision = transport.decide(request, every_candidate=True)
            except CertsDirTransportError:
                return None
            if decision.response is not None:
                decision.response.close()
    if not decision.attempts:
        return None
    return _probe_attempt(1, decision.attempts[0], None)


def render_probe(report: Report, style: Style) -> list[str]:
    lines = [style("bold", f"dockercerts probe {report['url']}")]
    if report["directory_exists"]:
        state = (
            f"({_plural(len(report['attempts']), 'candidate')}, "
            f"{_plural(len(report['ca_files']), 'CA file')})"
        )
        if report["attempts"] and report["attempts"][0]["candidate"] is None:
            state = f"(no client pair, {_plural(len(report['ca_files']), 'CA file')})"
    else:
        state = "(missing: system roots, no client certificate)"
    lines += table([["directory", f"{report['directory']}  {state}"]], style)
    lines += _refusal(report, style)
    if report["attempts"]:
        lines.append("")
        rows: list[list[Cell]] = [["#", "candidate", "subject", "result", "detail", "TLS", "time"]]
        colours = {"accepted": "green", "rejected": "red", "error": "yellow"}
        for attempt in report["attempts"]:
            detail = attempt["detail"]
            if attempt["title"] and attempt["title"] not in detail:
                detail += f" ({attempt['title']})"
            rows.append(
                [
                    str(attempt["index"]),
                    attempt["candidate"] or "(none)",
                    attempt["subject"] or "-",
                    (colours[attempt["outcome"]], attempt["outcome"]),
                    detail,
                    attempt["tls_version"] or "-",
                    f"{attempt['elapsed_ms']:.0f} ms",
                ]
            )
        lines += table(rows, style)
        for attempt in report["attempts"]:
            if attempt["hint"]:
                lines.append(f"  {attempt['index']}: {attempt['hint']}")
    lines += _render_ca_names(report.get("ca_names"), report["attempts"], style)
    lines.append("")
    go = report.get("go")
    if go is not None:
        colour = {True: "green", False: "red", None: "yellow"}[go["accepted"]]
        lines.append(style(colour, go["summary"]) + ".")
    verdict = style("green" if report["winner"] is not None else "red", report["transport"])
    lines.append(f"The transport {verdict}. (exit {report['exit_code']})")
    return lines


def _render_ca_names(names: Optional[Report], attempts: list[Report], style: Style) -> list[str]:
    """What the server asks for and which pairs it lists, or one line saying why not."""
    if names is None:
        return []
    if not names["read"]:
        if names["install"]:
            return [
                "",
                f"CA names the server asks for: not shown, {names['error']} "
                f"({names['install']} shows them, and what Docker would send)",
            ]
        return ["", f"CA names the server asks for: not read ({names['error']})"]
    version = f" ({names['tls_version']})" if names["tls_version"] else ""
    lines = ["", style("bold", f"CA names the server asks for{version}")]
    if not names["requested"]:
        return [*lines, "  none: the server asks for no client certificate"]
    if not names["names"]:
        return [*lines, "  an empty list: any CA (Go sends the first pair)"]
    lines += [f"  {text}" for text in names["names"]]
    rows: list[list[Cell]] = [["#", "candidate", "issued by", "listed"]]
    for attempt in attempts:
        if attempt.get("issuer_listed") is None:
            continue
        listed = attempt["issuer_listed"]
        rows.append(
            [
                str(attempt["index"]),
                attempt["candidate"],
                ", ".join(attempt["issuers"]),
                ("green", "yes") if listed else ("yellow", "no"),
            ]
        )
    if len(rows) > 1:
        lines += ["", "  The pairs' chains, as Go matches them against those names:"]
        lines += table(rows, style)
    return lines


# --------------------------------------------------------------------------- demo


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
    from .testing import CA, CertsD, MTLSServer

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


# --------------------------------------------------------------------------- main


def _versions() -> str:
    import cryptography

    return (
        f"dockercerts {__version__} (Python {sys.version.split()[0]}, httpx {httpx.__version__}, "
        f"cryptography {cryptography.__version__}, {ssl.OPENSSL_VERSION})"
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; ``--debug`` and ``--color`` work before or after the command."""
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: a sub-command's default must not overwrite what was given before it.
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show tracebacks and dockercerts' debug log on stderr",
    )
    common.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default=argparse.SUPPRESS,
        help="colour output: auto (a terminal, NO_COLOR unset), always or never",
    )
    parser = argparse.ArgumentParser(
        prog="dockercerts",
        description="Explain and test Docker's certs.d client certificates for registries.",
        epilog="Exit status: 0 clean, 1 warnings, 2 Docker would fail or an error. "
        "Docs: docs/cli.md",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=_versions())
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def where(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--root", metavar="DIR", help="the certs.d folder (default: Docker's, per platform)"
        )
        sub.add_argument(
            "--platform",
            choices=_PLATFORMS,
            help="whose rules: folder names, default root and trust (default: this machine)",
        )
        sub.add_argument(
            "--trust",
            choices=("merge", "replace"),
            help="system roots plus the .crt files (merge, Linux) or only them (replace, "
            "Windows); default: the platform's rule",
        )
        sub.add_argument(
            "--runtime",
            choices=_RUNTIMES,
            default="docker",
            help="whose folders: docker (default), podman (containers/image: podman, skopeo, "
            "buildah, CRI-O) or containerd (hosts.toml: ctr, Kubernetes, nerdctl)",
        )
        sub.add_argument(
            "--cert-dir",
            metavar="DIR",
            help="podman's --cert-dir: one folder read for every host (with --runtime podman)",
        )
        sub.add_argument("--json", action="store_true", help="print the report as JSON")

    inspect = commands.add_parser(
        "inspect",
        parents=[common],
        help="explain the host directory Docker reads for a registry",
        description="Show the host directory Docker reads for HOST, URL or IMAGE-REF, what "
        "is in it, what Docker would refuse, and how to fix it. A bare name:port is a "
        "registry host here (as in 'docker login reg:5000').",
    )
    inspect.add_argument("target", metavar="HOST|URL|IMAGE-REF")
    where(inspect)

    probe = commands.add_parser(
        "probe",
        parents=[common],
        help="connect with every client certificate in turn and say which one is accepted",
        description="GET the URL once per candidate (client pair) of its host directory, in "
        "Docker's order, and show how the registry answered each and which one "
        "dockercerts.Transport would keep. A URL without a path gets /v2/.",
    )
    probe.add_argument("url", metavar="URL")
    where(probe)
    probe.add_argument(
        "--timeout", type=float, default=5.0, metavar="S", help="seconds per attempt (5)"
    )
    probe.add_argument(
        "--policy",
        choices=("docker", "docker-legacy", "tls-only"),
        default="docker",
        help="the rejection policy to judge answers by, as Transport(policy=...) (docker)",
    )

    demo = commands.add_parser(
        "demo",
        parents=[common],
        help="run a local mTLS registry and watch the transport pick the right certificate",
        description="Start a local mTLS registry, write a temporary certs.d folder whose "
        "first client certificate is wrong, and show inspect, the transport and probe at "
        "work. No network, no setup; everything is removed afterwards.",
    )
    demo.add_argument(
        "--keep", action="store_true", help="keep the temporary certs.d folder to explore it"
    )
    return parser


def _one_line(message: str, fix: str = "") -> str:
    text = " ".join(message.split())
    return f"dockercerts: error: {text}" + (f" (fix: {' '.join(fix.split())})" if fix else "")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; returns the exit status (the console script exits with it)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors: argparse has printed
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    debug = bool(getattr(args, "debug", False))
    out, err = sys.stdout, sys.stderr
    style = Style(use_colour(out, getattr(args, "color", "auto")))
    # The library logs its warnings; without a handler Python's last-resort handler would
    # print them on stderr next to the report that already explains them.
    handler: logging.Handler = logging.NullHandler()
    previous_level = log.level
    if debug:
        handler = logging.StreamHandler(err)
        handler.setFormatter(logging.Formatter("debug: %(name)s: %(message)s"))
        log.setLevel(logging.DEBUG)
    log.addHandler(handler)
    try:
        return _run(args, parser, out, style)
    except (CLIError, InvalidHostError, CertsDirError) as exc:
        if debug:
            traceback.print_exc(file=err)
        if isinstance(exc, CLIError):
            print(_one_line(exc.message, exc.fix), file=err)
        else:
            print(_one_line(str(exc)), file=err)
        return 2
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc(file=err)
        print("dockercerts: interrupted", file=err)
        return 130
    except BrokenPipeError:
        # The reader went away (| head): stop quietly; point stdout at devnull so the
        # interpreter's final flush does not fail again.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as exc:
        if debug:
            traceback.print_exc(file=err)
        print(
            _one_line(
                f"unexpected {type(exc).__name__}: {exc}",
                "run again with --debug and report the traceback",
            ),
            file=err,
        )
        return 2
    finally:
        log.removeHandler(handler)
        log.setLevel(previous_level)


_MAX_TIMEOUT = 86400  # a day; beyond some point the platform's clocks overflow


def _os_error(args: argparse.Namespace, exc: OSError, out: TextIO) -> int:
    """An ``OSError`` the report did not foresee: still a report (exit 2, JSON for --json).

    Every file-system call of the reports is meant to be caught where it happens; this is
    the net under them, so a folder nobody thought of never ends in a traceback.
    """
    where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
    message = f"{exc.strerror or type(exc).__name__}{where}"
    fix = "check the permissions and the type of the files and folders under the root"
    if args.json:
        report: Report = {
            "schema": SCHEMA,
            "command": args.command,
            "error": {"type": type(exc).__name__, "message": message, "fix": fix, "paths": []},
            "status": "error",
            "exit_code": 2,
        }
        print(json.dumps(report, indent=2), file=out)
    else:
        print(_one_line(f"cannot read the folder: {message}", fix), file=sys.stderr)
    return 2


def _run(
    args: argparse.Namespace, parser: argparse.ArgumentParser, out: TextIO, style: Style
) -> int:
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    if args.command == "demo":
        return run_demo(out, style, keep=args.keep)
    report: Report
    if args.cert_dir is not None and args.runtime != "podman":
        raise CLIError("--cert-dir is podman's option", "add --runtime podman, or use --root")
    if args.command == "inspect":
        try:
            report = inspect_report(
                args.target,
                root=args.root,
                platform=args.platform,
                trust=args.trust,
                runtime=args.runtime,
                cert_dir=args.cert_dir,
            )
        except OSError as exc:
            return _os_error(args, exc, out)
        lines = render_inspect(report, style) if not args.json else []
    else:
        if not (math.isfinite(args.timeout) and 0 < args.timeout <= _MAX_TIMEOUT):
            raise CLIError(
                f"--timeout must be a positive number of seconds, at most {_MAX_TIMEOUT}",
                "e.g. --timeout 5",
            )
        if "@" in args.url.split("://", 1)[-1].split("/", 1)[0]:
            print(
                "dockercerts: note: the user name and password in the URL are not sent "
                "(credentials removed: probe tests client certificates only)",
                file=sys.stderr,
            )
        try:
            report = probe_report(
                args.url,
                root=args.root,
                platform=args.platform,
                trust=args.trust,
                policy=args.policy,
                timeout=args.timeout,
                runtime=args.runtime,
                cert_dir=args.cert_dir,
            )
        except OSError as exc:
            return _os_error(args, exc, out)
        lines = render_probe(report, style) if not args.json else []
    if args.json:
        print(json.dumps(report, indent=2), file=out)
    else:
        print("\n".join(lines), file=out)
    code: int = report["exit_code"]
    return code
