"""Spec section 2: reading a host directory, one test (at least) per rule.

Certificates come from the project's own toolkit (``dockercerts.testing``) and the pytest
plugin's fixtures (``mtls_ca``, ``certs_d``). Every assertion compares against literal
expectations or against facts of the generated material, never against the loader's own
helpers.
"""

from __future__ import annotations

import base64
import errno
import logging
import os
import re
import ssl
import sys
import traceback
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

import dockercerts
from dockercerts import (
    CertsDirError,
    CertsDirReadError,
    HostCerts,
    KeyPairError,
    MissingCertificateError,
    MissingKeyError,
    load,
    load_dir,
)
from dockercerts.testing import CA, CertsD

HOST = "localhost:5443"
PASSWORD = "s3cr3t-Pa55word!"
WRONG_1 = "wr0ng-Pa55-one"
WRONG_2 = "wr0ng-Pa55-two"
IS_ROOT = getattr(os, "geteuid", lambda: -1)() == 0
ROOT_REASON = "running as root: file permissions do not restrict root, so EACCES cannot happen"


# --------------------------------------------------------------------------- material


@pytest.fixture(scope="module")
def other_ca(mtls_ca_factory) -> CA:
    return mtls_ca_factory(name="other CA")


@pytest.fixture(scope="module")
def alice(mtls_ca: CA):
    return mtls_ca.issue_client("alice")


@pytest.fixture(scope="module")
def bob(mtls_ca: CA):
    return mtls_ca.issue_client("bob")


@pytest.fixture
def hd(certs_d: CertsD):
    return certs_d.host(HOST)


def pair_names(hc: HostCerts) -> list[str]:
    return [p.name for p in hc.pairs]


def codes_for(hc: HostCerts, path: Path) -> set[str]:
    return {w.code for w in hc.warnings if w.path == path}


def der_of(ca: CA) -> bytes:
    return ca.certificate.public_bytes(serialization.Encoding.DER)


def traditional_encrypted(key_pem: bytes, password: bytes) -> bytes:
    """The same key as legacy OpenSSL PEM with ``Proc-Type: 4,ENCRYPTED`` headers."""
    key = serialization.load_pem_private_key(key_pem, None)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.BestAvailableEncryption(password),
    )


# --------------------------------------------------------------------------- rule 1: listing


def test_missing_directory_means_system_trust_and_no_client_certificate(certs_d: CertsD) -> None:
    for trust in ("merge", "replace"):
        hc = load_dir(certs_d.path / "nope:5000", trust=trust)
        assert hc.exists is False
        assert hc.ca_files == ()
        assert hc.pairs == ()
        # Said, not logged: most registries have no folder (see diagnose.NOT_LOGGED).
        assert [w.code for w in hc.warnings] == ["host-directory-missing"]
        assert hc.uses_system_roots is True
        (only,) = hc.candidates()
        assert only.pair is None
        assert only.name is None


def test_missing_root_is_not_an_error_either(tmp_path: Path) -> None:
    hc = load("reg:5000", root=tmp_path / "no" / "such" / "certs.d", platform="linux")
    assert hc.exists is False
    assert hc.directory == tmp_path / "no" / "such" / "certs.d" / "reg:5000"
    assert len(hc.candidates()) == 1


def test_empty_directory_exists_and_uses_system_trust(hd) -> None:
    hc = load_dir(hd.path, trust="replace")
    assert hc.exists is True
    assert (hc.ca_files, hc.pairs) == ((), ())
    assert hc.uses_system_roots is True


def test_host_path_that_is_a_file_is_an_error(certs_d: CertsD) -> None:
    path = certs_d.path / HOST
    path.write_bytes(b"oops")
    with pytest.raises(CertsDirReadError) as info:
        load_dir(path)
    assert "not a directory" in info.value.problem
    assert info.value.path == path
    assert info.value.directory == path
    assert path in info.value.paths
    assert isinstance(info.value, CertsDirError)


def test_parent_that_is_a_file_is_an_error(certs_d: CertsD) -> None:
    (certs_d.path / "blocker").write_bytes(b"")
    with pytest.raises(CertsDirReadError) as info:
        load_dir(certs_d.path / "blocker" / HOST)
    assert info.value.path == certs_d.path / "blocker" / HOST


@pytest.mark.skipif(IS_ROOT, reason=ROOT_REASON)
def test_unreadable_directory_is_an_error(hd) -> None:
    hd.ca(CA())
    os.chmod(hd.path, 0)
    try:
        with pytest.raises(CertsDirReadError) as info:
            load_dir(hd.path)
        assert "permission denied" in info.value.problem
        assert info.value.path == hd.path
    finally:
        os.chmod(hd.path, 0o755)


def test_listing_permission_error_is_an_error(hd, monkeypatch: pytest.MonkeyPatch) -> None:
    # Runs as root too: the OS error is injected where the loader lists the directory.
    real_listdir = os.listdir

    def listdir(path=None):  # type: ignore[no-untyped-def]
        if path is not None and Path(path) == hd.path:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_listdir(path) if path is not None else real_listdir()

    monkeypatch.setattr(os, "listdir", listdir)
    with pytest.raises(CertsDirReadError) as info:
        load_dir(hd.path)
    assert "permission denied" in info.value.problem
    assert info.value.path == hd.path


@pytest.mark.skipif(IS_ROOT, reason=ROOT_REASON)
def test_unreadable_crt_is_an_error(hd, mtls_ca: CA) -> None:
    hd.ca(mtls_ca)
    os.chmod(hd / "ca.crt", 0)
    with pytest.raises(CertsDirReadError) as info:
        load_dir(hd.path)
    assert "permission denied" in info.value.problem
    assert info.value.path == hd / "ca.crt"


def test_unreadable_file_is_an_error(hd, mtls_ca: CA, monkeypatch: pytest.MonkeyPatch) -> None:
    # Root-proof variant of the test above: EACCES is injected where the loader opens files.
    hd.ca(mtls_ca)
    real_open = os.open

    def fake_open(file, *args, **kwargs):  # type: ignore[no-untyped-def]
        if Path(file).name == "ca.crt":
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)
    with pytest.raises(CertsDirReadError) as info:
        load_dir(hd.path)
    assert "permission denied" in info.value.problem
    assert info.value.path == hd / "ca.crt"
    assert info.value.directory == hd.path


# --------------------------------------------------------------------------- rule 2: byte order


def test_pairs_are_sorted_by_bytes(hd, alice) -> None:
    # Written in an order unrelated to the expected one; case-insensitive, natural or
    # locale sorting would all give a different answer.
    for name in ("z", "\u00e9", "a9", "a", "B", "a10", "_x"):
        hd.pair(name, alice)
    hc = load_dir(hd.path)
    assert pair_names(hc) == ["B", "_x", "a", "a10", "a9", "z", "\u00e9"]
    assert [c.name for c in hc.candidates()] == pair_names(hc)


@pytest.mark.skipif(
    sys.platform == "darwin" or sys.getfilesystemencoding().lower() != "utf-8",
    reason="needs a file system that stores arbitrary bytes in names, with UTF-8 decoding",
)
def test_sort_is_by_bytes_not_by_code_points(hd, alice) -> None:
    # b"\xff" decodes to the lone surrogate U+DCFF, which sorts *before* U+E000 as a code
    # point but *after* it as bytes (0xFF > 0xEE).
    raw = os.fsencode(hd.path)
    for stem in (b"\xff", "\ue000".encode()):
        with open(os.path.join(raw, stem + b".cert"), "wb") as fh:
            fh.write(alice.cert_pem)
        with open(os.path.join(raw, stem + b".key"), "wb") as fh:
            fh.write(alice.key_pem())
        os.chmod(os.path.join(raw, stem + b".key"), 0o600)
    hc = load_dir(hd.path)
    assert pair_names(hc) == ["\ue000", os.fsdecode(b"\xff")]


def test_first_error_follows_byte_order(hd, alice) -> None:
    hd.cert_only("a", alice).cert_only("B", alice)
    with pytest.raises(MissingKeyError) as info:
        load_dir(hd.path)
    assert info.value.cert == hd / "B.cert"


# --------------------------------------------------------------------------- rule 3: extensions


def test_extension_is_case_sensitive_and_from_the_last_dot(hd, mtls_ca: CA, alice) -> None:
    ignored = ["ca.CRT", "ca.pem", "ca.crt.bak", "ca.Crt", "x.CERT", "y.KEY", "w.Cert", "v.Key"]
    for name in ("ca.CRT", "ca.pem", "ca.crt.bak", "ca.Crt"):
        hd.file(name, mtls_ca.cert_pem)
    # Would be MissingKeyError / MissingCertificateError if the extension were case-folded.
    hd.file("x.CERT", alice.cert_pem).file("w.Cert", alice.cert_pem)
    hd.file("y.KEY", alice.key_pem()).file("v.Key", alice.key_pem())
    # No extension at all, or a look-alike: also ignored.
    hd.file("crt", mtls_ca.cert_pem).file("cert", b"x").file("key", b"x")
    hc = load_dir(hd.path, trust="replace")
    assert hc.ca_files == ()
    assert hc.pairs == ()
    assert hc.uses_system_roots is True  # no .crt: trust did not switch
    assert sorted(p.name for p in hd.path.iterdir()) == sorted([*ignored, "crt", "cert", "key"])
    warned = {w.path.name for w in hc.warnings if w.code == "ignored-name"}
    assert {"ca.CRT", "ca.pem", "x.CERT", "y.KEY"} <= warned
    for w in hc.warnings:
        if w.code == "ignored-name":
            assert w.message
            assert w.fix


def test_ignored_names_do_not_stop_the_rest_loading(hd, mtls_ca: CA, alice) -> None:
    hd.ca(mtls_ca).pair("client", alice).file("x.CERT", alice.cert_pem)
    hc = load_dir(hd.path)
    assert [p.name for p in hc.ca_files] == ["ca.crt"]
    assert pair_names(hc) == ["client"]


def test_file_named_just_dot_crt_is_loaded(hd, mtls_ca: CA) -> None:
    hd.file(".crt", mtls_ca.cert_pem)
    hc = load_dir(hd.path, trust="replace")
    assert hc.ca_files == (hd / ".crt",)
    assert hc.ca_certificates == (der_of(mtls_ca),)
    assert hc.uses_system_roots is False
    assert not codes_for(hc, hd / ".crt")


def test_dot_cert_and_dot_key_form_a_pair_with_an_empty_name(hd, alice) -> None:
    hd.file(".cert", alice.cert_pem).file(".key", alice.key_pem())
    os.chmod(hd / ".key", 0o600)
    hc = load_dir(hd.path)
    assert pair_names(hc) == [""]
    assert hc.pairs[0].cert == hd / ".cert"
    assert hc.pairs[0].key == hd / ".key"


def test_dot_cert_alone_needs_dot_key(hd, alice) -> None:
    hd.file(".cert", alice.cert_pem)
    with pytest.raises(MissingKeyError) as info:
        load_dir(hd.path)
    assert str(info.value) == (
        "missing key .key for client certificate .cert. CA certificates must use the extension .crt"
    )


# --------------------------------------------------------------------------- rule 4: file types


def test_symlinks_are_followed(hd, mtls_ca: CA, alice, tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    (store / "root.pem").write_bytes(mtls_ca.cert_pem)
    (store / "leaf.pem").write_bytes(alice.cert_pem)
    (store / "leaf-key.pem").write_bytes(alice.key_pem())
    os.chmod(store / "leaf-key.pem", 0o600)
    hd.symlink("ca.crt", store / "root.pem")  # absolute target
    hd.symlink("c.cert", os.path.relpath(store / "leaf.pem", hd.path))  # relative target
    hd.symlink("c.key", store / "leaf-key.pem")
    hc = load_dir(hd.path)
    assert [p.name for p in hc.ca_files] == ["ca.crt"]
    assert hc.ca_certificates == (der_of(mtls_ca),)
    assert pair_names(hc) == ["c"]
    assert hc.pairs[0].fingerprint == alice.fingerprint


def test_kubernetes_data_layout_loads(hd, mtls_ca: CA, alice) -> None:
    hd.kubernetes(
        {"ca.crt": mtls_ca.cert_pem, "client.cert": alice.cert_pem, "client.key": alice.key_pem()}
    )
    # The layout really is made of links into ..data -> ..<timestamp>/
    assert (hd / "..data").is_symlink()
    assert (hd / "client.cert").is_symlink()
    assert any(n.startswith("..2") for n in os.listdir(hd.path))
    hc = load_dir(hd.path, trust="replace")
    assert [p.name for p in hc.ca_files] == ["ca.crt"]
    assert hc.ca_certificates == (der_of(mtls_ca),)
    assert pair_names(hc) == ["client"]
    assert hc.pairs[0].fingerprint == alice.fingerprint


def test_dangling_crt_symlink_is_an_error_naming_the_link(hd) -> None:
    hd.symlink("ca.crt", "..data/ca.crt")
    with pytest.raises(CertsDirReadError) as info:
        load_dir(hd.path)
    assert info.value.path == hd / "ca.crt"
    assert info.value.directory == hd.path
    assert str(hd / "ca.crt") in str(info.value)
    assert "dangling" in info.value.problem


@pytest.mark.parametrize("dangling", ["c.cert", "c.key"])
def test_dangling_pair_symlink_is_an_error(hd, alice, dangling: str) -> None:
    hd.pair("c", alice)
    hd.remove(dangling).symlink(dangling, "/nonexistent/dockercerts/" + dangling)
    with pytest.raises(CertsDirReadError) as info:
        load_dir(hd.path)
    assert info.value.path == hd / dangling
    assert dangling in str(info.value)


def test_dangling_symlinks_with_ignored_names_are_not_errors(hd, mtls_ca: CA) -> None:
    hd.ca(mtls_ca)
    for name in ("old.pem", "x.CRT", "notes", "ca.crt.bak", "..data"):
        hd.symlink(name, "/nonexistent/" + name)
    hc = load_dir(hd.path)
    assert hc.exists
    assert [p.name for p in hc.ca_files] == ["ca.crt"]


def test_symlink_loop_is_an_error(hd) -> None:
    hd.symlink("loop.crt", "loop.crt")
    with pytest.raises(CertsDirReadError) as info:
        load_dir(hd.path)
    assert info.value.path == hd / "loop.crt"


def test_directory_named_crt_is_an_error(hd, mtls_ca: CA) -> None:
    hd.ca(mtls_ca).mkdir("x.crt")
    with pytest.raises(CertsDirReadError) as info:
        load_dir(hd.path)
    assert "is a directory" in info.value.problem
    assert info.value.path == hd / "x.crt"


@pytest.mark.parametrize("as_dir", ["x.cert", "x.key"])
def test_directory_named_like_a_pair_file_is_an_error(hd, alice, as_dir: str) -> None:
    hd.pair("x", alice).remove(as_dir).mkdir(as_dir)
    with pytest.raises(CertsDirReadError) as info:
        load_dir(hd.path)
    assert "is a directory" in info.value.problem
    assert info.value.path == hd / as_dir


def test_directory_named_key_counts_as_present_in_the_listing(hd) -> None:
    # Docker's "has file" check looks at names only: x.key (a folder) without x.cert is the
    # orphan-key error, not a read error.
    hd.mkdir("x.key")
    with pytest.raises(MissingCertificateError):
        load_dir(hd.path)


def test_other_subdirectories_are_ignored(hd, mtls_ca: CA) -> None:
    hd.ca(mtls_ca).mkdir("sub").mkdir("x.pem").mkdir("hosts.toml.d")
    hc = load_dir(hd.path)
    assert [p.name for p in hc.ca_files] == ["ca.crt"]


# --------------------------------------------------------------------------- rule 5: .crt


def _headers_block(der: bytes) -> bytes:
    body = base64.encodebytes(der)
    return (
        b"-----BEGIN CERTIFICATE-----\nX-Note: headers\n\n" + body + b"-----END CERTIFICATE-----\n"
    )


NOT_A_CERT = {
    "garbage": lambda ca, leaf: b"this is not a certificate\n",
    "empty": lambda ca, leaf: b"",
    "der": lambda ca, leaf: der_of(ca),
    "private-key": lambda ca, leaf: leaf.key_pem(),
    "pem-with-headers": lambda ca, leaf: _headers_block(der_of(ca)),
    "trusted-certificate-block": lambda ca, leaf: ca.cert_pem.replace(
        b"CERTIFICATE", b"TRUSTED CERTIFICATE"
    ),
    "bad-base64": lambda ca, leaf: (
        b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n"
    ),
    "not-der": lambda ca, leaf: (
        b"-----BEGIN CERTIFICATE-----\n"
        + base64.encodebytes(b"hello world, not ASN.1")
        + b"-----END CERTIFICATE-----\n"
    ),
}


@pytest.mark.parametrize("kind", sorted(NOT_A_CERT))
def test_crt_without_usable_certificate_is_accepted_and_counts(
    hd, mtls_ca: CA, alice, kind: str
) -> None:
    hd.file("ca.crt", NOT_A_CERT[kind](mtls_ca, alice))
    hc = load_dir(hd.path, trust="replace")
    assert hc.ca_files == (hd / "ca.crt",)
    assert hc.ca_certificates == ()
    assert "crt-without-certificate" in codes_for(hc, hd / "ca.crt")
    # Go counts the file, not its content: the system roots are no longer used.
    assert hc.uses_system_roots is False
    merged = load_dir(hd.path, trust="merge")
    assert merged.uses_system_roots is True
    assert merged.ca_files == (hd / "ca.crt",)


def test_crt_keeps_every_usable_certificate_in_order(hd, mtls_ca: CA, other_ca: CA, alice) -> None:
    third = CA(name="third CA")
    mixed = b"junk\n" + other_ca.cert_pem + alice.key_pem() + b"more junk\n" + mtls_ca.cert_pem
    hd.file("a.crt", mixed).file("b.crt", third.cert_pem)
    hc = load_dir(hd.path)
    assert hc.ca_files == (hd / "a.crt", hd / "b.crt")
    assert hc.ca_certificates == (der_of(other_ca), der_of(mtls_ca), der_of(third))
    assert not any(w.code == "crt-without-certificate" for w in hc.warnings)


# --------------------------------------------------------------------------- rules 6-7: messages


def test_cert_without_key_has_dockers_exact_message(hd, alice) -> None:
    hd.cert_only("x", alice)
    with pytest.raises(MissingKeyError) as info:
        load_dir(hd.path)
    err = info.value
    assert str(err) == (
        "missing key x.key for client certificate x.cert. "
        "CA certificates must use the extension .crt"
    )
    assert err.cert == hd / "x.cert"
    assert err.key == hd / "x.key"
    assert set(err.paths) == {hd / "x.cert", hd / "x.key"}
    assert isinstance(err, CertsDirError)


def test_ca_saved_as_cert_is_the_missing_key_error(hd, mtls_ca: CA) -> None:
    hd.ca_as_cert(mtls_ca)
    with pytest.raises(MissingKeyError) as info:
        load_dir(hd.path)
    assert str(info.value) == (
        "missing key ca.key for client certificate ca.cert. "
        "CA certificates must use the extension .crt"
    )


def test_key_without_cert_has_dockers_exact_message(hd, alice) -> None:
    hd.key_only("y", alice)
    with pytest.raises(MissingCertificateError) as info:
        load_dir(hd.path)
    err = info.value
    assert str(err) == "missing client certificate y.cert for key y.key"
    assert err.cert == hd / "y.cert"
    assert err.key == hd / "y.key"
    assert set(err.paths) == {hd / "y.cert", hd / "y.key"}


def test_kubernetes_tls_secret_copied_as_is_is_the_orphan_key_error(hd, alice) -> None:
    hd.file("tls.crt", alice.cert_pem).file("tls.key", alice.key_pem())
    with pytest.raises(MissingCertificateError) as info:
        load_dir(hd.path)
    assert str(info.value) == "missing client certificate tls.cert for key tls.key"


# --------------------------------------------------------------------------- rule 8: first error


@pytest.mark.parametrize(
    ("steps", "expected", "culprit"),
    [
        ([("orphan-key", "a"), ("cert-alone", "b")], MissingCertificateError, "a.key"),
        ([("cert-alone", "a"), ("orphan-key", "b")], MissingKeyError, "a.cert"),
        ([("orphan-key", "B"), ("cert-alone", "a")], MissingCertificateError, "B.key"),
        ([("mismatch", "a"), ("orphan-key", "b")], KeyPairError, "a.cert"),
        ([("orphan-key", "a"), ("mismatch", "b")], MissingCertificateError, "a.key"),
        ([("crt-dir", "a"), ("cert-alone", "b")], CertsDirReadError, "a.crt"),
        ([("cert-alone", "a"), ("crt-dir", "b")], MissingKeyError, "a.cert"),
        ([("good", "0"), ("cert-alone", "z")], MissingKeyError, "z.cert"),
        ([("good", "0"), ("mismatch", "m"), ("crt-dir", "z")], KeyPairError, "m.cert"),
    ],
    ids=lambda v: "+".join(f"{k}:{n}" for k, n in v) if isinstance(v, list) else None,
)
def test_first_error_in_sorted_order_wins(hd, alice, bob, steps, expected, culprit: str) -> None:
    build = {
        "orphan-key": lambda stem: hd.key_only(stem, alice),
        "cert-alone": lambda stem: hd.cert_only(stem, alice),
        "mismatch": lambda stem: hd.cert_only(stem, alice).key_only(stem, bob),
        "crt-dir": lambda stem: hd.mkdir(stem + ".crt"),
        "good": lambda stem: hd.pair(stem, alice),
    }
    for kind, stem in reversed(steps):  # creation order must not matter
        build[kind](stem)
    with pytest.raises(CertsDirError) as info:
        load_dir(hd.path)
    assert type(info.value) is expected
    assert hd / culprit in info.value.paths


def test_no_partial_result_after_good_pairs_and_cas(hd, mtls_ca: CA, alice) -> None:
    hd.ca(mtls_ca).pair("a", alice).pair("b", alice).symlink("z.crt", "/nonexistent")
    with pytest.raises(CertsDirReadError):
        load_dir(hd.path)
    with pytest.raises(CertsDirReadError):
        dockercerts.scan.scan(hd.path)


# --------------------------------------------------------------------------- pairs


def test_mismatched_key_is_a_key_pair_error_naming_both_files(hd, alice, bob) -> None:
    hd.cert_only("m", alice).key_only("m", bob)
    with pytest.raises(KeyPairError) as info:
        load_dir(hd.path)
    assert "does not match" in info.value.problem
    err = info.value
    assert (err.cert, err.key) == (hd / "m.cert", hd / "m.key")
    assert err.paths == (hd / "m.cert", hd / "m.key")
    assert "m.cert" in str(err)
    assert "m.key" in str(err)
    assert err.problem
    assert err.fix


@pytest.mark.parametrize("style", ["pkcs8", "traditional"])
def test_encrypted_key_without_password_says_so(hd, alice, style: str) -> None:
    if style == "pkcs8":
        key = alice.key_pem(PASSWORD.encode())
        assert b"ENCRYPTED PRIVATE KEY" in key
    else:
        key = traditional_encrypted(alice.key_pem(), PASSWORD.encode())
        assert b"Proc-Type: 4,ENCRYPTED" in key
    hd.cert_only("e", alice).file("e.key", key)
    with pytest.raises(KeyPairError) as info:
        load_dir(hd.path)
    assert "encrypted" in info.value.problem.lower()
    assert (info.value.cert, info.value.key) == (hd / "e.cert", hd / "e.key")


@pytest.mark.parametrize("style", ["pkcs8", "traditional"])
@pytest.mark.parametrize("form", ["bytes", "str", "callable"])
def test_password_unlocks_encrypted_keys(hd, alice, style: str, form: str) -> None:
    secret = PASSWORD.encode()
    key = (
        alice.key_pem(secret)
        if style == "pkcs8"
        else traditional_encrypted(alice.key_pem(), secret)
    )
    hd.cert_only("e", alice).file("e.key", key)
    os.chmod(hd / "e.key", 0o600)
    seen: list[Path] = []

    def ask(path: Path) -> bytes:
        seen.append(path)
        return secret

    password = {"bytes": secret, "str": PASSWORD, "callable": ask}[form]
    hc = load_dir(hd.path, password=password)
    assert pair_names(hc) == ["e"]
    assert hc.pairs[0].fingerprint == alice.fingerprint
    if form == "callable":
        assert seen
        assert all(Path(p) == hd / "e.key" for p in seen)


def test_wrong_password_is_a_key_pair_error(hd, alice) -> None:
    hd.cert_only("e", alice).file("e.key", alice.key_pem(b"right-one"))
    with pytest.raises(KeyPairError) as info:
        load_dir(hd.path, password=b"wrong-one")
    assert info.value.key == hd / "e.key"


def test_password_is_harmless_for_plain_keys(hd, alice) -> None:
    hd.pair("p", alice)
    assert pair_names(load_dir(hd.path, password=b"unused")) == ["p"]


def _write_pair(hd, cert: bytes, key: bytes) -> None:
    hd.file("p.cert", cert).file("p.key", key)
    os.chmod(hd / "p.key", 0o600)


BROKEN_PAIRS = {
    "cert-garbage": lambda a: (b"no pem here\n", a.key_pem()),
    "cert-empty": lambda a: (b"", a.key_pem()),
    "cert-der": lambda a: (a.der, a.key_pem()),
    "cert-block-not-a-certificate": lambda a: (
        b"-----BEGIN CERTIFICATE-----\n"
        + base64.encodebytes(b"not ASN.1 at all")
        + b"-----END CERTIFICATE-----\n",
        a.key_pem(),
    ),
    "key-garbage": lambda a: (a.cert_pem, b"no pem here\n"),
    "key-empty": lambda a: (a.cert_pem, b""),
    "key-holds-a-certificate": lambda a: (a.cert_pem, a.cert_pem),
    "key-block-not-a-key": lambda a: (
        a.cert_pem,
        b"-----BEGIN PRIVATE KEY-----\n"
        + base64.encodebytes(b"not a key")
        + b"-----END PRIVATE KEY-----\n",
    ),
    "swapped": lambda a: (a.key_pem(), a.cert_pem),
}


@pytest.mark.parametrize("kind", sorted(BROKEN_PAIRS))
def test_unusable_pair_is_a_key_pair_error(hd, alice, kind: str) -> None:
    _write_pair(hd, *BROKEN_PAIRS[kind](alice))
    with pytest.raises(KeyPairError) as info:
        load_dir(hd.path)
    err = info.value
    assert (err.cert, err.key) == (hd / "p.cert", hd / "p.key")
    assert "p.cert" in str(err)
    assert "p.key" in str(err)


def test_leaf_and_intermediate_in_cert_load_as_a_chain(hd, mtls_ca: CA) -> None:
    issuing = mtls_ca.intermediate(name="issuing CA")
    carol = issuing.issue_client("carol")
    assert carol.cert_pem.count(b"BEGIN CERTIFICATE") == 2
    hd.pair("carol", carol)
    (pair,) = load_dir(hd.path).pairs
    assert pair.chain_length == 2
    assert pair.subject == "CN=carol"
    assert pair.issuer == "CN=issuing CA"
    assert pair.fingerprint == carol.fingerprint


@pytest.mark.parametrize(
    ("key_type", "label"), [("ec", "EC secp256r1"), ("rsa2048", "RSA 2048"), ("ed25519", "Ed25519")]
)
def test_key_types_load(hd, mtls_ca: CA, key_type, label: str) -> None:
    leaf = mtls_ca.issue_client("k", key_type=key_type)
    hd.pair("k", leaf)
    (pair,) = load_dir(hd.path).pairs
    assert pair.key_type == label
    assert pair.chain_length == 1


def test_pairs_describe_their_leaf(hd, alice) -> None:
    hd.pair("client", alice)
    (pair,) = load_dir(hd.path).pairs
    assert (pair.name, pair.cert, pair.key) == ("client", hd / "client.cert", hd / "client.key")
    assert pair.subject == "CN=alice"
    assert pair.issuer == alice.issuer.subject
    assert pair.not_before is not None
    assert pair.not_after is not None
    assert pair.not_before.tzinfo is not None
    assert pair.not_before < pair.not_after
    assert abs((pair.not_after - alice.not_after).total_seconds()) < 1


def test_pairs_are_in_try_order(hd, alice, bob) -> None:
    hd.pair("b-second", bob).pair("a-first", alice).pair("c-third", alice)
    hc = load_dir(hd.path)
    assert pair_names(hc) == ["a-first", "b-second", "c-third"]
    assert [c.pair for c in hc.candidates()] == list(hc.pairs)
    assert hc.pairs[1].fingerprint == bob.fingerprint


EC_P256_PARAMETERS = (
    b"-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n"
)


def test_key_file_with_ec_parameters_block_loads(hd, alice) -> None:
    # 'openssl ecparam -genkey' writes an EC PARAMETERS block before the key; Go and
    # OpenSSL skip it.
    key = serialization.load_pem_private_key(alice.key_pem(), None).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    assert key.startswith(b"-----BEGIN EC PRIVATE KEY-----")
    _write_pair(hd, alice.cert_pem, EC_P256_PARAMETERS + key)
    hc = load_dir(hd.path)
    assert pair_names(hc) == ["p"]
    assert isinstance(hc.candidates()[0].context, ssl.SSLContext)


def test_crlf_line_endings_load(hd, mtls_ca: CA, alice) -> None:
    def crlf(pem: bytes) -> bytes:
        return pem.replace(b"\n", b"\r\n")

    hd.file("ca.crt", crlf(mtls_ca.cert_pem))
    _write_pair(hd, crlf(alice.cert_pem), crlf(alice.key_pem()))
    hc = load_dir(hd.path)
    assert hc.ca_certificates == (der_of(mtls_ca),)
    assert pair_names(hc) == ["p"]
    assert isinstance(hc.candidates()[0].context, ssl.SSLContext)


def test_text_around_pem_blocks_is_ignored(hd, mtls_ca: CA, alice) -> None:
    # 'openssl x509 -text' output and bag attributes from 'openssl pkcs12' precede blocks.
    hd.file("ca.crt", b"Certificate:\n    Data: ...\n" + mtls_ca.cert_pem + b"trailer\n")
    _write_pair(
        hd,
        b"Bag Attributes\n    localKeyID: 01 02\nsubject=/CN=alice\n" + alice.cert_pem,
        b"Bag Attributes\n    localKeyID: 01 02\nKey Attributes: <No Attributes>\n"
        + alice.key_pem(),
    )
    hc = load_dir(hd.path)
    assert hc.ca_certificates == (der_of(mtls_ca),)
    assert pair_names(hc) == ["p"]
    assert isinstance(hc.candidates()[0].context, ssl.SSLContext)


def test_trailing_whitespace_after_begin_line_is_accepted_like_go(hd, mtls_ca: CA, alice) -> None:
    def spaced(pem: bytes) -> bytes:
        return re.sub(rb"(-----BEGIN [A-Z ]+-----)\n", rb"\1 \t\n", pem)

    assert spaced(alice.key_pem()) != alice.key_pem()
    hd.file("ca.crt", spaced(mtls_ca.cert_pem))
    _write_pair(hd, spaced(alice.cert_pem), spaced(alice.key_pem()))
    hc = load_dir(hd.path)
    assert hc.ca_certificates == (der_of(mtls_ca),)
    assert pair_names(hc) == ["p"]


# --------------------------------------------------------------------------- warnings


def test_expired_client_certificate_is_a_warning_not_an_error(hd, mtls_ca: CA) -> None:
    hd.pair("old", mtls_ca.issue_client("old", expired=True))
    hc = load_dir(hd.path)
    assert pair_names(hc) == ["old"]
    assert codes_for(hc, hd / "old.cert") == {"client-cert-expired"}


def test_not_yet_valid_client_certificate_is_a_warning(hd, mtls_ca: CA) -> None:
    hd.pair("new", mtls_ca.issue_client("new", not_yet_valid=True))
    hc = load_dir(hd.path)
    assert pair_names(hc) == ["new"]
    assert codes_for(hc, hd / "new.cert") == {"client-cert-not-yet-valid"}


def test_scan_now_parameter_decides_validity(hd, alice) -> None:
    hd.pair("a", alice)
    later = alice.not_after + timedelta(days=1)
    earlier = alice.not_before - timedelta(days=1)
    assert {w.code for w in dockercerts.scan.scan(hd.path).warnings} == set()
    assert {w.code for w in dockercerts.scan.scan(hd.path, now=later).warnings} == {
        "client-cert-expired"
    }
    assert {w.code for w in dockercerts.scan.scan(hd.path, now=earlier).warnings} == {
        "client-cert-not-yet-valid"
    }


def test_valid_pair_with_private_key_has_no_warnings(hd, mtls_ca: CA, alice) -> None:
    hd.ca(mtls_ca).pair("a", alice)
    assert load_dir(hd.path).warnings == ()


def test_ca_saved_as_cert_with_its_key_is_a_warning(hd, other_ca: CA) -> None:
    hd.file("ca.cert", other_ca.cert_pem).file("ca.key", other_ca.key_pem())
    os.chmod(hd / "ca.key", 0o600)
    hc = load_dir(hd.path)
    assert pair_names(hc) == ["ca"]  # Docker loads it; it is just a mistake
    assert codes_for(hc, hd / "ca.cert") == {"client-cert-is-ca"}
    (w,) = hc.warnings
    assert "ca.crt" in w.fix


def test_leaf_only_cert_from_an_intermediate_loads(hd, mtls_ca: CA) -> None:
    issuing = mtls_ca.intermediate(name="issuing CA 2")
    dave = issuing.issue_client("dave", include_chain=False)
    hd.pair("dave", dave)
    (pair,) = load_dir(hd.path).pairs
    assert pair.chain_length == 1
    assert pair.issuer == "CN=issuing CA 2"


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
@pytest.mark.parametrize(("mode", "warned"), [(0o644, True), (0o640, True), (0o600, False)])
def test_key_readable_by_others_is_a_warning(hd, alice, mode: int, warned: bool) -> None:
    hd.pair("a", alice)
    os.chmod(hd / "a.key", mode)
    hc = load_dir(hd.path)
    assert pair_names(hc) == ["a"]
    assert ("key-readable-by-others" in codes_for(hc, hd / "a.key")) is warned


def test_warnings_never_change_what_is_loaded(hd, mtls_ca: CA, alice) -> None:
    hd.ca(mtls_ca).pair("a", alice)
    clean = load_dir(hd.path)
    hd.file("ca.pem", b"x").file("junk.crt", b"x")
    os.chmod(hd / "a.key", 0o644)
    noisy = load_dir(hd.path)
    assert noisy.warnings
    assert noisy.pairs == clean.pairs
    assert noisy.ca_certificates == clean.ca_certificates
    assert noisy.ca_files == (hd / "ca.crt", hd / "junk.crt")


def test_warnings_are_logged(hd, mtls_ca: CA, caplog: pytest.LogCaptureFixture) -> None:
    hd.pair("old", mtls_ca.issue_client("old", expired=True))
    with caplog.at_level(logging.WARNING, logger="dockercerts"):
        load_dir(hd.path)
    records = [r for r in caplog.records if r.name.startswith("dockercerts")]
    assert records
    assert all(r.levelno == logging.WARNING for r in records)
    assert any("old.cert" in r.getMessage() for r in records)


def test_warning_str_names_the_file(hd) -> None:
    hd.file("ca.CRT", b"x")
    (w,) = load_dir(hd.path).warnings
    assert w.code == "ignored-name"
    assert w.path == hd / "ca.CRT"
    assert str(w).startswith("ca.CRT: ")


# --------------------------------------------------------------------------- no secrets leak


def _fragments(pem: bytes) -> list[str]:
    body = "".join(
        line
        for line in pem.decode().splitlines()
        if line and "-----" not in line and ":" not in line
    )
    return [body[i : i + 12] for i in range(0, max(len(body) - 12, 1), 6)]


def _texts(obj: object) -> Iterable[str]:
    yield str(obj)
    yield repr(obj)
    if isinstance(obj, BaseException):
        yield "".join(traceback.format_exception(type(obj), obj, obj.__traceback__))
        for arg in obj.args:
            yield str(arg)
        for value in vars(obj).values():
            yield str(value)
            yield repr(value)


def _assert_clean(objs: Iterable[object], key_pems: Iterable[bytes], passwords: Iterable[str]):
    fragments = [f for pem in key_pems for f in _fragments(pem)]
    secrets = list(passwords)
    for obj in objs:
        for text in _texts(obj):
            assert "PRIVATE KEY" not in text, text
            for password in secrets:
                assert password not in text, text
            leaked = [f for f in fragments if f in text]
            assert not leaked, (leaked, text)


def _provoke(path: Path, **kwargs: object) -> CertsDirError:
    try:
        load_dir(path, **kwargs)  # type: ignore[arg-type]
    except CertsDirError as exc:
        return exc
    raise AssertionError(f"{path} loaded without an error")


def test_no_message_or_repr_contains_key_material_or_password(
    certs_d: CertsD, mtls_ca: CA, alice, bob, caplog: pytest.LogCaptureFixture
) -> None:
    secret = PASSWORD.encode()
    enc = alice.key_pem(secret)
    trad = traditional_encrypted(alice.key_pem(), secret)
    keys = [alice.key_pem(), bob.key_pem(), enc, trad]
    errors: list[object] = []

    def case(name: str):  # type: ignore[no-untyped-def]
        return certs_d.host(name)

    errors.append(_provoke(case("mismatch").cert_only("p", alice).key_only("p", bob).path))
    errors.append(_provoke(case("enc").cert_only("p", alice).file("p.key", enc).path))
    errors.append(_provoke(case("trad").cert_only("p", alice).file("p.key", trad).path))
    errors.append(
        _provoke(
            case("wrongpw").cert_only("p", alice).file("p.key", enc).path, password=WRONG_1.encode()
        )
    )
    errors.append(
        _provoke(case("wrongpw2").cert_only("p", alice).file("p.key", trad).path, password=WRONG_2)
    )
    errors.append(
        _provoke(case("swapped").file("p.cert", alice.key_pem()).file("p.key", alice.cert_pem).path)
    )
    errors.append(_provoke(case("keyonly").key_only("p", alice).path))
    errors.append(_provoke(case("certonly").file("p.cert", alice.key_pem()).path))
    errors.append(
        _provoke(case("badkey").cert_only("p", alice).file("p.key", alice.key_pem()[:-80]).path)
    )
    # A key whose mismatch is detected with a password in play.
    errors.append(
        _provoke(case("mismatch-pw").cert_only("p", bob).file("p.key", enc).path, password=PASSWORD)
    )
    # Successful loads with a password: the result and its parts must not show it either.
    ok = case("ok").ca(mtls_ca).cert_only("p", alice).file("p.key", enc).file("q.pem", b"")
    os.chmod(ok / "p.key", 0o644)  # one warning about the key file
    with caplog.at_level(logging.DEBUG, logger="dockercerts"):
        for pw in (PASSWORD, secret, lambda _p: PASSWORD):
            hc = load_dir(ok.path, password=pw)
            candidates = hc.candidates()
            _ = [c.context for c in candidates]
            errors.extend([hc, *candidates, *hc.pairs, *hc.warnings])
    assert len(errors) > 10
    passwords = [PASSWORD, WRONG_1, WRONG_2]
    _assert_clean(errors, keys, passwords)
    _assert_clean([r.getMessage() for r in caplog.records], keys, passwords)
    # Sanity: the checker itself finds a leak when there is one.
    with pytest.raises(AssertionError):
        _assert_clean([enc.decode()], keys, passwords)
    with pytest.raises(AssertionError):
        _assert_clean([re.sub(r"-----.*-----", "", alice.key_pem().decode())], keys, [])
    with pytest.raises(AssertionError):
        _assert_clean(
            [KeyPairError(Path("a"), Path("b"), f"bad {WRONG_1.encode()!r}", "")], [], passwords
        )
