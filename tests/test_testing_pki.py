"""dockercerts.testing.pki: the generated material parses, verifies and loads into ``ssl``.

Verification is done by OpenSSL itself (an in-memory TLS handshake through ``ssl.MemoryBIO``)
or by cryptography's signature checks, never by the toolkit's own code.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import ssl
import stat
from pathlib import Path
from typing import Optional, TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from dockercerts.testing import CA, Leaf, client_ssl_context, load_cert_chain

UTC = dt.timezone.utc
E = TypeVar("E", bound=x509.ExtensionType)


@pytest.fixture(scope="module")
def root() -> CA:
    return CA(name="pki test root")


@pytest.fixture(scope="module")
def issuing(root: CA) -> CA:
    return root.intermediate(name="pki test issuing")


def handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> ssl.SSLObject:
    """Run a full TLS handshake in memory; raise the first side's ``ssl.SSLError``."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    cli = client.wrap_bio(c_in, c_out, server_hostname="localhost")
    srv = server.wrap_bio(s_in, s_out, server_side=True)
    done = {"c": False, "s": False}
    for _ in range(20):
        for name, obj in (("c", cli), ("s", srv)):
            if not done[name]:
                try:
                    obj.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            # TLS 1.3: the server judges the client certificate after the client is "done".
            cli.write(b"x")
            s_in.write(c_out.read())
            assert srv.read(1) == b"x"
            return cli
    raise AssertionError("handshake did not finish")


def server_ctx(
    leaf: Leaf, client_cas: Optional[list[CA]] = None, *, strict: bool = False
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    load_cert_chain(ctx, leaf)
    if client_cas:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata="".join(ca.cert_pem.decode() for ca in client_cas))
    if strict:
        ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    return ctx


def ext(cert: x509.Certificate, kind: type[E]) -> x509.Extension[E]:
    return cert.extensions.get_extension_for_class(kind)


# --------------------------------------------------------------------------- CAs


def test_root_is_self_signed_with_the_extensions_strict_verifiers_want(root: CA) -> None:
    cert = x509.load_pem_x509_certificate(root.cert_pem)
    assert cert.subject == cert.issuer
    cert.verify_directly_issued_by(cert)
    bc = ext(cert, x509.BasicConstraints)
    assert bc.critical
    assert bc.value.ca is True
    ku = ext(cert, x509.KeyUsage)
    assert ku.critical
    assert ku.value.key_cert_sign
    assert ku.value.crl_sign
    ski = ext(cert, x509.SubjectKeyIdentifier).value
    aki = ext(cert, x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert root.subject == "CN=pki test root"
    assert root.root is root
    assert root.parent is None
    assert (
        root.fingerprint
        == hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    )


def test_default_ca_name() -> None:
    assert CA().subject == "CN=dockercerts test CA"


def test_intermediate_is_signed_by_its_parent_and_knows_its_chain(root: CA, issuing: CA) -> None:
    cert = issuing.certificate
    assert cert.issuer == root.certificate.subject
    cert.verify_directly_issued_by(root.certificate)
    assert ext(cert, x509.BasicConstraints).value.ca is True
    assert (
        ext(cert, x509.AuthorityKeyIdentifier).value.key_identifier
        == ext(root.certificate, x509.SubjectKeyIdentifier).value.digest
    )
    assert issuing.root is root
    assert issuing.lineage() == [issuing, root]
    assert issuing.chain_pem == issuing.cert_pem + root.cert_pem
    assert issuing in list(root.descendants())


def test_ca_write_and_key_pem(root: CA, tmp_path: Path) -> None:
    path = root.write(tmp_path / "sub" / "ca.crt")
    assert path.read_bytes() == root.cert_pem
    key = serialization.load_pem_private_key(root.key_pem(), None)
    assert key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == root.certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


# --------------------------------------------------------------------------- leaves


def test_server_cert_default_hosts_and_usage(root: CA) -> None:
    leaf = root.issue_server()
    san = ext(leaf.certificate, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert list(ext(leaf.certificate, x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH
    ]
    assert ext(leaf.certificate, x509.BasicConstraints).value.ca is False


def test_server_cert_custom_hosts(root: CA) -> None:
    leaf = root.issue_server("registry.test", "10.0.0.1")
    san = ext(leaf.certificate, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["registry.test"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.1")]
    assert leaf.subject == "CN=registry.test"


def test_client_cert_fields(root: CA) -> None:
    alice = root.issue_client("alice")
    cert = x509.load_pem_x509_certificate(alice.cert_pem)
    assert alice.subject == "CN=alice"
    assert cert.issuer == root.certificate.subject
    cert.verify_directly_issued_by(root.certificate)
    assert list(ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    der = cert.public_bytes(serialization.Encoding.DER)
    assert alice.fingerprint == hashlib.sha256(der).hexdigest()
    assert alice.der == der
    assert alice.leaf_pem == alice.cert_pem  # issued by a root: nothing to append
    assert alice.issuer is root
    assert alice.not_after > dt.datetime.now(UTC) + dt.timedelta(days=300)
    assert not alice.expired


@pytest.mark.parametrize(
    ("key_type", "key_class"),
    [
        ("ec", ec.EllipticCurvePrivateKey),
        ("rsa2048", rsa.RSAPrivateKey),
        ("rsa4096", rsa.RSAPrivateKey),
        ("ed25519", ed25519.Ed25519PrivateKey),
    ],
)
def test_key_types_load_into_ssl_and_complete_a_handshake(
    root: CA, key_type: str, key_class: type
) -> None:
    leaf = root.issue_client("kt", key_type=key_type)  # type: ignore[arg-type]
    key = serialization.load_pem_private_key(leaf.key_pem(), None)
    assert isinstance(key, key_class)
    if key_type.startswith("rsa"):
        assert isinstance(key, rsa.RSAPrivateKey)
        assert key.key_size == int(key_type[3:])
    # Only the client key varies: a second RSA-4096 key would double the slowest test.
    server = server_ctx(root.issue_server(), [root])
    tls = handshake(server, client_ssl_context(trust=root, leaf=leaf))
    assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_ca_with_other_key_types_signs_verifiable_leaves() -> None:
    for key_type in ("ed25519", "rsa2048"):
        ca = CA(name=f"{key_type} root", key_type=key_type)
        leaf = ca.issue_client("x")
        leaf.certificate.verify_directly_issued_by(ca.certificate)
        handshake(server_ctx(ca.issue_server(), [ca]), client_ssl_context(trust=ca, leaf=leaf))


def test_unknown_key_type_is_refused(root: CA) -> None:
    with pytest.raises(ValueError, match="key_type"):
        root.issue_client("x", key_type="dsa")  # type: ignore[arg-type]


@pytest.mark.parametrize("tls_version", ["1.2", "1.3"])
def test_strict_verification_accepts_the_material_both_ways(
    root: CA, issuing: CA, tls_version: str
) -> None:
    """What Python 3.13's VERIFY_X509_STRICT demands, checked on any Python."""
    client = client_ssl_context(
        trust=root,
        leaf=issuing.issue_client("strict"),
        tls_version=tls_version,  # type: ignore[arg-type]
    )
    client.verify_flags |= ssl.VERIFY_X509_STRICT
    server = server_ctx(issuing.issue_server(), [root], strict=True)
    assert handshake(server, client).version() == f"TLSv{tls_version}"


# --------------------------------------------------------------------------- chains


def test_leaf_from_intermediate_carries_the_chain_without_root(root: CA, issuing: CA) -> None:
    bob = issuing.issue_client("bob")
    assert bob.cert_pem == bob.leaf_pem + issuing.cert_pem
    assert root.cert_pem not in bob.cert_pem
    certs = x509.load_pem_x509_certificates(bob.cert_pem)
    assert [c.subject.rfc4514_string() for c in certs] == ["CN=bob", "CN=pki test issuing"]


def test_chain_is_what_lets_a_root_only_server_verify(root: CA, issuing: CA) -> None:
    server = server_ctx(root.issue_server(), [root])
    handshake(server, client_ssl_context(trust=root, leaf=issuing.issue_client("with-chain")))
    leaf_only = issuing.issue_client("leaf-only", include_chain=False)
    assert leaf_only.cert_pem == leaf_only.leaf_pem
    with pytest.raises(ssl.SSLError, match="unable to get local issuer certificate"):
        handshake(server, client_ssl_context(trust=root, leaf=leaf_only))


# --------------------------------------------------------------------------- validity windows


def test_expired_and_not_yet_valid_windows(root: CA) -> None:
    now = dt.datetime.now(UTC)
    old = root.issue_client("old", expired=True)
    assert old.not_after < now
    assert old.expired
    assert old.certificate.not_valid_after_utc == old.not_after
    future = root.issue_client("future", not_yet_valid=True)
    assert future.not_before > now
    assert future.certificate.not_valid_before_utc == future.not_before


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"expired": True}, "certificate has expired"), ({"not_yet_valid": True}, "not yet valid")],
)
def test_openssl_refuses_out_of_window_client_certs(
    root: CA, kwargs: dict[str, bool], message: str
) -> None:
    leaf = root.issue_client("w", **kwargs)  # type: ignore[arg-type]
    server = server_ctx(root.issue_server(), [root])
    # TLS 1.2: the failure shows up in the handshake on both sides.
    with pytest.raises(ssl.SSLError) as info:
        handshake(server, client_ssl_context(trust=root, leaf=leaf, tls_version="1.2"))
    assert message in str(info.value) or "CERTIFICATE_EXPIRED" in str(info.value)


def test_explicit_window(root: CA) -> None:
    start = dt.datetime(2020, 1, 2, 3, 4, 5, 999, tzinfo=UTC)
    end = dt.datetime(2021, 1, 2, 3, 4, 5, tzinfo=UTC)
    leaf = root.issue_client("w", not_before=start, not_after=end)
    assert leaf.certificate.not_valid_before_utc == start.replace(microsecond=0)
    assert leaf.not_before == start.replace(microsecond=0)
    assert leaf.not_after == end
    naive = root.issue_client("n", not_after=dt.datetime(2099, 1, 1))
    assert naive.not_after == dt.datetime(2099, 1, 1, tzinfo=UTC)


def test_impossible_windows_are_refused(root: CA) -> None:
    with pytest.raises(ValueError, match="both"):
        root.issue_client("x", expired=True, not_yet_valid=True)
    with pytest.raises(ValueError, match="later"):
        root.issue_client(
            "x",
            not_before=dt.datetime(2030, 1, 1, tzinfo=UTC),
            not_after=dt.datetime(2029, 1, 1, tzinfo=UTC),
        )


# --------------------------------------------------------------------------- keys and files


def test_encrypted_key_needs_the_password(root: CA, tmp_path: Path) -> None:
    leaf = root.issue_client("enc")
    pem = leaf.key_pem(b"s3cret")
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    with pytest.raises(TypeError):
        serialization.load_pem_private_key(pem, None)
    with pytest.raises(ValueError):
        serialization.load_pem_private_key(pem, b"wrong")
    serialization.load_pem_private_key(pem, b"s3cret")
    cert_path, key_path = leaf.write(tmp_path / "c.cert", tmp_path / "c.key", password=b"s3cret")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    with pytest.raises(ssl.SSLError):
        ctx.load_cert_chain(cert_path, key_path, password=b"wrong")
    ctx.load_cert_chain(cert_path, key_path, password=b"s3cret")
    with pytest.raises(ValueError, match="empty"):
        leaf.key_pem(b"")


def test_plain_key_is_pkcs8(root: CA) -> None:
    assert root.issue_client("p").key_pem().startswith(b"-----BEGIN PRIVATE KEY-----")


def test_write_creates_files_with_private_key_mode(issuing: CA, tmp_path: Path) -> None:
    leaf = issuing.issue_client("w")
    cert_path, key_path = leaf.write(tmp_path / "d" / "w.cert", tmp_path / "d" / "w.key")
    assert cert_path.read_bytes() == leaf.cert_pem
    assert key_path.read_bytes() == leaf.key_pem()
    if os.name == "posix":
        assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(cert_path, key_path)


def test_repr_never_shows_key_material(root: CA) -> None:
    leaf = root.issue_client("secret-holder")
    key_body = b"".join(leaf.key_pem().splitlines()[1:-1]).decode()
    ca_body = b"".join(root.key_pem().splitlines()[1:-1]).decode()
    for text in (repr(leaf), str(leaf), repr(root), str(root)):
        assert "PRIVATE" not in text
        for i in range(0, len(key_body) - 16, 16):
            assert key_body[i : i + 16] not in text
            assert ca_body[i : i + 16] not in text
    assert "CN=secret-holder" in repr(leaf)


def test_client_ssl_context_pins_versions(root: CA) -> None:
    ctx = client_ssl_context(trust=[root], tls_version="1.3")
    assert ctx.minimum_version == ctx.maximum_version == ssl.TLSVersion.TLSv1_3
    ctx = client_ssl_context(trust=root.cert_pem)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.check_hostname
    with pytest.raises(ValueError, match="tls_version"):
        client_ssl_context(trust=root, tls_version="1.1")  # type: ignore[arg-type]


def test_untrusted_server_is_refused_by_the_client_context(root: CA) -> None:
    other = CA(name="stranger")
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(server_ctx(other.issue_server()), client_ssl_context(trust=root))
