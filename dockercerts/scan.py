"""What is in a host directory: Docker's loop over the files, with no ``ssl`` involved.

:func:`scan` walks a host directory the way moby's ``loadTLSConfig`` does
(``daemon/pkg/registry/registry.go``; ``ReadCertsDirectory`` in older releases) and returns
a frozen :class:`Scan`: the CA files and the certificates they hold, the client pairs in try
order, and diagnostics that Docker would not report but a user wants to hear about. Every
pair is read and checked here, with ``cryptography``, so a broken pair fails at load time
with a message naming both files, as it does in Docker.

:func:`snapshot` is the cheap half: a fingerprint of the directory (names, inodes, sizes,
times, following symlinks) that changes whenever anything Docker would read changes.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional, Union

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from . import _files
from ._certfacts import CACertificate, describe_ca, describe_cas, is_ca, same_public_key, utc
from ._files import extension, list_dir
from ._pem import ca_certificates, key_pem, pem_blocks, tbs_names
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
    "ca_certificates",
    "describe_ca",
    "describe_cas",
    "extension",
    "is_ca",
    "same_public_key",
    "scan",
    "snapshot",
    "sorted_names",
    "tbs_names",
    "utc",
]


#: A key password: the bytes (or text) themselves, or a callable given the key's path.
Password = Union[bytes, str, Callable[[Path], Union[bytes, str]]]

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
    ``ca_sources`` and ``ca_expiry`` give, for each of ``ca_der`` in the same order, the
    ``.crt`` file it came from and its ``notAfter``; :attr:`ca_details` describes them.
    """

    directory: Path
    exists: bool
    ca_files: tuple[Path, ...]
    ca_der: tuple[bytes, ...]
    pairs: tuple[ClientPair, ...]
    warnings: tuple[CertsWarning, ...]
    snapshot: Snapshot
    ca_sources: tuple[Path, ...] = ()
    ca_expiry: tuple[datetime, ...] = ()

    @property
    def ca_details(self) -> tuple[CACertificate, ...]:
        """Each of ``ca_der`` described (:class:`CACertificate`), computed when asked: a
        report wants them, a load does not (10,000 anchors: ~0.3 s)."""
        return describe_cas(self.ca_sources, self.ca_der)


def sorted_names(names: Iterable[str]) -> list[str]:
    """Names in Go's order: by their bytes (so ``B.cert`` sorts before ``a.cert``)."""
    return sorted(names, key=os.fsencode)


#: The largest ``.crt`` file read, in bytes (8 MiB: ~13,000 PEM certificates; the biggest
#: public bundles are under 1 MiB). A larger one is a :class:`CertsDirReadError`. Read at
#: every load, so it can be changed at run time (``dockercerts.scan.MAX_CA_FILE_SIZE = ...``).
MAX_CA_FILE_SIZE = 8 * 1024 * 1024
#: The largest ``.cert`` or ``.key`` file read, in bytes (1 MiB: a chain of a thousand
#: certificates). A larger one is a :class:`CertsDirReadError`.
MAX_PAIR_FILE_SIZE = 1024 * 1024


def _limit(path: Path) -> int:
    """The size cap for ``path``: :data:`MAX_CA_FILE_SIZE` for a ``.crt``, else the pair's
    (read here, at every call, so a change made at run time applies)."""
    return MAX_CA_FILE_SIZE if extension(path.name) == ".crt" else MAX_PAIR_FILE_SIZE


def open_regular(path: Path, directory: Path) -> int:
    """:func:`dockercerts._files.open_regular` with ``path``'s size cap."""
    return _files.open_regular(path, directory, _limit(path))


def read_capped(path: Path, directory: Path) -> bytes:
    """Read a file Docker would read, up to its size cap (:data:`MAX_CA_FILE_SIZE`,
    :data:`MAX_PAIR_FILE_SIZE`); every failure is a clear :class:`CertsDirReadError`."""
    return _files.read_capped(path, directory, _limit(path))


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
            key_pem(key_data, kind), password=secret, unsafe_skip_rsa_key_validation=True
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
        names = list_dir(path)
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
    ca_sources: list[Path] = []
    pairs: list[tuple[ClientPair, list[x509.Certificate]]] = []
    warnings: list[CertsWarning] = []
    parsed: dict[bytes, datetime] = {}  # each certificate's notAfter, parsed once
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
            ca_sources.extend([file] * len(found))
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
        ca_sources=tuple(ca_sources),
        ca_expiry=tuple(parsed[der] for der in ca_der),
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
