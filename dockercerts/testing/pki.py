"""A tiny in-memory PKI for tests: certificate authorities, server and client certificates.

Everything is generated with :mod:`cryptography` in a few milliseconds (P-256 keys by default),
nothing touches the disk until you ask for it, and the certificates carry the extensions strict
verifiers want (``basicConstraints`` critical, ``keyUsage``, SKI/AKI, EKU, SAN), so Python 3.13's
``VERIFY_X509_STRICT`` and Go's ``crypto/x509`` accept them.

Example::

    from dockercerts.testing import CA

    ca = CA()                                  # a self-signed root
    issuing = ca.intermediate(name="issuing")  # an intermediate below it
    alice = issuing.issue_client("alice")      # cert_pem = leaf + intermediate
    server = ca.issue_server()                 # localhost, 127.0.0.1, ::1
    alice.write("alice.cert", "alice.key")
    ctx = client_ssl_context(trust=ca, leaf=alice)

No ``repr`` or ``str`` of anything here contains private key material.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import ipaddress
import os
import ssl
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal, Optional, Union

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CA",
    "KeyType",
    "Leaf",
    "PathLike",
    "TLSVersion",
    "client_ssl_context",
    "load_cert_chain",
    "set_tls_version",
]

KeyType = Literal["ec", "rsa2048", "rsa4096", "ed25519"]
"""Key algorithms the factory makes: P-256 (default, fastest), RSA 2048/4096, Ed25519."""

TLSVersion = Optional[Literal["1.2", "1.3"]]
"""``"1.2"`` or ``"1.3"`` pins one version; ``None`` allows both (1.3 is negotiated)."""

PathLike = Union[str, "os.PathLike[str]"]

PrivateKey = Union[ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey]

_KEY_TYPES: tuple[str, ...] = ("ec", "rsa2048", "rsa4096", "ed25519")
DEFAULT_SERVER_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")

# Backdated so that a peer whose clock is slightly behind still accepts a fresh certificate.
_BACKDATE = _dt.timedelta(hours=1)
_CA_LIFETIME = _dt.timedelta(days=3650)
_LEAF_LIFETIME = _dt.timedelta(days=365)


def _now() -> _dt.datetime:
    # Certificates store whole seconds; truncating here makes ``not_after`` compare equal to
    # what a parser reads back.
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)


def _utc_seconds(when: _dt.datetime) -> _dt.datetime:
    # Naive datetimes are read as UTC, as cryptography does when it encodes them.
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.timezone.utc)
    return when.astimezone(_dt.timezone.utc).replace(microsecond=0)


def _generate_key(key_type: str) -> PrivateKey:
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if key_type == "rsa4096":
        return rsa.generate_private_key(public_exponent=65537, key_size=4096)
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unknown key_type {key_type!r}; choose one of {', '.join(_KEY_TYPES)}")


def _sign_hash(key: PrivateKey) -> Optional[hashes.SHA256]:
    # Ed25519 signs the message itself; cryptography wants no hash algorithm for it.
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _key_pem(key: PrivateKey, password: Optional[bytes]) -> bytes:
    encryption: serialization.KeySerializationEncryption
    if password is None:
        encryption = serialization.NoEncryption()
    else:
        if not password:
            raise ValueError("password must not be empty; pass None for an unencrypted key")
        encryption = serialization.BestAvailableEncryption(password)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(path: PathLike, data: bytes, mode: int = 0o644) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    os.chmod(target, mode)
    return target


class CA:
    """A certificate authority: a self-signed root, or an intermediate when ``parent`` is given.

    Roots carry ``basicConstraints CA:TRUE`` (critical), ``keyUsage keyCertSign, cRLSign``
    (critical), a subject key identifier and an authority key identifier. Intermediates are
    signed by their parent and know it (``ca.parent``), and a parent knows its intermediates,
    which lets :class:`~dockercerts.testing.MTLSServer` follow chains it was never shown.

    Example::

        root = CA(name="corp root")
        issuing = root.intermediate(name="corp issuing")
        bob = issuing.issue_client("bob")
        assert bob.cert_pem == bob.leaf_pem + issuing.cert_pem
    """

    def __init__(
        self,
        *,
        name: str = "dockercerts test CA",
        key_type: KeyType = "ec",
        parent: Optional[CA] = None,
    ) -> None:
        self.name = name
        self.key_type: KeyType = key_type
        self.parent = parent
        self._key = _generate_key(key_type)
        self._children: list[CA] = []
        self._ski: x509.SubjectKeyIdentifier = x509.SubjectKeyIdentifier.from_public_key(
            self._key.public_key()
        )
        now = _now()
        public_key = self._key.public_key()
        ski = self._ski
        if parent is None:
            issuer_name = _name(name)
            signing_key: PrivateKey = self._key
            aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
        else:
            issuer_name = parent.certificate.subject
            signing_key = parent._key
            aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(parent._ski)
        self.certificate: x509.Certificate = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(issuer_name)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + _CA_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .add_extension(aki, critical=False)
            .sign(signing_key, _sign_hash(signing_key))
        )
        self.cert_pem: bytes = _pem(self.certificate)
        """This CA's certificate alone, PEM."""
        self.fingerprint: str = _fingerprint(self.certificate)
        """SHA-256 of the DER certificate, lowercase hex."""
        if parent is not None:
            parent._children.append(self)

    def __repr__(self) -> str:
        kind = "root" if self.parent is None else f"intermediate of {self.parent.subject!r}"
        return f"CA({self.subject!r}, {kind}, key_type={self.key_type!r})"

    @property
    def subject(self) -> str:
        """The subject as an RFC 4514 string, e.g. ``"CN=dockercerts test CA"``."""
        return self.certificate.subject.rfc4514_string()

    @property
    def root(self) -> CA:
        """The self-signed CA at the top of this CA's chain (``self`` for a root)."""
        ca = self
        while ca.parent is not None:
            ca = ca.parent
        return ca

    @property
    def chain_pem(self) -> bytes:
        """This CA's certificate followed by its parents up to and including the root."""
        return b"".join(ca.cert_pem for ca in self.lineage())

    def lineage(self) -> list[CA]:
        """``[self, parent, grandparent, ..., root]``."""
        out: list[CA] = []
        ca: Optional[CA] = self
        while ca is not None:
            out.append(ca)
            ca = ca.parent
        return out

    def descendants(self) -> Iterator[CA]:
        """Every intermediate created below this CA, depth first (``self`` not included)."""
        for child in list(self._children):
            yield child
            yield from child.descendants()

    def key_pem(self, password: Optional[bytes] = None) -> bytes:
        """This CA's private key as PKCS#8 PEM (encrypted when ``password`` is given).

        Only needed to configure an external server (nginx, docker-registry) with this CA.
        """
        return _key_pem(self._key, password)

    def write(self, path: PathLike) -> Path:
        """Write this CA's certificate (PEM) to ``path``, creating parent folders; return it."""
        return _write(path, self.cert_pem)

    def intermediate(
        self, name: str = "dockercerts test intermediate CA", *, key_type: KeyType = "ec"
    ) -> CA:
        """Create an intermediate CA signed by this one.

        Example: ``issuing = root.intermediate(name="issuing")``.
        """
        return CA(name=name, key_type=key_type, parent=self)

    def issue_server(self, *hosts: str, key_type: KeyType = "ec") -> Leaf:
        """Issue a server certificate (EKU serverAuth) for ``hosts``.

        Host names become DNS SANs and IP literals IP SANs; the default is
        ``("localhost", "127.0.0.1", "::1")``. ``cert_pem`` holds the leaf and any
        intermediates, as a TLS server must send them.

        Example: ``leaf = ca.issue_server("registry.test", "127.0.0.1")``.
        """
        names = hosts or DEFAULT_SERVER_HOSTS
        sans: list[x509.GeneralName] = []
        for host in names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                sans.append(x509.DNSName(host))
        now = _now()
        return self._issue(
            names[0],
            key_type=key_type,
            usage=ExtendedKeyUsageOID.SERVER_AUTH,
            sans=sans,
            not_before=now - _BACKDATE,
            not_after=now + _LEAF_LIFETIME,
            include_chain=True,
        )

    def issue_client(
        self,
        common_name: str = "client",
        *,
        key_type: KeyType = "ec",
        not_before: Optional[_dt.datetime] = None,
        not_after: Optional[_dt.datetime] = None,
        expired: bool = False,
        not_yet_valid: bool = False,
        include_chain: bool = True,
    ) -> Leaf:
        """Issue a client certificate (EKU clientAuth) with subject ``CN=<common_name>``.

        ``expired=True`` makes one that ended yesterday, ``not_yet_valid=True`` one that starts
        tomorrow; ``not_before``/``not_after`` (timezone-aware) set the window exactly. When this
        CA is an intermediate and ``include_chain`` is true, ``cert_pem`` is the leaf followed by
        the intermediates (never the root), which is what Docker wants in a ``.cert`` file.

        Example: ``old = ca.issue_client("alice", expired=True)``.
        """
        if expired and not_yet_valid:
            raise ValueError("a certificate cannot be both expired and not yet valid")
        now = _now()
        if expired:
            start, end = now - _dt.timedelta(days=30), now - _dt.timedelta(days=1)
        elif not_yet_valid:
            start, end = now + _dt.timedelta(days=1), now + _dt.timedelta(days=30)
        else:
            start, end = now - _BACKDATE, now + _LEAF_LIFETIME
        start = _utc_seconds(not_before) if not_before is not None else start
        end = _utc_seconds(not_after) if not_after is not None else end
        if end <= start:
            raise ValueError(f"not_after ({end}) must be later than not_before ({start})")
        return self._issue(
            common_name,
            key_type=key_type,
            usage=ExtendedKeyUsageOID.CLIENT_AUTH,
            sans=[],
            not_before=start,
            not_after=end,
            include_chain=include_chain,
        )

    def _issue(
        self,
        common_name: str,
        *,
        key_type: KeyType,
        usage: x509.ObjectIdentifier,
        sans: Sequence[x509.GeneralName],
        not_before: _dt.datetime,
        not_after: _dt.datetime,
        include_chain: bool,
    ) -> Leaf:
        key = _generate_key(key_type)
        public_key = key.public_key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    # RSA key exchange (TLS 1.2 without ECDHE) needs it; harmless otherwise.
                    key_encipherment=isinstance(key, rsa.RSAPrivateKey),
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(self._ski),
                critical=False,
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self._key, _sign_hash(self._key))
        # The root stays out: a peer must already trust it, and sending it only costs bytes.
        chain = [ca.certificate for ca in self.lineage() if ca.parent is not None]
        return Leaf(
            cert,
            key,
            issuer=self,
            key_type=key_type,
            chain=chain if include_chain else [],
            not_before=not_before,
            not_after=not_after,
        )


class Leaf:
    """An end-entity certificate with its private key, made by :meth:`CA.issue_server` or
    :meth:`CA.issue_client`.

    ``cert_pem`` is what goes into a ``.cert`` file (leaf, then intermediates if any),
    ``leaf_pem`` the leaf alone, ``key_pem()`` the PKCS#8 key.

    Example::

        alice = ca.issue_client("alice")
        alice.subject                    # 'CN=alice'
        alice.write(d / "alice.cert", d / "alice.key", password=b"s3cret")
    """

    def __init__(
        self,
        certificate: x509.Certificate,
        private_key: PrivateKey,
        *,
        issuer: CA,
        key_type: KeyType,
        chain: Sequence[x509.Certificate] = (),
        not_before: _dt.datetime,
        not_after: _dt.datetime,
    ) -> None:
        self.certificate = certificate
        self.issuer = issuer
        self.key_type: KeyType = key_type
        self.not_before = not_before
        self.not_after = not_after
        self._key = private_key
        self.leaf_pem: bytes = _pem(certificate)
        """The leaf certificate alone, PEM."""
        self.chain_pems: tuple[bytes, ...] = tuple(_pem(c) for c in chain)
        """The intermediates that follow the leaf in ``cert_pem`` (issuer first)."""
        self.cert_pem: bytes = self.leaf_pem + b"".join(self.chain_pems)
        """The leaf followed by its intermediates (never the root), PEM."""
        self.fingerprint: str = _fingerprint(certificate)
        """SHA-256 of the leaf's DER encoding, lowercase hex."""
        self.subject: str = certificate.subject.rfc4514_string()
        """The subject as an RFC 4514 string, e.g. ``"CN=alice"``."""

    def __repr__(self) -> str:
        return (
            f"Leaf({self.subject!r}, issuer={self.issuer.subject!r}, "
            f"key_type={self.key_type!r}, fingerprint={self.fingerprint[:16]}...)"
        )

    @property
    def der(self) -> bytes:
        """The leaf certificate, DER."""
        return self.certificate.public_bytes(serialization.Encoding.DER)

    @property
    def expired(self) -> bool:
        """Whether ``not_after`` is in the past."""
        return self.not_after < _dt.datetime.now(_dt.timezone.utc)

    def key_pem(self, password: Optional[bytes] = None) -> bytes:
        """The private key as PKCS#8 PEM; ``ENCRYPTED PRIVATE KEY`` when ``password`` is given."""
        return _key_pem(self._key, password)

    def write(
        self, cert_path: PathLike, key_path: PathLike, *, password: Optional[bytes] = None
    ) -> tuple[Path, Path]:
        """Write ``cert_pem`` and the key (mode 0600) to the two paths; return them."""
        return (
            _write(cert_path, self.cert_pem),
            _write(key_path, self.key_pem(password), 0o600),
        )


def set_tls_version(ctx: ssl.SSLContext, tls_version: TLSVersion) -> None:
    """Pin ``ctx`` to TLS 1.2 or 1.3, or allow both (minimum 1.2, like Docker) for ``None``."""
    if tls_version is None:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return
    versions = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
    if tls_version not in versions:
        raise ValueError(f"tls_version must be '1.2', '1.3' or None, not {tls_version!r}")
    ctx.minimum_version = ctx.maximum_version = versions[tls_version]


def load_cert_chain(ctx: ssl.SSLContext, leaf: Leaf, *, password: Optional[bytes] = None) -> None:
    """Load ``leaf`` (certificate chain and key) into ``ctx``.

    :meth:`ssl.SSLContext.load_cert_chain` only reads files, so the PEMs go through two private
    temporary files (mode 0600) that are removed before this returns. With ``password`` the key
    is written encrypted and decrypted by OpenSSL, exercising that path too.
    """
    paths: list[str] = []
    try:
        for data in (leaf.cert_pem, leaf.key_pem(password)):
            fd, path = tempfile.mkstemp(prefix="dockercerts-", suffix=".pem")
            paths.append(path)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
        ctx.load_cert_chain(paths[0], paths[1], password=password)
    finally:
        for path in paths:
            os.unlink(path)


def client_ssl_context(
    trust: Union[CA, Sequence[CA], bytes, None] = None,
    leaf: Optional[Leaf] = None,
    *,
    password: Optional[bytes] = None,
    tls_version: TLSVersion = None,
) -> ssl.SSLContext:
    """A client context built like a real one (:func:`ssl.create_default_context`).

    ``trust`` is a CA, several CAs or PEM bytes (``None``: the system store); ``leaf`` the
    client certificate to present. Hostname checking stays on.

    Example::

        ctx = client_ssl_context(trust=srv.server_ca, leaf=alice, tls_version="1.2")
        httpx.get(srv.url + "/v2/", verify=ctx)
    """
    if trust is None:
        ctx = ssl.create_default_context()
    else:
        if isinstance(trust, CA):
            cadata = trust.cert_pem
        elif isinstance(trust, bytes):
            cadata = trust
        else:
            cadata = b"".join(ca.cert_pem for ca in trust)
        ctx = ssl.create_default_context(cadata=cadata.decode("ascii"))
    set_tls_version(ctx, tls_version)
    if leaf is not None:
        load_cert_chain(ctx, leaf, password=password)
    return ctx
