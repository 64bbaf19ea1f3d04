"""Issue 15: huge ``.crt`` bundles, and secrets out of tracebacks.

Large bundles: a folder's anchors are deduplicated and prepared once for all of its
candidates; from :data:`dockercerts._anchors.LAZY_FROM` distinct certificates on they go
into a private hashed folder that OpenSSL reads lazily, named with OpenSSL's subject hash,
which :func:`dockercerts._anchors.subject_hash` computes. These tests check that hash
against ``openssl x509 -subject_hash``, and that a lazy folder trusts exactly what an
eager load trusts (real handshakes over memory). Speed is measured by
``benchmarks/anchors.py``, not asserted here.

Secrets: every error the loader raises is rendered with the locals of every frame of its
traceback (as Sentry captures them) and searched for the key's bytes and the password.
"""

from __future__ import annotations

import dataclasses
import datetime
import gc
import os
import shutil
import ssl
import subprocess
import threading
import traceback
from pathlib import Path
from typing import Any, Callable, Optional

import memtls
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID

import dockercerts
from dockercerts import CertsDirError, docker_context, load, load_dir
from dockercerts import _anchors as anchors_mod
from dockercerts import _gil as gil_mod
from dockercerts.testing import CA, CertsD, HostDir, Leaf

pytestmark = pytest.mark.reliability

BULK = 10_000
PASSWORD = "Hunter2-bulk-and-trace-pw"
A = x509.NameAttribute
NOW = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=1)


def _self_signed(key: ec.EllipticCurvePrivateKey, name: x509.Name, serial: int) -> bytes:
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(NOW)
        .not_valid_after(NOW + datetime.timedelta(days=3650 * 3))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


class Bulk:
    """10,000 distinct self-signed CAs sharing one key (fast to make), and a server leaf
    issued by one of them."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.names = [
            x509.Name([A(NameOID.ORGANIZATION_NAME, "Bulk"), A(NameOID.COMMON_NAME, f"CA {i}")])
            for i in range(BULK)
        ]
        self.ders = [self._ca(i) for i in range(BULK)]
        self.pem = "".join(ssl.DER_cert_to_PEM_cert(d) for d in self.ders).encode()
        self.server = self._server(7777)

    def _ca(self, i: int) -> bytes:
        return _self_signed(self.key, self.names[i], i + 1)

    def _server(self, i: int) -> tuple[bytes, bytes]:
        """(certificate PEM, key PEM) of a ``localhost`` server issued by CA ``i``."""
        leaf_key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([A(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(self.names[i])
            .public_key(leaf_key.public_key())
            .serial_number(424242)
            .not_valid_before(NOW)
            .not_valid_after(NOW + datetime.timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
            .sign(self.key, hashes.SHA256())
        )
        key_pem = leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return cert.public_bytes(serialization.Encoding.PEM), key_pem


@pytest.fixture(scope="session")
def bulk() -> Bulk:
    return Bulk()


def verdict(context: ssl.SSLContext, cert_pem: bytes, key_pem: bytes, tmp: Path) -> str:
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    (tmp / "s.pem").write_bytes(cert_pem)
    (tmp / "s.key").write_bytes(key_pem)
    server.load_cert_chain(tmp / "s.pem", tmp / "s.key")
    return memtls.verdict(context, server)


# --------------------------------------------------------------------------- 10,000 anchors


def test_ten_thousand_anchors_are_shared_deduplicated_and_trusted(
    bulk: Bulk, certs_d: CertsD, mtls_ca: CA, tmp_path: Path
) -> None:
    hd = certs_d.host("localhost:5443")
    # The bundle twice over (two files), plus one CA repeated: Go's pool keeps each once.
    hd.file("a.crt", bulk.pem)
    hd.file("b.crt", bulk.pem + ssl.DER_cert_to_PEM_cert(bulk.ders[0]).encode() * 50)
    hd.pair("one", mtls_ca.issue_client("one")).pair("two", mtls_ca.issue_client("two"))
    certs = load_dir(hd.path)
    assert len(certs.ca_certificates) == 2 * BULK + 50  # what the files hold, as written
    one, two = certs.candidates()
    first, second = one.context, two.context
    assert first is not second  # one client certificate each
    maker = one._maker
    assert maker is two._maker
    prepared = maker._trust
    assert prepared is not None
    assert prepared.count == BULK  # deduplicated by DER
    assert prepared.eager == 0
    assert prepared.lazy == BULK
    folders = [f.path for f in first.__dict__["_dockercerts_anchors"]]
    assert folders == [f.path for f in second.__dict__["_dockercerts_anchors"]]
    assert len(os.listdir(folders[0])) == BULK  # one file per distinct subject hash
    cert_pem, key_pem = bulk.server
    assert verdict(first, cert_pem, key_pem, tmp_path) == "ok"
    assert verdict(second, cert_pem, key_pem, tmp_path) == "ok"
    # The folder lives while a context does, and goes with the last one.
    del certs, one, two, maker, prepared, first
    gc.collect()
    assert os.path.isdir(folders[0])
    del second
    gc.collect()
    assert not os.path.exists(folders[0])


def test_one_anchor_repeated_thousands_of_times_is_one_anchor(bulk: Bulk, certs_d: CertsD) -> None:
    hd = certs_d.host("localhost:5444")
    hd.file("ca.crt", ssl.DER_cert_to_PEM_cert(bulk.ders[1]).encode() * 5000)
    (candidate,) = load_dir(hd.path).candidates()
    context = candidate.context
    assert candidate._maker._trust is not None
    assert candidate._maker._trust.count == 1
    assert candidate._maker._trust.lazy == 0  # below LAZY_FROM: loaded eagerly, no folder
    assert "_dockercerts_anchors" not in context.__dict__
    assert len([c for c in context.get_ca_certs(binary_form=True) if c == bulk.ders[1]]) == 1


# --------------------------------------------------------------------------- lazy == eager

NAMES: dict[str, x509.Name] = {
    "plain": x509.Name([A(NameOID.COMMON_NAME, "Plain Root")]),
    "spaces and case": x509.Name(
        [A(NameOID.COMMON_NAME, "  Spaced   OUT\tRoot "), A(NameOID.ORGANIZATION_NAME, "ACME  X")]
    ),
    "utf8": x509.Name([A(NameOID.COMMON_NAME, "Főtanúsítvány Straße ÄÖÜ")]),
    "printable": x509.Name([A(NameOID.COMMON_NAME, "Printable", _type=_ASN1Type.PrintableString)]),
    "t61": x509.Name([A(NameOID.COMMON_NAME, "T61 Caf\xe9", _type=_ASN1Type.T61String)]),
    "ia5 e-mail": x509.Name([A(NameOID.EMAIL_ADDRESS, "Root@Example.COM")]),
    "bmp": x509.Name([A(NameOID.COMMON_NAME, "BMP Ünïcode", _type=_ASN1Type.BMPString)]),
    "universal": x509.Name(
        [A(NameOID.COMMON_NAME, "Universal \U0001f642", _type=_ASN1Type.UniversalString)]
    ),
    "multi-valued": x509.Name(
        [
            x509.RelativeDistinguishedName(
                [A(NameOID.COMMON_NAME, "Multi"), A(NameOID.ORGANIZATION_NAME, "Valued")]
            ),
            x509.RelativeDistinguishedName([A(NameOID.COUNTRY_NAME, "FR")]),
        ]
    ),
    "numeric": x509.Name(
        [
            A(NameOID.COMMON_NAME, "Numeric"),
            A(NameOID.SERIAL_NUMBER, "0123 456", _type=_ASN1Type.NumericString),
        ]
    ),
    "control characters": x509.Name([A(NameOID.COMMON_NAME, "a\x0bB\x0cc\r\nD")]),
    "long": x509.Name([A(NameOID.ORGANIZATIONAL_UNIT_NAME, "x" * 300)]),
}


@pytest.fixture(scope="module")
def named(bulk: Bulk) -> dict[str, bytes]:
    return {
        label: _self_signed(bulk.key, name, 9000 + i)
        for i, (label, name) in enumerate(NAMES.items())
    }


@pytest.mark.parametrize("label", list(NAMES))
def test_subject_hash_is_openssls(named: dict[str, bytes], label: str) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command-line tool is needed as the reference")
    done = subprocess.run(
        [openssl, "x509", "-inform", "DER", "-noout", "-subject_hash"],
        input=named[label],
        capture_output=True,
        check=True,
    )
    assert anchors_mod.subject_hash(named[label]) == done.stdout.decode().strip()


def test_subject_hash_names_the_platform_hashed_folder() -> None:
    folder = ssl.get_default_verify_paths().capath
    if not folder or not os.path.isdir(folder):
        pytest.skip("no platform hashed folder")
    checked = 0
    for name in sorted(os.listdir(folder)):
        stem, _, n = name.partition(".")
        if len(stem) != 8 or not n.isdigit():
            continue
        with open(os.path.join(folder, name)) as handle:
            der = ssl.PEM_cert_to_DER_cert(handle.read())
        assert anchors_mod.subject_hash(der) == stem, name
        checked += 1
    if not checked:
        pytest.skip("the platform hashed folder is empty")


def test_unsupported_names_are_loaded_eagerly(bulk: Bulk) -> None:
    visible = x509.Name([A(NameOID.COMMON_NAME, "Visible", _type=_ASN1Type.VisibleString)])
    odd = _self_signed(bulk.key, visible, 1)
    assert anchors_mod.subject_hash(odd) is None
    prepared = anchors_mod.Anchors([*bulk.ders[:40], odd], lazy_from=1)
    assert (prepared.count, prepared.lazy, prepared.eager) == (41, 40, 1)


def test_a_lazy_folder_trusts_exactly_what_an_eager_load_trusts(
    bulk: Bulk, named: dict[str, bytes], mtls_ca: CA, tmp_path: Path
) -> None:
    """Same verdicts both ways: roots with every kind of name, an intermediate as an anchor,
    a self-signed server (partial chain), an unknown CA, a wrong host name."""
    root = CA(name="equivalence root for bundles")
    issuing = root.intermediate(name="equivalence issuing CA for bundles")
    self_signed_key = ec.generate_private_key(ec.SECP256R1())
    lone_name = x509.Name([A(NameOID.COMMON_NAME, "localhost")])
    lone = (
        x509.CertificateBuilder()
        .subject_name(lone_name)
        .issuer_name(lone_name)
        .public_key(self_signed_key.public_key())
        .serial_number(5)
        .not_valid_before(NOW)
        .not_valid_after(NOW + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
        .sign(self_signed_key, hashes.SHA256())
    )
    lone_pems = (
        lone.public_bytes(serialization.Encoding.PEM),
        self_signed_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    anchors = [
        *bulk.ders[:50],
        *named.values(),
        issuing.certificate.public_bytes(serialization.Encoding.DER),
        lone.public_bytes(serialization.Encoding.DER),
    ]
    servers: dict[str, tuple[bytes, bytes]] = {
        "bulk root": bulk.server,  # issued by CA 7777: not among the 50 -> refused
        "through the anchored intermediate": _pems(issuing.issue_server("localhost")),
        "self-signed server in the bundle": lone_pems,
        "unknown CA": _pems(CA(name="stranger").issue_server("localhost")),
        "wrong host": _pems(issuing.issue_server("elsewhere.test")),
    }
    for label in named:
        servers[f"root named {label}"] = _issued_by(bulk.key, NAMES[label])

    def verdicts(make: Callable[[], ssl.SSLContext]) -> dict[str, str]:
        return {k: verdict(make(), *v, tmp_path) for k, v in servers.items()}

    lazy_anchors = anchors_mod.Anchors(anchors, lazy_from=1)
    assert lazy_anchors.eager == 0
    lazy = verdicts(lambda: docker_context(system=False, anchors=lazy_anchors))
    eager = verdicts(
        lambda: docker_context(system=False, anchors=anchors_mod.Anchors(anchors, lazy_from=10**9))
    )
    assert lazy == eager, (lazy, eager)
    assert {k for k, v in lazy.items() if v == "ok"} == {
        "through the anchored intermediate",
        "self-signed server in the bundle",
        *(f"root named {label}" for label in NAMES),
    }


def _pems(leaf: Leaf) -> tuple[bytes, bytes]:
    return leaf.cert_pem, leaf.key_pem()


def _issued_by(key: ec.EllipticCurvePrivateKey, issuer: x509.Name) -> tuple[bytes, bytes]:
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([A(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(issuer)
        .public_key(leaf_key.public_key())
        .serial_number(77)
        .not_valid_before(NOW)
        .not_valid_after(NOW + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), leaf_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


# --------------------------------------------------------------------------- tracebacks


def rendered(exc: BaseException) -> str:
    """The error as a reporter that captures locals sees it: every frame, every link."""
    text = "".join(
        traceback.TracebackException(
            type(exc), exc, exc.__traceback__, capture_locals=True
        ).format()
    )
    # capture_locals shows repr()s; follow suppressed contexts too, which objects keep.
    node: Optional[BaseException] = exc
    seen: set[int] = set()
    while node is not None and id(node) not in seen:
        seen.add(id(node))
        tb = node.__traceback__
        while tb is not None:
            text += "".join(f"{k}={v!r}\n" for k, v in tb.tb_frame.f_locals.items())
            tb = tb.tb_next
        node = node.__cause__ or node.__context__
    return text


def secrets_of(leaf: Leaf, *pems: bytes) -> list[str]:
    found = [PASSWORD, repr(PASSWORD.encode())]
    for pem in (leaf.key_pem(), *pems):
        body = "".join(
            line
            for line in pem.decode().splitlines()
            if line and not line.startswith("-----") and ":" not in line
        )
        found += [body[i : i + 24] for i in range(0, max(1, len(body) - 24), 24)]
        found.append(pem.decode())
    return [s for s in found if s]


def provoke(call: Callable[[], Any]) -> BaseException:
    try:
        call()
    except CertsDirError as exc:
        return exc
    raise AssertionError("no error")


def test_no_frame_of_any_error_keeps_key_bytes_or_the_password(
    certs_d: CertsD, mtls_ca: CA, tmp_path: Path
) -> None:
    alice, bob = mtls_ca.issue_client("alice"), mtls_ca.issue_client("bob")
    secret = PASSWORD.encode()
    enc = alice.key_pem(secret)
    errors: list[BaseException] = []

    def host(name: str) -> HostDir:
        return certs_d.host(name)

    cases: list[tuple[HostDir, Optional[object]]] = [
        (host("mismatch").cert_only("p", alice).key_only("p", bob), PASSWORD),
        (host("wrong-pw").cert_only("p", alice).file("p.key", enc), "not-the-password"),
        (host("no-pw").cert_only("p", alice).file("p.key", enc), None),
        (host("bad-key").cert_only("p", alice).file("p.key", alice.key_pem()[:-80]), PASSWORD),
        (host("swapped").file("p.cert", alice.key_pem()).file("p.key", alice.cert_pem), PASSWORD),
        (host("mismatch-enc").cert_only("p", bob).file("p.key", enc), PASSWORD),
        (
            host("big-key")
            .cert_only("p", alice)
            .file("p.key", alice.key_pem() + b"\n" * (1 << 20)),
            PASSWORD,
        ),
        (host("bytes-pw").cert_only("p", bob).file("p.key", enc), secret),
        (host("callable-pw").cert_only("p", bob).file("p.key", enc), lambda _p: PASSWORD),
    ]
    for hd, password in cases:
        path, pw = hd.path, password
        errors.append(provoke(lambda: load_dir(path, password=pw)))  # type: ignore[arg-type]  # noqa: B023
        errors.append(
            provoke(lambda: load(path.name, root=certs_d.path, password=pw))  # type: ignore[arg-type]  # noqa: B023
        )
        errors.append(provoke(lambda: dockercerts.scan.scan(path, password=pw)))  # type: ignore[arg-type]  # noqa: B023
    # Errors at context time: the pair changed after a good load (encrypted key in play).
    later = host("later").cert_only("p", alice).file("p.key", enc)
    certs = load_dir(later.path, password=PASSWORD)
    (later / "p.key").write_bytes(bob.key_pem(secret))
    errors.append(provoke(lambda: certs.candidates()[0].context))
    later2 = host("later2").cert_only("p", alice).file("p.key", enc)
    certs2 = load_dir(later2.path, password=PASSWORD)
    os.unlink(later2 / "p.key")
    errors.append(provoke(lambda: certs2.candidates()[0].context))

    needles = secrets_of(alice, bob.key_pem(), enc, bob.key_pem(secret))
    for error in errors:
        text = rendered(error)
        assert "Traceback" in text or "Error" in text
        leaked = [n for n in needles if n in text]
        assert not leaked, (type(error).__name__, str(error), leaked[:3])

    # Not vacuous: a frame holding the key is found by the same search.
    def holding(key: bytes) -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError) as info:
        holding(alice.key_pem())
    assert any(n in rendered(info.value) for n in needles)


def test_a_password_callable_error_reaches_the_caller_without_the_key_frame(
    certs_d: CertsD, mtls_ca: CA
) -> None:
    alice = mtls_ca.issue_client("alice")
    hd = (
        certs_d.host("callable-fails")
        .cert_only("p", alice)
        .file("p.key", alice.key_pem(PASSWORD.encode()))
    )

    def vault(path: Path) -> str:
        raise KeyError(f"no secret for {path.name}")

    with pytest.raises(KeyError) as info:
        load_dir(hd.path, password=vault)
    text = rendered(info.value)
    assert "vault" in text  # the caller's frame is there
    assert not [n for n in secrets_of(alice, alice.key_pem(PASSWORD.encode())) if n in text]


def test_host_certs_keeps_no_password_in_a_field(certs_d: CertsD, mtls_ca: CA) -> None:
    alice = mtls_ca.issue_client("alice")
    hd = (
        certs_d.host("fields")
        .ca(mtls_ca)
        .cert_only("p", alice)
        .file("p.key", alice.key_pem(PASSWORD.encode()))
    )
    for password in (PASSWORD, PASSWORD.encode(), lambda _p: PASSWORD):
        certs = load_dir(hd.path, password=password)
        assert "_password" not in {f.name for f in dataclasses.fields(certs)}
        assert PASSWORD not in str(dataclasses.asdict(certs))
        candidate = certs.candidates()[0]
        assert isinstance(candidate.context, ssl.SSLContext)
        text = str(dataclasses.asdict(certs)) + repr(certs) + str(vars(certs))
        assert PASSWORD not in text
        assert repr(PASSWORD.encode()) not in text
        # replace() still carries the password to the copy: its contexts build.
        copy = dataclasses.replace(certs, trust="replace")
        assert isinstance(copy.candidates()[0].context, ssl.SSLContext)


def test_reloads_of_an_unchanged_bundle_share_the_prepared_trust(
    bulk: Bulk, certs_d: CertsD, mtls_ca: CA
) -> None:
    """A reload (the transport's, after a client pair rotated) does not prepare the same
    10,000 anchors again while contexts of the previous load are alive."""
    hd = certs_d.host("localhost:5445")
    hd.file("ca.crt", bulk.pem[: len(bulk.pem) // 4])
    hd.pair("one", mtls_ca.issue_client("one"))
    first = load_dir(hd.path).candidates()[0]
    context = first.context
    hd.pair("one", mtls_ca.issue_client("one, renewed"))
    second = load_dir(hd.path).candidates()[0]
    assert second.context is not context
    assert second._maker._trust is first._maker._trust
    hd.file("ca.crt", bulk.pem[: len(bulk.pem) // 5])  # other anchors: prepared anew
    third = load_dir(hd.path).candidates()[0]
    assert third.context is not None
    assert third._maker._trust is not first._maker._trust


def test_reading_and_preparing_a_large_bundle_offers_the_gil(
    bulk: Bulk, certs_d: CertsD, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An event loop beside the worker thread that loads a large bundle gets the GIL between
    batches (a time.sleep(0)), not only at the interpreter's forced switch; the main thread
    (where such a loop runs) never pays for an offer."""
    offers: list[float] = []
    monkeypatch.setattr(gil_mod.time, "sleep", offers.append)
    hd = certs_d.host("localhost:5445")
    hd.file("ca.crt", bulk.pem)
    assert load_dir(hd.path).candidates()[0].context is not None
    assert offers == []  # on the main thread
    counts: list[int] = []

    def in_a_worker() -> None:
        (candidate,) = load_dir(hd.path).candidates()
        counts.append(len(offers))
        assert candidate.context is not None
        counts.append(len(offers))

    worker = threading.Thread(target=in_a_worker)
    worker.start()
    worker.join(60)
    read, prepared = counts
    assert read >= 2 * (BULK // gil_mod._BATCH)  # the PEM blocks, then each certificate
    assert prepared - read >= BULK // gil_mod._BATCH  # the subject hashes
    assert set(offers) == {0}
