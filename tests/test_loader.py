"""HostCerts and Candidate: the loader's public objects, lazy cached contexts, and the
foundation's end-to-end test: a certs.d tree generated with the toolkit, a real mTLS server on
loopback, and real httpx requests over TLS 1.2 and 1.3.
"""

from __future__ import annotations

import dataclasses
import os
import ssl
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

import httpx
import pytest

import dockercerts
from dockercerts import (
    Candidate,
    CertsDirError,
    CertsDirReadError,
    ClientPair,
    HostCerts,
    KeyPairError,
    host_dir,
    load,
    load_dir,
)
from dockercerts import loader as loader_mod
from dockercerts.testing import CA, CertsD, Leaf

PASSWORD = "pa55-for-the-key"


@pytest.fixture(scope="module")
def server_ca(mtls_ca_factory) -> CA:
    return mtls_ca_factory(name="registry server CA")


@pytest.fixture(scope="module")
def stranger_ca(mtls_ca_factory) -> CA:
    return mtls_ca_factory(name="CA the registry does not know")


@pytest.fixture(scope="module")
def right(mtls_ca: CA) -> Leaf:
    return mtls_ca.issue_client("right")


@pytest.fixture(scope="module")
def wrong(stranger_ca: CA) -> Leaf:
    return stranger_ca.issue_client("wrong")


# --------------------------------------------------------------------------- HostCerts


def test_host_certs_shape(certs_d: CertsD, server_ca: CA, right: Leaf) -> None:
    hd = certs_d.host("reg:5000").ca(server_ca).pair("client", right)
    hc = load("reg:5000", root=certs_d.path, platform="linux")
    assert isinstance(hc, HostCerts)
    assert hc.directory == hd.path
    assert hc.exists is True
    assert hc.ca_files == (hd / "ca.crt",)
    assert isinstance(hc.ca_files, tuple)
    assert isinstance(hc.pairs, tuple)
    (pair,) = hc.pairs
    assert isinstance(pair, ClientPair)
    assert (pair.name, pair.cert, pair.key) == ("client", hd / "client.cert", hd / "client.key")
    assert hc.trust == "merge"
    with pytest.raises(dataclasses.FrozenInstanceError):
        hc.pairs = ()  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        pair.name = "x"  # type: ignore[misc]


def test_load_is_load_dir_of_host_dir(certs_d: CertsD, right: Leaf) -> None:
    certs_d.host("[::1]:5000").pair("c", right)
    via_load = load("[::1]:5000", root=certs_d.path, platform="linux")
    via_dir = load_dir(host_dir("[::1]:5000", root=certs_d.path, platform="linux"))
    assert via_load == via_dir
    assert via_load.directory == certs_d.path / "[::1]:5000"
    assert [p.name for p in via_load.pairs] == ["c"]


def test_load_accepts_str_paths(certs_d: CertsD, right: Leaf) -> None:
    hd = certs_d.host("reg").pair("c", right)
    assert load_dir(str(hd.path)).directory == hd.path
    assert load("reg", root=str(certs_d.path), platform="linux").directory == hd.path


def test_nothing_is_cached_between_loads(certs_d: CertsD, server_ca: CA, right: Leaf) -> None:
    hd = certs_d.host("reg").pair("a", right)
    assert [p.name for p in load_dir(hd.path).pairs] == ["a"]
    hd.pair("b", right).ca(server_ca)
    second = load_dir(hd.path)
    assert [p.name for p in second.pairs] == ["a", "b"]
    assert second.ca_files == (hd / "ca.crt",)
    hd.remove("ca.crt").remove("b.cert").remove("b.key")
    third = load_dir(hd.path)
    assert [p.name for p in third.pairs] == ["a"]
    assert third.ca_files == ()


# --------------------------------------------------------------------------- candidates


def test_no_pairs_gives_exactly_one_candidate_without_certificate(
    certs_d: CertsD, server_ca: CA
) -> None:
    hd = certs_d.host("reg").ca(server_ca)
    (candidate,) = load_dir(hd.path).candidates()
    assert isinstance(candidate, Candidate)
    assert candidate.pair is None
    assert candidate.name is None
    assert isinstance(candidate.context, ssl.SSLContext)


def test_one_candidate_per_pair_in_try_order(certs_d: CertsD, right: Leaf, wrong: Leaf) -> None:
    hd = certs_d.host("reg").pair("b", right).pair("a", wrong).pair("C", right)
    hc = load_dir(hd.path)
    candidates = hc.candidates()
    assert [c.name for c in candidates] == ["C", "a", "b"]
    assert [c.pair for c in candidates] == list(hc.pairs)
    assert all(c.pair is not None for c in candidates)  # no certificate-less extra
    assert hc.candidates() is candidates


def test_contexts_are_cached(certs_d: CertsD, right: Leaf) -> None:
    hd = certs_d.host("reg").pair("a", right).pair("b", right)
    hc = load_dir(hd.path)
    first, second = hc.candidates()
    assert first.context is first.context
    assert hc.candidates()[0].context is first.context
    assert first.context is not second.context


def test_contexts_are_built_lazily_and_once(
    certs_d: CertsD, right: Leaf, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[bool] = []
    real = loader_mod.docker_context

    def counting(**kwargs):  # type: ignore[no-untyped-def]
        built.append(True)
        return real(**kwargs)

    monkeypatch.setattr(loader_mod, "docker_context", counting)
    hd = certs_d.host("reg").pair("a", right).pair("b", right).pair("c", right)
    hc = load_dir(hd.path)
    candidates = hc.candidates()
    assert built == []
    _ = candidates[1].context
    assert len(built) == 1
    _ = candidates[1].context
    _ = hc.candidates()[1].context
    assert len(built) == 1
    _ = candidates[0].context
    assert len(built) == 2


def test_concurrent_first_use_builds_one_context(
    certs_d: CertsD, right: Leaf, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = loader_mod.docker_context
    gate = threading.Barrier(8)

    def slow(**kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real(**kwargs)

    monkeypatch.setattr(loader_mod, "docker_context", slow)
    (candidate,) = load_dir(certs_d.host("reg").pair("a", right).path).candidates()
    seen: list[ssl.SSLContext] = []

    def worker() -> None:
        gate.wait()
        seen.append(candidate.context)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 8
    assert all(ctx is seen[0] for ctx in seen)
    assert len(calls) == 1


def test_deleted_pair_fails_only_when_its_context_is_first_used(
    certs_d: CertsD, right: Leaf
) -> None:
    hd = certs_d.host("reg").pair("a", right).pair("b", right)
    hc = load_dir(hd.path)
    hd.remove("b.cert")
    first, second = hc.candidates()  # no error yet
    assert isinstance(first.context, ssl.SSLContext)
    with pytest.raises(CertsDirReadError) as info:
        _ = second.context
    assert isinstance(info.value, CertsDirError)
    assert hd / "b.cert" in info.value.paths


def test_pair_changed_after_load_is_a_key_pair_error_at_first_use(
    certs_d: CertsD, right: Leaf, wrong: Leaf
) -> None:
    hd = certs_d.host("reg").pair("a", right)
    hc = load_dir(hd.path)
    (hd / "a.key").write_bytes(wrong.key_pem())  # no longer matches a.cert
    (candidate,) = hc.candidates()
    with pytest.raises(KeyPairError) as info:
        _ = candidate.context
    assert (info.value.cert, info.value.key) == (hd / "a.cert", hd / "a.key")


def test_pair_read_across_a_rotation_is_read_again(
    certs_d: CertsD, right: Leaf, wrong: Leaf, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OpenSSL reads the .cert and the .key one after the other: a rotation in between
    (Kubernetes swaps ``..data`` atomically, but the two reads are not one) pairs the old
    certificate with the new key. Once the rotation is over the files agree: read again."""
    hd = certs_d.host("reg").pair("a", right)
    hc = load_dir(hd.path)
    original = ssl.SSLContext.load_cert_chain
    calls = []

    def mid_rotation(self: ssl.SSLContext, certfile: Any, keyfile: Any = None, **kw: Any) -> None:
        calls.append(certfile)
        if len(calls) == 1:
            (hd / "a.key").write_bytes(wrong.key_pem())  # the key is already the new one
            try:
                original(self, certfile, keyfile, **kw)
            finally:
                (hd / "a.cert").write_bytes(wrong.cert_pem)  # and then the certificate
        original(self, certfile, keyfile, **kw)

    monkeypatch.setattr(ssl.SSLContext, "load_cert_chain", mid_rotation)
    (candidate,) = hc.candidates()
    assert isinstance(candidate.context, ssl.SSLContext)
    assert len(calls) == 2


def test_garbage_key_after_load_is_a_key_pair_error(certs_d: CertsD, right: Leaf) -> None:
    hd = certs_d.host("reg").pair("a", right)
    hc = load_dir(hd.path)
    (hd / "a.key").write_bytes(b"gone bad")
    with pytest.raises(KeyPairError):
        _ = hc.candidates()[0].context


def test_deleted_key_after_load_names_the_key(certs_d: CertsD, right: Leaf) -> None:
    hd = certs_d.host("reg").pair("b", right)
    hc = load_dir(hd.path)
    hd.remove("b.key")
    with pytest.raises(CertsDirReadError) as info:
        _ = hc.candidates()[0].context
    assert hd / "b.key" in info.value.paths
    assert "b.key" in str(info.value)


# --------------------------------------------------------------------------- end to end


def _get(candidate: Candidate, url: str) -> httpx.Response:
    with httpx.Client(verify=candidate.context, timeout=10) as client:
        return client.get(url + "/v2/")


def _eventually(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _chain(exc: BaseException) -> str:
    seen = []
    node: Optional[BaseException] = exc
    while node is not None and len(seen) < 10:
        seen.append(f"{type(node).__name__}: {node}")
        node = node.__cause__ or node.__context__
    return " <- ".join(seen)


@pytest.mark.parametrize("tls_version", ["1.2", "1.3"])
@pytest.mark.parametrize("reject", ["tls", "http"])
def test_end_to_end_right_candidate_is_accepted_wrong_one_rejected(
    mtls_server,
    certs_d: CertsD,
    mtls_ca: CA,
    server_ca: CA,
    stranger_ca: CA,
    right: Leaf,
    wrong: Leaf,
    tls_version: str,
    reject: str,
) -> None:
    srv = mtls_server(
        server_cert=server_ca.issue_server(),
        client_ca=mtls_ca,
        reject=reject,  # type: ignore[arg-type]
        tls_version=tls_version,  # type: ignore[arg-type]
    )
    # The wrong pair sorts first, the server's CA is the host's ca.crt.
    certs_d.host(srv.host).ca(server_ca).pair("a-wrong", wrong).pair("b-right", right)
    hc = load(srv.host, root=certs_d.path, platform="linux")
    bad, good = hc.candidates()
    assert (bad.name, good.name) == ("a-wrong", "b-right")

    if reject == "tls":
        with pytest.raises(httpx.TransportError) as info:
            _get(bad, srv.url)
        assert "CERTIFICATE_VERIFY_FAILED" not in _chain(info.value)  # not the server cert
        # The server counts the failed handshake just after sending its alert.
        assert _eventually(lambda: srv.failed_handshakes >= 1)
    else:
        assert _get(bad, srv.url).status_code == 400
        assert srv.requests[-1].client_fingerprint == wrong.fingerprint

    response = _get(good, srv.url)
    assert response.status_code == 200
    last = srv.requests[-1]
    assert last.status == 200
    assert last.client_fingerprint == right.fingerprint
    assert last.tls_version == f"TLSv{tls_version}"
    assert all(r.client_fingerprint != wrong.fingerprint for r in srv.requests if r.status == 200)
    assert srv.errors == []


@pytest.mark.parametrize("tls_version", ["1.2", "1.3"])
def test_end_to_end_without_pairs_sends_no_certificate(
    mtls_server, certs_d: CertsD, mtls_ca: CA, server_ca: CA, tls_version: str
) -> None:
    srv = mtls_server(
        server_cert=server_ca.issue_server(),
        client_ca=mtls_ca,
        reject="http",
        tls_version=tls_version,  # type: ignore[arg-type]
    )
    certs_d.host(srv.host).ca(server_ca)
    (only,) = load(srv.host, root=certs_d.path, platform="linux").candidates()
    assert only.pair is None
    response = _get(only, srv.url)
    assert response.status_code == 400
    assert "No required SSL certificate was sent" in response.text
    assert srv.requests[-1].client_fingerprint is None


def test_trust_only_keeps_the_trust_and_sends_no_certificate(
    mtls_server, certs_d: CertsD, mtls_ca: CA, server_ca: CA, right: Leaf
) -> None:
    srv = mtls_server(server_cert=server_ca.issue_server(), client_ca=mtls_ca, reject="http")
    certs_d.host(srv.host).ca(server_ca).pair("right", right)
    certs = load(srv.host, root=certs_d.path, platform="linux")
    bare = certs.trust_only()
    assert (bare.ca_files, bare.pairs, bare.directory) == (certs.ca_files, (), certs.directory)
    assert [c.pair for c in bare.candidates()] == [None]
    assert [c.name for c in certs.candidates()] == ["right"]  # the original is untouched
    assert bare.trust_only() is bare
    # A real handshake: the server is verified with the folder's CA, and no pair is sent.
    response = _get(bare.candidates()[0], srv.url)
    assert "No required SSL certificate was sent" in response.text
    assert srv.requests[-1].client_fingerprint is None


def test_end_to_end_server_not_trusted_without_its_ca(
    mtls_server, certs_d: CertsD, mtls_ca: CA, server_ca: CA, right: Leaf
) -> None:
    srv = mtls_server(server_cert=server_ca.issue_server(), client_ca=mtls_ca)
    certs_d.host(srv.host).pair("right", right)  # no ca.crt
    (candidate,) = load(srv.host, root=certs_d.path, platform="linux").candidates()
    with pytest.raises(httpx.ConnectError) as info:
        _get(candidate, srv.url)
    assert "CERTIFICATE_VERIFY_FAILED" in _chain(info.value)
    assert srv.requests == []


@pytest.mark.parametrize("form", ["bytes", "str", "callable"])
def test_end_to_end_encrypted_key_with_password(
    mtls_server, certs_d: CertsD, mtls_ca: CA, server_ca: CA, right: Leaf, form: str
) -> None:
    asked: list[Path] = []

    def ask(path: Path) -> str:
        asked.append(Path(path))
        return PASSWORD

    password = {"bytes": PASSWORD.encode(), "str": PASSWORD, "callable": ask}[form]
    srv = mtls_server(server_cert=server_ca.issue_server(), client_ca=mtls_ca)
    hd = certs_d.host(srv.host).ca(server_ca).pair("enc", right, password=PASSWORD.encode())
    assert b"ENCRYPTED PRIVATE KEY" in (hd / "enc.key").read_bytes()
    with pytest.raises(KeyPairError) as info:
        load(srv.host, root=certs_d.path, platform="linux")
    assert "encrypted" in info.value.problem
    (candidate,) = load(
        srv.host, root=certs_d.path, platform="linux", password=password
    ).candidates()
    assert _get(candidate, srv.url).status_code == 200
    assert srv.requests[-1].client_fingerprint == right.fingerprint
    if form == "callable":
        assert asked
        assert set(asked) == {hd / "enc.key"}


@pytest.mark.parametrize("tls_version", ["1.2", "1.3"])
def test_end_to_end_chain_in_cert_reaches_a_root_only_server(
    mtls_server, certs_d: CertsD, mtls_ca: CA, server_ca: CA, tls_version: str
) -> None:
    issuing = mtls_ca.intermediate(name="client issuing CA")
    full = issuing.issue_client("full-chain")
    leaf_only = issuing.issue_client("leaf-only", include_chain=False)
    srv = mtls_server(
        server_cert=server_ca.issue_server(),
        client_ca=mtls_ca,  # the root only
        reject="tls",
        tls_version=tls_version,  # type: ignore[arg-type]
    )
    certs_d.host(srv.host).ca(server_ca).pair("a-leaf-only", leaf_only).pair("b-full", full)
    hc = load(srv.host, root=certs_d.path, platform="linux")
    assert [p.chain_length for p in hc.pairs] == [1, 2]
    partial, complete = hc.candidates()
    with pytest.raises(httpx.TransportError):
        _get(partial, srv.url)
    assert _get(complete, srv.url).status_code == 200
    assert srv.requests[-1].client_fingerprint == full.fingerprint


@pytest.mark.parametrize("key_type", ["rsa2048", "ed25519"])
def test_end_to_end_other_key_types(
    mtls_server, certs_d: CertsD, mtls_ca: CA, server_ca: CA, key_type: str
) -> None:
    leaf = mtls_ca.issue_client(key_type, key_type=key_type)  # type: ignore[arg-type]
    srv = mtls_server(server_cert=server_ca.issue_server(), client_ca=mtls_ca)
    certs_d.host(srv.host).ca(server_ca).pair("k", leaf)
    (candidate,) = load(srv.host, root=certs_d.path, platform="linux").candidates()
    assert _get(candidate, srv.url).status_code == 200
    assert srv.requests[-1].client_fingerprint == leaf.fingerprint


def test_end_to_end_kubernetes_mount(
    mtls_server, certs_d: CertsD, mtls_ca: CA, server_ca: CA, right: Leaf
) -> None:
    srv = mtls_server(server_cert=server_ca.issue_server(), client_ca=mtls_ca)
    hd = certs_d.host(srv.host).kubernetes(
        {
            "ca.crt": server_ca.cert_pem,
            "client.cert": right.cert_pem,
            "client.key": right.key_pem(),
        }
    )
    os.chmod(hd / "client.key", 0o600)
    (candidate,) = load(srv.host, root=certs_d.path, platform="linux").candidates()
    assert _get(candidate, srv.url).status_code == 200
    assert srv.requests[-1].client_fingerprint == right.fingerprint


def test_package_exports_the_contract() -> None:
    for name in (
        "certs_root",
        "host_dir",
        "registry_host",
        "load",
        "load_dir",
        "HostCerts",
        "Candidate",
        "ClientPair",
        "CertsDirError",
        "MissingKeyError",
        "MissingCertificateError",
        "KeyPairError",
        "CertsDirReadError",
        "InvalidHostError",
    ):
        assert name in dockercerts.__all__
        assert getattr(dockercerts, name) is not None
    for err in (
        dockercerts.MissingKeyError,
        dockercerts.MissingCertificateError,
        dockercerts.KeyPairError,
        dockercerts.CertsDirReadError,
        dockercerts.InvalidHostError,
    ):
        assert issubclass(err, CertsDirError)


def test_replaced_host_certs_do_not_reuse_stale_candidates(
    certs_d: CertsD, server_ca: CA, mtls_ca_factory, tmp_path: Path, monkeypatch
) -> None:
    system = tmp_path / "system.pem"
    system.write_bytes(mtls_ca_factory(name="pretend system").cert_pem)
    (tmp_path / "no-hashed-dir").mkdir()
    monkeypatch.setenv("SSL_CERT_FILE", str(system))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path / "no-hashed-dir"))
    monkeypatch.setattr(dockercerts.trust, "_cache", {})
    hd = certs_d.host("reg").ca(server_ca)
    merged = load_dir(hd.path, trust="merge")
    assert merged.candidates()[0].context.cert_store_stats()["x509_ca"] == 2
    replaced = dataclasses.replace(merged, trust="replace")
    assert replaced.uses_system_roots is False
    assert replaced.candidates()[0].context.cert_store_stats()["x509_ca"] == 1
