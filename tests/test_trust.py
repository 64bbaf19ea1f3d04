"""Spec sections 3-4: which roots a context trusts, and Docker's TLS parameters.

Trust is checked with real TLS handshakes between a client context under test and a server
context, pumped through in-memory BIOs (no sockets, no threads): a server certificate either
verifies or it does not. The system store is made of test CAs through ``SSL_CERT_FILE`` and
``SSL_CERT_DIR`` (passed as ``environ=`` or set with ``monkeypatch``), with
``dockercerts.trust._cache`` cleared for each test.
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Optional

import certifi
import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from memtls import handshake

import dockercerts
from dockercerts import DOCKER_CIPHERS, default_trust, docker_context, load_dir, system_trust
from dockercerts import trust as trust_mod
from dockercerts.testing import CA, CertsD
from dockercerts.testing.pki import Leaf, load_cert_chain

AEAD = {"aes-128-gcm", "aes-256-gcm", "chacha20-poly1305"}


# --------------------------------------------------------------------------- helpers


@pytest.fixture(autouse=True)
def fresh_system_trust_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trust_mod, "_cache", {})


def server_context(
    leaf: Leaf,
    *,
    tls: Optional[str] = None,
    ciphers: Optional[str] = None,
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    if tls == "1.2":
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    elif tls == "1.3":
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    if ciphers:
        ctx.set_ciphers(ciphers)
    load_cert_chain(ctx, leaf)
    return ctx


def verifies(client_ctx: ssl.SSLContext, server_ctx: ssl.SSLContext) -> bool:
    try:
        handshake(client_ctx, server_ctx)
    except ssl.SSLCertVerificationError:
        return False
    return True


def pem_file(path: Path, *cas: CA) -> Path:
    path.write_bytes(b"".join(ca.cert_pem for ca in cas))
    return path


@pytest.fixture(scope="module")
def sys_ca() -> CA:
    return CA(name="pretend system root")


@pytest.fixture(scope="module")
def dir_ca() -> CA:
    return CA(name="certs.d root")


@pytest.fixture(scope="module")
def sys_server(sys_ca: CA) -> ssl.SSLContext:
    return server_context(sys_ca.issue_server())


@pytest.fixture(scope="module")
def dir_server(dir_ca: CA) -> ssl.SSLContext:
    return server_context(dir_ca.issue_server())


@pytest.fixture
def fake_system(tmp_path: Path, sys_ca: CA) -> dict[str, str]:
    """An environment whose only system root is ``sys_ca``."""
    empty = tmp_path / "empty-hashed-dir"
    empty.mkdir()
    return {
        "SSL_CERT_FILE": str(pem_file(tmp_path / "system.pem", sys_ca)),
        "SSL_CERT_DIR": str(empty),
    }


@pytest.fixture
def system_env(monkeypatch: pytest.MonkeyPatch, fake_system: dict[str, str]) -> dict[str, str]:
    """``fake_system`` installed in ``os.environ`` (the loader reads the real environment)."""
    for name, value in fake_system.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SSLKEYLOGFILE", raising=False)
    return fake_system


# --------------------------------------------------------------------------- TLS parameters


def _tls12_suites(ctx: ssl.SSLContext) -> list[dict]:
    return [c for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"]


def _assert_docker_settings(ctx: ssl.SSLContext) -> None:
    assert ctx.protocol == ssl.PROTOCOL_TLS_CLIENT
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.maximum_version == ssl.TLSVersion.MAXIMUM_SUPPORTED
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.check_hostname is True
    suites = _tls12_suites(ctx)
    assert suites
    for suite in suites:
        assert suite["kea"] == "kx-ecdhe", suite["name"]
        assert suite["symmetric"] in AEAD, suite["name"]
        assert suite["auth"] in ("auth-ecdsa", "auth-rsa"), suite["name"]
    # All of Docker's suites are there, ChaCha20 included (Docker >= 29.4).
    assert {s["symmetric"] for s in suites} == AEAD
    assert {s["auth"] for s in suites} == {"auth-ecdsa", "auth-rsa"}


@pytest.mark.parametrize("system", [True, False])
def test_docker_context_settings(system: bool, fake_system: dict[str, str]) -> None:
    _assert_docker_settings(docker_context(system=system, environ=fake_system))


def test_docker_ciphers_constant_is_ecdhe_aead_only() -> None:
    names = DOCKER_CIPHERS.split(":")
    assert len(names) == 6
    for name in names:
        assert name.startswith(("ECDHE-ECDSA-", "ECDHE-RSA-")), name
        assert "GCM" in name or "CHACHA20-POLY1305" in name, name


def test_every_candidate_context_has_docker_settings(
    certs_d: CertsD, mtls_ca: CA, system_env: dict[str, str]
) -> None:
    hd = certs_d.host("reg:5000").ca(mtls_ca)
    hd.pair("a", mtls_ca.issue_client("a")).pair("b", mtls_ca.issue_client("b"))
    for trust in ("merge", "replace"):
        for candidate in load_dir(hd.path, trust=trust).candidates():
            _assert_docker_settings(candidate.context)
    _assert_docker_settings(load_dir(certs_d.path / "missing").candidates()[0].context)


@pytest.fixture(scope="module")
def anchored(dir_ca: CA) -> ssl.SSLContext:
    return docker_context(system=False, anchors=[dir_ca.certificate.public_bytes(Encoding.DER)])


@pytest.mark.parametrize(
    "suite",
    [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
    ],
)
def test_tls12_negotiates_dockers_suites(anchored, dir_ca: CA, suite: str) -> None:
    server = server_context(dir_ca.issue_server(), tls="1.2", ciphers=suite)
    conn = handshake(anchored, server)
    assert conn.version() == "TLSv1.2"
    assert conn.cipher()[0] == suite


@pytest.mark.parametrize("suite", ["ECDHE-ECDSA-AES128-SHA256", "ECDHE-ECDSA-AES256-SHA"])
def test_tls12_refuses_non_docker_suites(anchored, dir_ca: CA, suite: str) -> None:
    server = server_context(dir_ca.issue_server(), tls="1.2", ciphers=suite)
    # Control: a stock client with the same trust does connect to this server.
    stock = ssl.create_default_context(cadata=dir_ca.cert_pem.decode())
    stock.maximum_version = ssl.TLSVersion.TLSv1_2
    stock.set_ciphers(suite)
    assert handshake(stock, server).cipher()[0] == suite
    with pytest.raises(ssl.SSLError):
        handshake(anchored, server)


def test_tls13_is_used_when_offered(anchored, dir_ca: CA) -> None:
    assert handshake(anchored, server_context(dir_ca.issue_server())).version() == "TLSv1.3"
    only13 = server_context(dir_ca.issue_server(), tls="1.3")
    assert handshake(anchored, only13).version() == "TLSv1.3"


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_tls11_is_refused(anchored, dir_ca: CA) -> None:
    server = server_context(dir_ca.issue_server())
    try:
        server.set_ciphers("DEFAULT:@SECLEVEL=0")
        server.minimum_version = ssl.TLSVersion.TLSv1_1
        server.maximum_version = ssl.TLSVersion.TLSv1_1
        old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        old.set_ciphers("DEFAULT:@SECLEVEL=0")
        old.minimum_version = ssl.TLSVersion.TLSv1_1
        old.load_verify_locations(cadata=dir_ca.cert_pem.decode())
        assert handshake(old, server).version() == "TLSv1.1"
    except (ssl.SSLError, ValueError) as exc:
        pytest.skip(f"this OpenSSL build cannot speak TLS 1.1 at all ({exc})")
    with pytest.raises(ssl.SSLError):
        handshake(anchored, server)


def test_hostname_is_checked(anchored, dir_ca: CA) -> None:
    server = server_context(dir_ca.issue_server("registry.test"))
    handshake(anchored, server, hostname="registry.test")
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(anchored, server, hostname="other.test")


def test_server_certificate_is_verified(dir_ca: CA, sys_server) -> None:
    # Trusting dir_ca only: a server of another CA fails even though the name matches.
    ctx = docker_context(system=False, anchors=[dir_ca.certificate.public_bytes(Encoding.DER)])
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(ctx, sys_server)


def test_no_system_and_no_anchors_trusts_nothing(dir_server, fake_system) -> None:
    assert not verifies(docker_context(system=False, environ=fake_system), dir_server)


def test_intermediate_in_crt_is_a_trust_anchor(certs_d: CertsD, dir_ca: CA) -> None:
    # Go treats every certificate of the pool as an anchor: a .crt holding only the
    # issuing intermediate is enough, the root need not be known.
    issuing = dir_ca.intermediate(name="issuing for servers")
    server = server_context(issuing.issue_server())
    hd = certs_d.host("reg").ca(issuing)
    ctx = load_dir(hd.path, trust="replace").candidates()[0].context
    assert verifies(ctx, server)
    stock = ssl.create_default_context(cadata=issuing.cert_pem.decode())
    stock.verify_flags &= ~trust_mod._PARTIAL_CHAIN
    assert not verifies(stock, server)  # control: without the flag OpenSSL wants the root


def test_sslkeylogfile_is_honoured(tmp_path: Path) -> None:
    path = str(tmp_path / "keys.log")
    assert docker_context(system=False, environ={"SSLKEYLOGFILE": path}).keylog_filename == path
    assert docker_context(system=False, environ={}).keylog_filename is None


# --------------------------------------------------------------------------- system roots


def test_ssl_cert_file_is_the_system_store(
    fake_system: dict[str, str], sys_server, dir_server, tmp_path: Path, dir_ca: CA
) -> None:
    assert verifies(docker_context(system=True, environ=fake_system), sys_server)
    assert not verifies(docker_context(system=True, environ=fake_system), dir_server)
    other = {**fake_system, "SSL_CERT_FILE": str(pem_file(tmp_path / "o.pem", dir_ca))}
    assert verifies(docker_context(system=True, environ=other), dir_server)
    assert not verifies(docker_context(system=True, environ=other), sys_server)


def test_ssl_cert_file_reaches_a_host_without_any_crt(
    certs_d: CertsD, system_env: dict[str, str], sys_server, dir_server
) -> None:
    for hc in (load_dir(certs_d.path / "absent"), load_dir(certs_d.host("empty").path)):
        assert hc.ca_files == ()
        ctx = hc.candidates()[0].context
        assert verifies(ctx, sys_server)
        assert not verifies(ctx, dir_server)


def test_system_trust_reports_environment(fake_system: dict[str, str]) -> None:
    found = system_trust(fake_system)
    assert found.source == "environment"
    assert found.cafile == fake_system["SSL_CERT_FILE"]
    assert found.capath == fake_system["SSL_CERT_DIR"]
    assert system_trust(dict(fake_system)) is found  # cached per environment
    assert system_trust({**fake_system, "SSL_CERT_DIR": "/elsewhere"}) is not found


def test_empty_variables_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = ssl.DefaultVerifyPaths(None, None, "SSL_CERT_FILE", "/nope", "SSL_CERT_DIR", "/nope")
    monkeypatch.setattr(ssl, "get_default_verify_paths", lambda: fake)
    assert system_trust({"SSL_CERT_FILE": "", "SSL_CERT_DIR": ""}).source == "certifi"


def _rehash(directory: Path) -> None:
    for command in (["openssl", "rehash", str(directory)], ["c_rehash", str(directory)]):
        if shutil.which(command[0]) is None:
            continue
        done = subprocess.run(command, capture_output=True, check=False)
        if done.returncode == 0 and any(n.endswith(".0") for n in os.listdir(directory)):
            return
    pytest.skip("neither 'openssl rehash' nor 'c_rehash' can build a hashed certificate dir")


def test_ssl_cert_dir_colon_separated_list(tmp_path: Path, dir_ca: CA, sys_ca: CA) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    for folder, ca in ((first, sys_ca), (second, dir_ca)):
        folder.mkdir()
        pem_file(folder / "root.pem", ca)
        _rehash(folder)
    stranger = CA(name="in no store")
    env = {
        "SSL_CERT_FILE": str(pem_file(tmp_path / "unrelated.pem", CA(name="unrelated"))),
        "SSL_CERT_DIR": f"{first}{os.pathsep}{second}",
    }
    found = system_trust(env)
    assert (found.source, found.capath) == ("environment", env["SSL_CERT_DIR"])
    ctx = docker_context(system=True, environ=env)
    assert verifies(ctx, server_context(sys_ca.issue_server()))  # found in the first dir
    assert verifies(ctx, server_context(dir_ca.issue_server()))  # found in the second dir
    assert not verifies(ctx, server_context(stranger.issue_server()))


def _paths(cafile: Path, capath: Path) -> ssl.DefaultVerifyPaths:
    return ssl.DefaultVerifyPaths(
        None, None, "SSL_CERT_FILE", str(cafile), "SSL_CERT_DIR", str(capath)
    )


def _store(tmp_path: Path, in_file: int, in_dir: int, extra_names=()) -> tuple[Path, Path]:
    cafile, capath = tmp_path / "bundle.pem", tmp_path / "hashed"
    capath.mkdir()
    cafile.write_bytes(b"".join(CA(name=f"c{i}").cert_pem for i in range(in_file)))
    for i in range(in_dir):
        (capath / f"{i:08x}.0").write_bytes(b"")
    for name in extra_names:
        (capath / name).write_bytes(b"")
    return cafile, capath


@pytest.mark.parametrize(
    ("in_file", "in_dir", "source"),
    [(2, 3, "capath"), (3, 3, "capath"), (0, 1, "capath"), (3, 2, "openssl"), (2, 0, "openssl")],
)
def test_decide_prefers_the_lazy_hashed_dir_when_it_is_complete(
    tmp_path: Path, in_file: int, in_dir: int, source: str
) -> None:
    cafile, capath = _store(tmp_path, in_file, in_dir)
    found = trust_mod._decide(None, None, _paths(cafile, capath))
    assert found.source == source
    if source == "capath":
        assert (found.cafile, found.capath) == (None, str(capath))
    else:
        assert (found.cafile, found.capath) == (str(cafile), str(capath))


def test_decide_counts_only_hashed_names(tmp_path: Path) -> None:
    # Three plausible but non-hashed names do not outweigh a two-certificate bundle.
    cafile, capath = _store(tmp_path, 2, 0, ["ca.pem", "README", "0123abcd.r0", "ABCDEF01.0"])
    assert trust_mod._decide(None, None, _paths(cafile, capath)).source == "openssl"


def test_decide_capath_when_the_bundle_file_is_missing(tmp_path: Path) -> None:
    _, capath = _store(tmp_path, 0, 0)
    (capath / "00000000.0").write_bytes(b"")
    found = trust_mod._decide(None, None, _paths(tmp_path / "missing.pem", capath))
    assert (found.source, found.cafile, found.capath) == ("capath", None, str(capath))


@pytest.mark.parametrize("layout", ["empty", "missing"])
def test_decide_falls_back_to_certifi_when_the_platform_store_is_empty(
    tmp_path: Path, layout: str
) -> None:
    if layout == "empty":
        cafile, capath = _store(tmp_path, 0, 0)
    else:
        cafile, capath = tmp_path / "no.pem", tmp_path / "no-dir"
    found = trust_mod._decide(None, None, _paths(cafile, capath))
    assert (found.source, found.cafile, found.capath) == ("certifi", certifi.where(), None)


def test_decide_environment_replaces_each_default_separately(tmp_path: Path) -> None:
    cafile, capath = _store(tmp_path, 1, 1)
    defaults = _paths(cafile, capath)
    assert trust_mod._decide("/env.pem", None, defaults) == trust_mod.SystemTrust(
        "/env.pem", str(capath), "environment"
    )
    assert trust_mod._decide(None, "/env-dir", defaults) == trust_mod.SystemTrust(
        str(cafile), "/env-dir", "environment"
    )


def test_decide_variables_restating_the_platform_store_stay_lazy(tmp_path: Path) -> None:
    # CI images often set SSL_CERT_FILE/SSL_CERT_DIR to the platform's own store: that must
    # not cost a full parse of the bundle per context, and must not change the trust.
    cafile, capath = _store(tmp_path, 2, 3)
    (tmp_path / "link.pem").symlink_to(cafile)
    (tmp_path / "link-dir").symlink_to(capath)
    defaults = _paths(cafile, capath)
    lazy = trust_mod.SystemTrust(None, str(capath), "capath")
    assert trust_mod._decide(str(tmp_path / "link.pem"), None, defaults) == lazy
    assert trust_mod._decide(None, str(tmp_path / "link-dir"), defaults) == lazy
    assert trust_mod._decide(str(cafile), str(capath), defaults) == lazy
    # A variable that names anything else is honoured as it is.
    other = tmp_path / "other.pem"
    other.write_bytes(CA(name="other").cert_pem)
    assert trust_mod._decide(str(other), str(capath), defaults) == trust_mod.SystemTrust(
        str(other), str(capath), "environment"
    )


def test_certifi_fallback_really_loads_certifi(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    empty = ssl.DefaultVerifyPaths(
        None, None, "SSL_CERT_FILE", str(tmp_path / "x.pem"), "SSL_CERT_DIR", str(tmp_path / "x")
    )
    monkeypatch.setattr(ssl, "get_default_verify_paths", lambda: empty)
    assert system_trust({}).source == "certifi"
    ctx = docker_context(system=True, environ={})
    # A bundle file is loaded eagerly, so its roots are countable (Mozilla's: > 100).
    assert ctx.cert_store_stats()["x509_ca"] > 50
    assert docker_context(system=False, environ={}).cert_store_stats()["x509_ca"] == 0


@pytest.mark.parametrize("problem", ["missing", "empty"])
def test_unusable_ssl_cert_file_is_ignored_like_openssl_and_go(
    tmp_path: Path, problem: str, sys_ca: CA, monkeypatch: pytest.MonkeyPatch, certs_d: CertsD
) -> None:
    hashed = tmp_path / "hashed"
    hashed.mkdir()
    pem_file(hashed / "root.pem", sys_ca)
    _rehash(hashed)
    bad = tmp_path / "bundle.pem"
    if problem == "empty":
        bad.write_bytes(b"")
    monkeypatch.setenv("SSL_CERT_FILE", str(bad))
    monkeypatch.setenv("SSL_CERT_DIR", str(hashed))
    # What Python's own default context does with the same environment: no error, and
    # the directory still works.
    stock = ssl.create_default_context()
    server = server_context(sys_ca.issue_server())
    assert verifies(stock, server)
    ctx = load_dir(certs_d.path / "absent").candidates()[0].context
    assert verifies(ctx, server)


# --------------------------------------------------------------------------- merge / replace


def _trusts(hc_dir: Path, trust: Optional[str], servers: Mapping[str, ssl.SSLContext], **kw):
    hc = load_dir(hc_dir, trust=trust, **kw)  # type: ignore[arg-type]
    ctx = hc.candidates()[0].context
    return {name for name, server in servers.items() if verifies(ctx, server)}


@pytest.mark.parametrize(
    ("crt", "trust", "expected"),
    [
        ("good", "merge", {"system", "dir"}),
        ("good", "replace", {"dir"}),
        ("none", "merge", {"system"}),
        ("none", "replace", {"system"}),
        ("garbage", "merge", {"system"}),
        ("garbage", "replace", set()),
    ],
)
def test_merge_and_replace(
    certs_d: CertsD,
    dir_ca: CA,
    system_env: dict[str, str],
    sys_server,
    dir_server,
    crt: str,
    trust: str,
    expected: set[str],
) -> None:
    hd = certs_d.host("reg:5000")
    if crt == "good":
        hd.ca(dir_ca)
    elif crt == "garbage":
        hd.file("ca.crt", b"not a certificate")
    servers = {"system": sys_server, "dir": dir_server}
    assert _trusts(hd.path, trust, servers) == expected


@pytest.mark.parametrize(
    ("platform", "expected"),
    [("linux", {"system", "dir"}), ("darwin", {"system", "dir"}), ("windows", {"dir"})],
)
def test_default_trust_follows_the_platform(
    certs_d: CertsD,
    dir_ca: CA,
    system_env: dict[str, str],
    sys_server,
    dir_server,
    platform: str,
    expected: set[str],
) -> None:
    hd = certs_d.host("reg:5000").ca(dir_ca)
    servers = {"system": sys_server, "dir": dir_server}
    assert _trusts(hd.path, None, servers, platform=platform) == expected
    assert load_dir(hd.path, platform=platform).trust == default_trust(platform)


def test_default_trust_values() -> None:
    assert default_trust("windows") == "replace"
    assert default_trust("linux") == "merge"
    assert default_trust("darwin") == "merge"
    with pytest.raises(ValueError):
        default_trust("beos")


def test_trust_must_be_merge_or_replace(certs_d: CertsD) -> None:
    with pytest.raises(ValueError, match="trust"):
        load_dir(certs_d.path / "x", trust="union")  # type: ignore[arg-type]


def test_replace_on_linux_is_selectable_from_load(
    certs_d: CertsD, dir_ca: CA, system_env: dict[str, str], sys_server, dir_server
) -> None:
    certs_d.host("reg:5000").ca(dir_ca)
    hc = dockercerts.load("reg:5000", root=certs_d.path, platform="linux", trust="replace")
    ctx = hc.candidates()[0].context
    assert verifies(ctx, dir_server)
    assert not verifies(ctx, sys_server)


def test_windows_reads_the_colonless_folder(
    certs_d: CertsD, dir_ca: CA, system_env: dict[str, str], dir_server
) -> None:
    certs_d.host("reg5000").ca(dir_ca)
    certs_d.host("reg:5000").file("ca.crt", b"garbage in the Linux-named folder")
    win = dockercerts.load("reg:5000", root=certs_d.path, platform="windows")
    assert win.directory == certs_d.path / "reg5000"
    assert (win.trust, len(win.ca_files)) == ("replace", 1)
    assert verifies(win.candidates()[0].context, dir_server)
    lin = dockercerts.load("reg:5000", root=certs_d.path, platform="linux")
    assert lin.directory == certs_d.path / "reg:5000"
    assert not verifies(lin.candidates()[0].context, dir_server)
