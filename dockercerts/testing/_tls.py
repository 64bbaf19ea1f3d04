"""The TLS side of :class:`~dockercerts.testing.MTLSServer`: the server's context for each
``reject`` mode, and the verdict on the client certificate a handshake brought.

Internal to :mod:`dockercerts.testing`; ``ClientCertInfo`` and ``RejectMode`` are public
there. What the standard-library ``ssl`` module cannot do, and how this module works around
it:

* There is no verify callback, so a handshake cannot complete with a certificate the trust
  store does not know (nginx can: it records the error and answers 400 later). In ``"http"``
  and ``"status"`` modes :func:`server_context` therefore trusts ``client_ca`` **plus**
  ``handshake_cas`` and every CA below them, with time checks off
  (``X509_V_FLAG_NO_CHECK_TIME``); :func:`judge_client_cert` then makes the real decision
  against ``client_ca`` alone, validity window included.
* The peer's chain is not visible before Python 3.13, so :func:`judge_client_cert` finds the
  issuer in the known CA trees.
* Python never fills the CA-names list of the CertificateRequest: the context gets it from
  OpenSSL's ``SSL_CTX_add_client_CA``, reached through :mod:`ctypes` (CPython on Linux and
  macOS, after checking that the pointer found is the context's).
"""

from __future__ import annotations

import ctypes
import datetime as _dt
import hashlib
import platform
import ssl
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Optional

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from dockercerts.testing.pki import CA, Leaf, TLSVersion, load_cert_chain, set_tls_version

__all__ = ["ClientCertInfo", "RejectMode", "judge_client_cert", "server_context"]

RejectMode = Literal["tls", "http", "status"]

# OpenSSL X509_V_FLAG_* values; Python names only some of them (PARTIAL_CHAIN from 3.10).
_X509_V_FLAG_PARTIAL_CHAIN = 0x80000
_X509_V_FLAG_NO_CHECK_TIME = 0x200000


@dataclass(frozen=True)
class ClientCertInfo:
    """The client certificate a connection presented, as the server judged it.

    ``trusted`` is true when the certificate chains to one of the server's ``client_ca`` and is
    inside its validity window; otherwise ``problem`` says why (``"expired"``,
    ``"not yet valid"``, ``"not issued by an accepted CA"``).
    """

    subject: str
    issuer: str
    fingerprint: str
    serial_number: int
    not_before: _dt.datetime
    not_after: _dt.datetime
    trusted: bool
    problem: Optional[str]
    der: bytes = field(repr=False)

    @property
    def certificate(self) -> x509.Certificate:
        """The certificate parsed with :mod:`cryptography`."""
        return x509.load_der_x509_certificate(self.der)


def server_context(
    server_cert: Leaf,
    *,
    tls_version: TLSVersion,
    reject: RejectMode,
    client_cas: Sequence[CA],
    handshake_cas: Sequence[CA],
    ca_names: Sequence[CA],
) -> tuple[ssl.SSLContext, bool]:
    """The server's context, and whether its CertificateRequest carries ``ca_names``.

    ``"tls"`` requires a certificate from ``client_cas`` in the handshake; the other modes
    ask for one but let any certificate from the trees of ``client_cas`` and
    ``handshake_cas`` through, whatever its dates, for the HTTP level to judge. With no CA
    at all no certificate is asked for.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    set_tls_version(ctx, tls_version)
    load_cert_chain(ctx, server_cert)
    trusted = list(client_cas) if reject == "tls" else _ca_tree([*client_cas, *handshake_cas])
    if not trusted:
        # Nothing is asked for, so an empty list is the only one "sent".
        return ctx, not ca_names
    ctx.load_verify_locations(cadata=b"".join(ca.cert_pem for ca in trusted).decode())
    flags = _X509_V_FLAG_PARTIAL_CHAIN
    if reject == "tls":
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.verify_mode = ssl.CERT_OPTIONAL
        flags |= _X509_V_FLAG_NO_CHECK_TIME
    # Partial chains make any trusted CA an anchor, as Go's client CA pool does.
    ctx.verify_flags = ssl.VerifyFlags(int(ctx.verify_flags) | flags)
    return ctx, _install_ca_names(ctx, ca_names)


def judge_client_cert(
    der: bytes, client_cas: Sequence[CA], handshake_cas: Sequence[CA]
) -> ClientCertInfo:
    """The verdict on the certificate ``der``: trusted when an issuer in the trees of
    ``client_cas`` and ``handshake_cas`` signed it, that issuer descends from one of
    ``client_cas``, and today is inside its validity window."""
    cert = x509.load_der_x509_certificate(der)
    accepted = {ca.fingerprint for ca in client_cas}
    problem: Optional[str] = None
    issuer = _find_issuer(cert, [*client_cas, *handshake_cas])
    if issuer is None or not any(ca.fingerprint in accepted for ca in issuer.lineage()):
        problem = "not issued by an accepted CA"
    now = _dt.datetime.now(_dt.timezone.utc)
    not_before, not_after = _utc(cert, "not_valid_before"), _utc(cert, "not_valid_after")
    if problem is None and now < not_before:
        problem = "not yet valid"
    elif problem is None and now > not_after:
        problem = "expired"
    return ClientCertInfo(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        fingerprint=hashlib.sha256(der).hexdigest(),
        serial_number=cert.serial_number,
        not_before=not_before,
        not_after=not_after,
        trusted=problem is None,
        problem=problem,
        der=der,
    )


def _find_issuer(cert: x509.Certificate, cas: Sequence[CA]) -> Optional[CA]:
    # The tree is walked at each judgement: an intermediate made after start() counts too.
    for ca in _ca_tree(cas):
        if ca.certificate.subject != cert.issuer:
            continue
        try:
            cert.verify_directly_issued_by(ca.certificate)
        except Exception:  # noqa: S112 - any failure means "not this CA"
            continue
        return ca
    return None


def _utc(cert: x509.Certificate, attr: str) -> _dt.datetime:
    # cryptography >= 42 has aware ``*_utc`` properties; older releases only naive UTC ones.
    aware: Optional[_dt.datetime] = getattr(cert, attr + "_utc", None)
    if aware is not None:
        return aware
    naive: _dt.datetime = getattr(cert, attr)
    return naive.replace(tzinfo=_dt.timezone.utc)


def _ca_tree(cas: Sequence[CA]) -> list[CA]:
    """Every CA in the trees ``cas`` belong to (their roots and all descendants), deduplicated."""
    seen: dict[str, CA] = {}
    for ca in cas:
        root = ca.root
        for member in (root, *root.descendants()):
            seen.setdefault(member.fingerprint, member)
    return list(seen.values())


def _install_ca_names(ctx: ssl.SSLContext, cas: Sequence[CA]) -> bool:
    """Fill the CertificateRequest's CA-names list of ``ctx``; return whether it worked."""
    if not cas:
        return True
    if platform.python_implementation() != "CPython" or sys.platform == "win32":
        # Elsewhere the OpenSSL that _ssl uses cannot be reached reliably through ctypes.
        return False
    try:
        import _ssl

        lib = ctypes.CDLL(_ssl.__file__)
        get_verify_mode = lib.SSL_CTX_get_verify_mode
        add_client_ca = lib.SSL_CTX_add_client_CA
        d2i_x509 = lib.d2i_X509
        x509_free = lib.X509_free
    except (OSError, AttributeError):
        return False
    get_verify_mode.restype = ctypes.c_int
    get_verify_mode.argtypes = [ctypes.c_void_p]
    add_client_ca.restype = ctypes.c_int
    add_client_ca.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    d2i_x509.restype = ctypes.c_void_p
    d2i_x509.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p), ctypes.c_long]
    x509_free.restype = None
    x509_free.argtypes = [ctypes.c_void_p]
    # CPython's PySSLContext starts with PyObject_HEAD followed by the SSL_CTX pointer.
    ssl_ctx = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
    if not ssl_ctx:
        return False
    # Cross-check the pointer: flip the verify mode and see OpenSSL report both values.
    # OpenSSL spells them SSL_VERIFY_PEER (1) and SSL_VERIFY_PEER|FAIL_IF_NO_PEER_CERT (3).
    original = ctx.verify_mode
    for probe, expected in ((ssl.CERT_OPTIONAL, 1), (ssl.CERT_REQUIRED, 3)):
        ctx.verify_mode = probe
        if get_verify_mode(ssl_ctx) & 3 != expected:
            ctx.verify_mode = original
            return False
    ctx.verify_mode = original
    for ca in cas:
        der = ca.certificate.public_bytes(serialization.Encoding.DER)
        buf = ctypes.create_string_buffer(der, len(der))
        cursor = ctypes.c_void_p(ctypes.addressof(buf))
        cert = d2i_x509(None, ctypes.byref(cursor), len(der))
        if not cert:
            return False
        try:
            if add_client_ca(ssl_ctx, cert) != 1:
                return False
        finally:
            x509_free(cert)
    return True
