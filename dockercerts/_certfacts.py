"""What the scan and the diagnosis read from a certificate: validity in UTC, CA-ness, the
facts of a ``.crt`` certificate for reports, and whether a private key belongs to a
certificate. :mod:`dockercerts.scan` re-exports ``utc`` and ``is_ca``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

__all__ = ["CACertificate", "describe_ca", "describe_cas", "is_ca", "same_public_key", "utc"]


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
    """The facts of one usable ``.crt`` certificate (``der``: one that
    :func:`dockercerts.scan.ca_certificates` gives)."""
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


def describe_cas(files: tuple[Path, ...], ders: tuple[bytes, ...]) -> tuple[CACertificate, ...]:
    """:func:`describe_ca` for each ``(file, der)`` pair, each distinct certificate parsed once
    (a bundle may repeat a CA thousands of times). Only reports ask for this: the scan keeps
    the certificates' bytes and their expiry, not their descriptions."""
    described: dict[bytes, CACertificate] = {}
    found = []
    for file, der in zip(files, ders):
        known = described.get(der)
        if known is None:
            known = described[der] = describe_ca(file, der)
        found.append(known if known.file == file else replace(known, file=file))
    return tuple(found)


def same_public_key(cert: x509.Certificate, private: object) -> bool:
    """Whether ``private`` (a loaded private key) is the key of ``cert``."""
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    public = getattr(private, "public_key", None)
    return public is not None and bool(
        public().public_bytes(*spki) == cert.public_key().public_bytes(*spki)
    )


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
