"""What is in a host directory: Docker's loop over the files, with no ``ssl`` involved.

:func:`scan` walks a host directory the way moby's ``loadTLSConfig`` does (see the spec,
section 2) and returns a frozen :class:`Scan`: the CA files and the certificates they hold,
the client pairs in try order, and diagnostics that Docker would not report but a user wants
to hear about. Every pair is read and checked here, with ``cryptography``, so a broken pair
fails at load time with a message naming both files, as it does in Docker.

:func:`snapshot` is the cheap half: a fingerprint of the directory (names, inodes, sizes,
times, following symlinks) that changes whenever anything Docker would read changes.
"""

from __future__ import annotations

import base64
import binascii
import errno
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional, Union

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from ._gil import let_others_run
from .errors import (
    DOCKER_NOTE,
    LEGACY_NOTE,
    CertsDirError,
    CertsDirReadError,
    KeyPairError,
    MissingCertificateError,
    MissingKeyError,
)

__all__ = [
    "CONTAINERS_IMAGE",
    "MAX_CA_FILE_SIZE",
    "MAX_PAIR_FILE_SIZE",
    "MOBY",
    "CACertificate",
    "CertsWarning",
    "ClientPair",
    "Dialect",
    "Password",
    "Scan",
    "Snapshot",
    "extension",
    "scan",
    "snapshot",
    "sorted_names",
    "tbs_names",
]


#: A key password: the bytes (or text) themselves, or a callable given the key's path.
Password = Union[bytes, str, Callable[[Path], Union[bytes, str]]]

# Go's pem.Decode trims spaces and tabs at the end of the BEGIN line; so does OpenSSL.
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----[ \t]*\r?\n(.*?)-----END \1-----", re.DOTALL)
# Names Docker ignores but a human probably meant as certificates or keys.
_NEAR_MISSES = {".pem", ".cer", ".der", ".ca", ".CRT", ".CERT", ".KEY", ".Crt", ".Cert", ".Key"}


@dataclass(frozen=True)
class ClientPair:
    """One client certificate: ``<name>.cert`` with ``<name>.key`` in the same directory.

    ``subject``, ``issuer``, ``not_before``/``not_after`` (UTC), ``key_type`` and
    ``chain_length`` (certificates in the ``.cert``) describe the leaf for reports.
    ``chain_issuers`` holds the issuer name of every certificate in the ``.cert``, in file
    order, as the DER bytes written in each certificate: what Go compares, byte for byte,
    with the CA names a server asks for (:mod:`dockercerts.gochoice`).
    """

    name: str
    cert: Path
    key: Path
    subject: str = ""
    issuer: str = ""
    not_before: Optional[datetime] = None
    not_after: Optional[datetime] = None
    key_type: str = ""
    chain_length: int = 1
    fingerprint: str = ""
    chain_issuers: tuple[bytes, ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class CACertificate:
    """One certificate of a ``.crt`` file, as read by the scan, for reports and checks.

    ``file`` is the ``.crt`` that holds it; ``fingerprint`` is its SHA-256, in hex.
    """

    file: Path
    subject: str
    issuer: str
    not_before: datetime
    not_after: datetime
    is_ca: bool
    self_signed: bool
    fingerprint: str


def describe_ca(file: Path, der: bytes) -> CACertificate:
    """The facts of one usable ``.crt`` certificate (``der``: as :func:`ca_certificates` gives)."""
    cert = x509.load_der_x509_certificate(der)
    return CACertificate(
        file=file,
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        not_before=utc(cert, "not_valid_before"),
        not_after=utc(cert, "not_valid_after"),
        is_ca=is_ca(cert),
        self_signed=cert.subject == cert.issuer,
        fingerprint=cert.fingerprint(hashes.SHA256()).hex(),
    )


@dataclass(frozen=True)
class CertsWarning:
    """Something Docker accepts silently but that is probably a mistake.

        ``code`` is stable (``"crt-without-certificate"``, ``"ignored-name"``,
        ``"client-cert-expired"``, ``"client-cert-not-yet-valid"``, ``"client-cert-is-ca"``,
    ``"key-readable-by-others"``); ``message`` says what is wrong
        and ``fix`` what to do about it. Warnings never change what is loaded.
    """

    code: str
    path: Path
    message: str
    fix: str

    def __str__(self) -> str:
        return f"{self.path.name}: {self.message} ({self.fix})"


@dataclass(frozen=True)
class Dialect:
    """How a runtime's loop differs from moby's, the default.

    containers/image (podman, skopeo, buildah) reads the same layout with the same pairing
    rules, but prints the pre-23.0 wording for a ``.cert`` without its ``.key``
    (``note``), reads a folder it may not list as an empty one (``skip_unlistable``) and
    passes over a ``.crt`` that is gone when read, a dangling link say (``skip_vanished``).
    """

    name: str
    note: str
    skip_unlistable: bool
    skip_vanished: bool


#: moby's ``loadTLSConfig``.
MOBY = Dialect("docker", DOCKER_NOTE, False, False)
#: containers/image's ``SetupCertificates``.
CONTAINERS_IMAGE = Dialect("podman", LEGACY_NOTE, True, True)


@dataclass(frozen=True)
class Snapshot:
    """A comparable fingerprint of a host directory at one moment (see :func:`snapshot`)."""

    entries: tuple[tuple[object, ...], ...]


@dataclass(frozen=True)
class Scan:
    """The outcome of reading one host directory, in Docker's order.

    ``ca_der`` holds every usable certificate of the ``.crt`` files, DER encoded, in order;
    ``ca_files`` lists the ``.crt`` files themselves (a ``.crt`` with nothing usable still
    counts, as in Go). ``pairs`` are sorted by the bytes of their names: the try order.
    ``ca_details`` describes each of ``ca_der``, in the same order (see :class:`CACertificate`).
    """

    directory: Path
    exists: bool
    ca_files: tuple[Path, ...]
    ca_der: tuple[bytes, ...]
    pairs: tuple[ClientPair, ...]
    warnings: tuple[CertsWarning, ...]
    snapshot: Snapshot
    ca_details: tuple[CACertificate, ...] = ()


def extension(name: str) -> str:
    """Docker's extension: the suffix from the last dot, case kept (``.crt`` for ``.crt``).

    Unlike :func:`os.path.splitext`, a leading dot counts, as in Go's ``filepath.Ext``.

        >>> extension(".crt"), extension("ca.crt.bak"), extension("ca.CRT"), extension("x")
        ('.crt', '.bak', '.CRT', '')
    """
    dot = name.rfind(".")
    return "" if dot == -1 else name[dot:]


def sorted_names(names: Iterable[str]) -> list[str]:
    """Names in Go's order: by their bytes (so ``B.cert`` sorts before ``a.cert``)."""
    return sorted(names, key=os.fsencode)


def _list(directory: Path) -> Optional[list[str]]:
    """The directory's names, or ``None`` when it does not exist (not an error in Docker)."""
    try:
        return os.listdir(directory)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        blocker = _file_above(directory)
        if blocker is not None:
            raise CertsDirReadError(
                directory,
                directory,
                f"not a directory: {blocker} is a file, not a folder",
                "The certs.d root and every folder above the host directory must be folders",
            ) from None
        raise CertsDirReadError(
            directory,
            directory,
            "not a directory",
            "A host directory must be a folder named after the registry (host[:port])",
        ) from None
    except PermissionError:
        raise CertsDirReadError(
            directory,
            directory,
            "permission denied while listing it",
            "Run as a user that can read it, or fix its permissions",
        ) from None
    except OSError as exc:
        raise CertsDirReadError(
            directory, directory, exc.strerror or str(exc), "Check the path"
        ) from None


#: The largest ``.crt`` file read, in bytes (8 MiB: ~13,000 PEM certificates; the biggest
#: public bundles are under 1 MiB). A larger one is a :class:`CertsDirReadError`. Read at
#: every load, so it can be changed at run time (``dockercerts.scan.MAX_CA_FILE_SIZE = ...``).
MAX_CA_FILE_SIZE = 8 * 1024 * 1024
#: The largest ``.cert`` or ``.key`` file read, in bytes (1 MiB: a chain of a thousand
#: certificates). A larger one is a :class:`CertsDirReadError`.
MAX_PAIR_FILE_SIZE = 1024 * 1024

_CHUNK = 1 << 20
# Opening must not block (a FIFO with no writer) and the descriptor must not leak to children.
_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
    | getattr(os, "O_NOCTTY", 0)
)
_KINDS = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _limit(path: Path) -> int:
    """The size cap for ``path``: :data:`MAX_CA_FILE_SIZE` for a ``.crt``, else the pair's."""
    return MAX_CA_FILE_SIZE if extension(path.name) == ".crt" else MAX_PAIR_FILE_SIZE


def _size_text(size: int) -> str:
    if size >= 1024 * 1024 and size % (1024 * 1024) == 0:
        return f"{size // (1024 * 1024)} MiB"
    if size >= 1024 and size % 1024 == 0:
        return f"{size // 1024} KiB"
    return f"{size} bytes"


def _not_regular(path: Path, directory: Path, mode: int) -> Optional[CertsDirReadError]:
    """The error for anything but a regular file, ``None`` for one.

    Go reads whatever the name points to, so Docker blocks forever on a FIFO and fills its
    memory from ``/dev/zero``; Docker has no rule to follow here, so the file is refused.
    """
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return CertsDirReadError(
            path,
            directory,
            "is a directory",
            f"Docker reads every name ending in {extension(path.name)} as a file: "
            "rename or remove the folder",
        )
    kind = next((text for test, text in _KINDS if test(mode)), "not a file")
    return CertsDirReadError(
        path,
        directory,
        f"is {kind}, not a regular file",
        "Docker would block on it or read it without end: replace it with a regular file "
        "holding the PEM data (or a symbolic link to one), or remove it",
    )


def _too_large(path: Path, directory: Path, limit: int) -> CertsDirReadError:
    name = "MAX_CA_FILE_SIZE" if extension(path.name) == ".crt" else "MAX_PAIR_FILE_SIZE"
    return CertsDirReadError(
        path,
        directory,
        f"is more than {_size_text(limit)}, the most dockercerts reads from a "
        f"{extension(path.name)} file",
        "Check that this is the right file: PEM certificates and keys are a few KiB each. "
        f"If the bundle really is this large, raise dockercerts.scan.{name}",
    )


def open_regular(path: Path, directory: Path) -> int:
    """A descriptor of ``path`` (links followed) known to be a regular file no larger than
    its cap; raises :class:`CertsDirReadError` otherwise. The caller closes it.

    ``stat`` first, so a device is never even opened (opening some has side effects); then
    an open that cannot block, and ``fstat`` on the descriptor, so a file swapped between the
    two calls is judged by what was really opened.
    """
    try:
        error = _not_regular(path, directory, os.stat(path).st_mode)
        if error is None:
            fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        error = _os_error(path, directory, exc)
    if error is not None:
        raise error
    try:
        info = os.fstat(fd)
        error = _not_regular(path, directory, info.st_mode)
        if error is None and info.st_size > _limit(path):
            error = _too_large(path, directory, _limit(path))
    except OSError as exc:
        error = _os_error(path, directory, exc)
    if error is not None:
        os.close(fd)
        raise error
    return fd


def _file_above(directory: Path) -> Optional[Path]:
    """The nearest parent of ``directory`` that exists and is not a folder, if any."""
    for parent in directory.parents:
        try:
            if not stat.S_ISDIR(os.stat(parent).st_mode):
                return parent
        except OSError:
            continue
    return None


def read_capped(path: Path, directory: Path) -> bytes:
    """Read a file Docker would read, turning each way it can fail into a clear error.

    Only regular files, at most their cap (:data:`MAX_CA_FILE_SIZE`,
    :data:`MAX_PAIR_FILE_SIZE`): the cap is counted while reading too, since a file may grow
    and ``/proc``-like files report a size of 0.
    """
    limit = _limit(path)
    fd = open_regular(path, directory)
    try:
        data = _read_at_most(fd, limit + 1)
    except OSError as exc:
        error = _os_error(path, directory, exc)
    else:
        if data is not None:
            return data
        error = _too_large(path, directory, limit)
    finally:
        os.close(fd)
    # Raised out here: no bytes of the file in this frame, no OSError as its context.
    raise error


def _read_at_most(fd: int, most: int) -> Optional[bytes]:
    """The whole file, or ``None`` when it holds ``most`` bytes or more (those are dropped)."""
    chunks: list[bytes] = []
    size = 0
    while size < most:
        chunk = os.read(fd, min(_CHUNK, most - size))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
    chunks.clear()
    return None


def _os_error(path: Path, directory: Path, exc: OSError) -> CertsDirReadError:
    """A :class:`CertsDirReadError` for an ``OSError`` met while opening or reading ``path``."""
    if isinstance(exc, IsADirectoryError):
        error = _not_regular(path, directory, stat.S_IFDIR)
        assert error is not None
        return error
    if isinstance(exc, FileNotFoundError):
        target = _link_target(path)
        problem = "file vanished" if target is None else f"dangling symbolic link to {target}"
        return CertsDirReadError(
            path,
            directory,
            problem,
            "Restore the link's target or remove the link (copies of Kubernetes secret "
            "mounts often keep the links and lose the ..data folder)",
        )
    if isinstance(exc, PermissionError):
        return CertsDirReadError(
            path,
            directory,
            "permission denied",
            "Run as a user that can read it, or fix its permissions",
        )
    if exc.errno == errno.ELOOP:
        return CertsDirReadError(
            path, directory, "symbolic link loop", "Fix or remove the link: it points to itself"
        )
    problem = exc.strerror or type(exc).__name__
    return CertsDirReadError(path, directory, problem, "Fix or remove the file")


def _link_target(path: Path) -> Optional[str]:
    try:
        return os.readlink(path)
    except OSError:
        return None


def pem_blocks(data: bytes) -> list[tuple[str, bytes, bool]]:
    """``(type, der, has_headers)`` for every PEM block; undecodable bodies are skipped."""
    blocks = []
    for done, match in enumerate(_PEM_BLOCK.finditer(data)):
        let_others_run(done)
        kind = match.group(1).decode("ascii")
        body = match.group(2)
        has_headers = b":" in body
        if has_headers:
            # RFC 1421 headers (Proc-Type, DEK-Info) end at the first blank line.
            body = re.split(rb"\r?\n\r?\n", body, maxsplit=1)[-1]
        try:
            der = base64.b64decode(b"".join(body.split()), validate=True)
        except (binascii.Error, ValueError):
            continue
        blocks.append((kind, der, has_headers))
    return blocks


def ca_certificates(data: bytes, parsed: Optional[set[bytes]] = None) -> list[bytes]:
    """The certificates Go's ``AppendCertsFromPEM`` would add: the rest is passed over.

    ``parsed`` holds certificates known to parse (shared across a folder's files), so a
    bundle repeating one CA thousands of times parses it once.
    """
    known: set[bytes] = set() if parsed is None else parsed
    found = []
    for done, (kind, der, has_headers) in enumerate(pem_blocks(data)):
        let_others_run(done)
        if kind != "CERTIFICATE" or has_headers:
            continue
        if der not in known:
            try:
                x509.load_der_x509_certificate(der)
            except ValueError:
                continue
            known.add(der)
        found.append(der)
    return found


def resolve_password(password: Optional[Password], key: Path) -> Optional[bytes]:
    """The bytes that unlock ``key``: ``password`` itself, or what its callable gives."""
    if password is None:
        return None
    value = password(key) if callable(password) else password
    return value.encode("utf-8") if isinstance(value, str) else value


def _key_type(key: object) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return f"RSA {key.key_size}"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return f"EC {key.curve.name}"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "Ed25519"
    if isinstance(key, ed448.Ed448PrivateKey):
        return "Ed448"
    return type(key).__name__


def check_pair(
    name: str, cert: Path, key: Path, directory: Path, password: Optional[Password]
) -> tuple[ClientPair, list[x509.Certificate]]:
    """Read and check one pair as Go's ``tls.LoadX509KeyPair`` would; never echo key bytes."""
    cert_data = read_capped(cert, directory)
    key_data = read_capped(key, directory)

    def fail(problem: str, fix: str) -> KeyPairError:
        return KeyPairError(cert, key, problem, fix)

    chain_der = [der for kind, der, _ in pem_blocks(cert_data) if kind == "CERTIFICATE"]
    if not chain_der:
        if any(kind.endswith("PRIVATE KEY") for kind, _, _ in pem_blocks(cert_data)):
            raise fail(
                f"{cert.name} holds a private key, not a certificate",
                "The .cert and .key files look swapped",
            )
        raise fail(
            f"no PEM certificate found in {cert.name}",
            "A .cert must hold a PEM client certificate (-----BEGIN CERTIFICATE-----); "
            "convert DER with 'openssl x509 -inform der'",
        )
    try:
        chain = [x509.load_der_x509_certificate(der) for der in chain_der]
    except ValueError:
        raise fail(
            f"a certificate in {cert.name} does not parse",
            "Replace it with the certificate your registry's CA issued",
        ) from None

    key_blocks = [b for b in pem_blocks(key_data) if b[0].endswith("PRIVATE KEY")]
    if not key_blocks:
        raise fail(
            f"no PEM private key found in {key.name}",
            "A .key must hold the PEM private key of the certificate",
        )
    kind, _der, has_headers = key_blocks[0]
    encrypted = kind == "ENCRYPTED PRIVATE KEY" or (
        has_headers and b"ENCRYPTED" in key_data.split(b"-----END", 1)[0]
    )
    try:
        secret = resolve_password(password, key) if encrypted else None
    except Exception as exc:
        # The caller's own error, as it is, minus this frame: it holds the key's bytes.
        if exc.__traceback__ is not None:
            exc.__traceback__ = exc.__traceback__.tb_next
        raise Reraise(exc) from None
    if encrypted and secret is None:
        raise fail(
            f"{key.name} is encrypted, and Docker cannot use encrypted keys",
            "Decrypt it ('openssl pkey -in KEY -out KEY') or pass password= to dockercerts",
        )
    try:
        # Re-wrap the one block we chose so stray text around it cannot confuse the parser.
        # Only the public half is compared here; OpenSSL reads the key again for the context,
        # so cryptography's RSA consistency check (~45 ms per 2048-bit key) would be spent
        # on every load and reload for nothing.
        private = serialization.load_pem_private_key(
            _key_pem(key_data, kind), password=secret, unsafe_skip_rsa_key_validation=True
        )
    except (ValueError, TypeError):
        if encrypted:
            raise fail(f"cannot decrypt {key.name}", "Check the password") from None
        raise fail(
            f"the private key in {key.name} does not parse",
            "Replace it with the key the certificate was issued for",
        ) from None
    except Exception:  # cryptography raises UnsupportedAlgorithm and friends
        raise fail(
            f"unsupported private key in {key.name}", "Use an RSA, EC or Ed25519 key"
        ) from None

    leaf = chain[0]
    if not same_public_key(leaf, private):
        raise fail(
            f"the private key in {key.name} does not match the certificate in {cert.name}",
            "Put the key the certificate was issued for beside it, under the same name",
        )
    pair = ClientPair(
        name=name,
        cert=cert,
        key=key,
        subject=leaf.subject.rfc4514_string(),
        issuer=leaf.issuer.rfc4514_string(),
        not_before=utc(leaf, "not_valid_before"),
        not_after=utc(leaf, "not_valid_after"),
        key_type=_key_type(private),
        chain_length=len(chain),
        fingerprint=leaf.fingerprint(hashes.SHA256()).hex(),
        chain_issuers=tuple(tbs_names(c.tbs_certificate_bytes)[0] for c in chain),
    )
    return pair, chain


def _element(data: bytes, pos: int) -> tuple[int, int]:
    """``(start of contents, end)`` of the DER element at ``pos``."""
    length = data[pos + 1]
    start = pos + 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(data[start : start + count], "big")
        start += count
    if start + length > len(data):
        raise ValueError("truncated DER element")
    return start, start + length


def tbs_names(tbs: bytes) -> tuple[bytes, bytes]:
    """``(issuer, subject)`` of a DER ``TBSCertificate``, each the Name's bytes as written.

    Go matches a server's CA names against these raw bytes (``RawIssuer``); cryptography
    only offers names re-encoded from their parsed form, which can differ for an issuer
    that was not encoded canonically.
    """
    try:
        pos, end = _element(tbs, 0)  # the TBSCertificate SEQUENCE
        fields: list[bytes] = []
        while pos < end and len(fields) < 6:
            _, stop = _element(tbs, pos)
            fields.append(tbs[pos:stop])
            pos = stop
    except IndexError:
        raise ValueError("truncated TBSCertificate") from None
    if fields and fields[0][0] == 0xA0:  # [0] EXPLICIT version, absent for v1
        fields.pop(0)
    # serialNumber, signature, issuer, validity, subject
    if len(fields) < 5:
        raise ValueError("a TBSCertificate without issuer and subject")
    return fields[2], fields[4]


def same_public_key(cert: x509.Certificate, private: object) -> bool:
    """Whether ``private`` (a loaded private key) is the key of ``cert``."""
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    public = getattr(private, "public_key", None)
    return public is not None and bool(
        public().public_bytes(*spki) == cert.public_key().public_bytes(*spki)
    )


def _key_pem(data: bytes, kind: str) -> bytes:
    begin = f"-----BEGIN {kind}-----".encode()
    end = f"-----END {kind}-----".encode()
    start = data.find(begin)
    stop = data.find(end, start) + len(end)
    return data[start:stop] + b"\n"


def utc(cert: x509.Certificate, attr: str) -> datetime:
    """``cert``'s ``not_valid_before``/``not_valid_after`` (``attr``) as an aware UTC time."""
    # cryptography >= 42 has the *_utc variants; older ones return naive UTC datetimes.
    aware = getattr(cert, attr + "_utc", None)
    if isinstance(aware, datetime):
        return aware
    naive: datetime = getattr(cert, attr)
    return naive.replace(tzinfo=timezone.utc)


def is_ca(cert: x509.Certificate) -> bool:
    """Whether ``cert`` says it is a CA (basic constraints)."""
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def pair_warnings(
    pair: ClientPair, chain: list[x509.Certificate], now: datetime
) -> list[CertsWarning]:
    """What is wrong with a loadable pair, as warnings: expired, not yet valid, a CA."""
    found = []
    if pair.not_after is not None and pair.not_after < now:
        found.append(
            CertsWarning(
                "client-cert-expired",
                pair.cert,
                f"the client certificate expired on {pair.not_after:%Y-%m-%d %H:%M} UTC",
                "Renew it; servers reject expired client certificates",
            )
        )
    if pair.not_before is not None and pair.not_before > now:
        found.append(
            CertsWarning(
                "client-cert-not-yet-valid",
                pair.cert,
                f"the client certificate is valid only from {pair.not_before:%Y-%m-%d %H:%M} UTC",
                "Check the clock of this machine and of the machine that issued it",
            )
        )
    leaf = chain[0]
    if is_ca(leaf):
        found.append(
            CertsWarning(
                "client-cert-is-ca",
                pair.cert,
                "the .cert holds a CA certificate, not a client certificate",
                f"If it is a CA root, rename it to {pair.name}.crt",
            )
        )
    return found


def permission_warning(key: Path) -> Optional[CertsWarning]:
    """A warning when ``key`` is readable by others than its owner (POSIX)."""
    try:
        mode = os.stat(key).st_mode
    except OSError:
        return None
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        return CertsWarning(
            "key-readable-by-others",
            key,
            f"the private key is accessible by group or others (mode {stat.S_IMODE(mode):o})",
            f"chmod 600 {key.name}",
        )
    return None


def scan(
    directory: Union[str, os.PathLike[str]],
    *,
    password: Optional[Password] = None,
    now: Optional[datetime] = None,
    dialect: Dialect = MOBY,
) -> Scan:
    """Read a host directory exactly as Docker does; raise its first error, if any.

    A missing directory is not an error: the result has ``exists=False`` and nothing else,
    which means system trust and no client certificate. ``password`` unlocks encrypted keys,
    which Docker cannot read (an explicit opt-in). ``now`` is for tests of expiry warnings.
    ``dialect=CONTAINERS_IMAGE`` reads it as containers/image does (see :class:`Dialect`).

        >>> result = scan("/nonexistent/certs.d/reg:5000")
        >>> result.exists, result.pairs
        (False, ())
    """
    result = scan_detached(directory, password, now, dialect)
    del password  # the traceback of the error raised below keeps this frame
    if isinstance(result, BaseException):
        raise result
    return result


def scan_detached(
    directory: Union[str, os.PathLike[str]],
    password: Optional[Password],
    now: Optional[datetime],
    dialect: Dialect = MOBY,
) -> Union[Scan, BaseException]:
    """:func:`scan`, returning its error instead of raising it.

    The error comes back *detached*: without the traceback and context it was raised with.
    Those hold the frames that read the files (with the key's bytes in their locals) and
    this one (with the password); error reporters that capture locals would send them.
    """
    try:
        return _walk(directory, password, now, dialect)
    except CertsDirError as exc:
        return detached(exc)
    except Reraise as wrapper:
        return wrapper.error


class Reraise(Exception):
    """Carries the caller's own exception (from a password callable) out of the walk."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(type(error).__name__)
        self.error = error


def detached(error: CertsDirError) -> CertsDirError:
    """``error`` without its traceback and its chain (see :func:`scan_detached`)."""
    error.__traceback__ = None
    error.__context__ = None
    error.__cause__ = None
    error.__suppress_context__ = False
    return error


def _walk(
    directory: Union[str, os.PathLike[str]],
    password: Optional[Password],
    now: Optional[datetime],
    dialect: Dialect = MOBY,
) -> Scan:
    path = Path(directory)
    before = snapshot(path)
    try:
        names = _list(path)
    except CertsDirReadError as exc:
        if dialect.skip_unlistable and exc.problem.startswith("permission denied"):
            unreadable = CertsWarning(
                "folder-unreadable",
                path,
                f"{dialect.name} cannot list this folder and reads it as empty: no CA, no "
                "client certificate",
                "Fix its permissions, or run as a user that can read it",
            )
            return Scan(path, True, (), (), (), (unreadable,), before)
        raise
    if names is None:
        return Scan(path, False, (), (), (), (), before)
    present = set(names)
    ca_files: list[Path] = []
    ca_der: list[bytes] = []
    ca_details: list[CACertificate] = []
    # One description per distinct certificate: a bundle may repeat a CA thousands of times.
    described: dict[bytes, CACertificate] = {}
    pairs: list[tuple[ClientPair, list[x509.Certificate]]] = []
    warnings: list[CertsWarning] = []
    parsed: set[bytes] = set()
    for name in sorted_names(names):
        ext = extension(name)
        file = path / name
        if ext == ".crt":
            if dialect.skip_vanished and vanished(file):
                warnings.append(
                    CertsWarning(
                        "crt-vanished",
                        file,
                        f"{dialect.name} passes over this .crt: nothing is there to read "
                        "(a dangling link, or removed while the folder was read)",
                        "Restore the link's target or remove the link",
                    )
                )
                continue
            data = read_capped(file, path)
            found = ca_certificates(data, parsed)
            ca_files.append(file)
            ca_der.extend(found)
            for der in found:
                known = described.get(der)
                if known is None:
                    known = described[der] = describe_ca(file, der)
                ca_details.append(known if known.file == file else replace(known, file=file))
            if not found:
                warnings.append(
                    CertsWarning(
                        "crt-without-certificate",
                        file,
                        "holds no PEM certificate Docker can use (it still counts as a CA file)",
                        "Save the CA certificate in PEM form (-----BEGIN CERTIFICATE-----)",
                    )
                )
        elif ext == ".cert":
            stem = name[: -len(".cert")]
            key = path / (stem + ".key")
            if key.name not in present:
                raise MissingKeyError(file, key, dialect.note)
            pairs.append(check_pair(stem, file, key, path, password))
        elif ext == ".key":
            cert = path / (name[: -len(".key")] + ".cert")
            if cert.name not in present:
                raise MissingCertificateError(cert, file)
        elif ext in _NEAR_MISSES:
            warnings.append(
                CertsWarning(
                    "ignored-name",
                    file,
                    f"Docker ignores this file: only .crt, .cert and .key count, "
                    f"case-sensitively (this one ends in {ext})",
                    _rename_hint(name, ext),
                )
            )
    when = now or datetime.now(timezone.utc)
    for pair, chain in pairs:
        warnings.extend(pair_warnings(pair, chain, when))
        perm = permission_warning(pair.key)
        if perm is not None:
            warnings.append(perm)
    return Scan(
        directory=path,
        exists=True,
        ca_files=tuple(ca_files),
        ca_der=tuple(ca_der),
        pairs=tuple(pair for pair, _ in pairs),
        warnings=tuple(warnings),
        snapshot=before,
        ca_details=tuple(ca_details),
    )


def vanished(path: Path) -> bool:
    """Whether nothing is at ``path`` any more (a dangling link counts as nothing)."""
    try:
        os.stat(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return False


def _rename_hint(name: str, ext: str) -> str:
    stem = name[: -len(ext)]
    lower = ext.lower()
    if lower in (".crt", ".cert", ".key"):
        return f"rename it to {stem}{lower} if Docker should read it"
    return (
        f"rename it to {stem}.crt if it is a CA certificate, or to {stem}.cert/{stem}.key "
        "if it is part of a client pair"
    )


def snapshot(directory: Union[str, os.PathLike[str]]) -> Snapshot:
    """A fingerprint of everything Docker would read in ``directory``; cheap to compute.

    Two snapshots compare equal when no file was added, removed, replaced or rewritten,
    following symlinks (so a Kubernetes ``..data`` swap is seen). It costs one listing and
    one ``stat`` per name.
    """
    # Plain strings, not Path joins: at refresh=0 this runs on every request.
    folder = os.fspath(directory)
    try:
        names = os.listdir(folder)
    except OSError as exc:
        return Snapshot(((type(exc).__name__,),))
    entries: list[tuple[object, ...]] = []
    for name in sorted(names):
        if extension(name) not in (".crt", ".cert", ".key"):
            continue
        try:
            st = os.stat(os.path.join(folder, name))
        except OSError as exc:
            entries.append((name, type(exc).__name__))
            continue
        entries.append(
            (name, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)
        )
    return Snapshot(tuple(entries))
