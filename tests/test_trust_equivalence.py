"""The lazy system trust decides exactly as a parsed bundle does (issue 6, context cost).

With ``SSL_CERT_FILE`` and ``SSL_CERT_DIR`` unset, :func:`dockercerts.trust.system_trust`
trusts the platform's hashed folder alone (``capath``: OpenSSL looks certificates up lazily)
when it holds at least as many certificates as the platform's bundle file, instead of parsing
the bundle for every context. That is only a speed-up if the trust is the same: these tests
build a small "platform" (a bundle file and a hashed folder with the same CAs), then run real
TLS handshakes (client and server ``ssl`` objects pumped through memory BIOs) against server
certificates from a trusted root, through a trusted intermediate, from an unknown CA, and for
the wrong host name, and require the same verdict from:

* ``ssl.create_default_context()`` with ``SSL_CERT_FILE`` naming the bundle;
* ``ssl.create_default_context()`` with ``SSL_CERT_DIR`` naming the hashed folder;
* ``dockercerts.docker_context(system=True)`` in ``capath`` mode (variables unset);
* ``dockercerts.docker_context(system=True)`` with the variables set (``environment`` mode).
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Callable, Optional

import pytest
from memtls import verdict

from dockercerts import docker_context
from dockercerts import trust as trust_mod
from dockercerts.testing import CA
from dockercerts.testing.pki import Leaf, load_cert_chain

HOST = "localhost"


@pytest.fixture(autouse=True)
def fresh_trust_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """Trust decisions are cached per environment: start every test without them."""
    monkeypatch.setattr(trust_mod, "_cache", {})
    monkeypatch.delenv("SSLKEYLOGFILE", raising=False)


def rehash(folder: Path) -> None:
    """Make ``folder`` an OpenSSL hashed certificate folder, or skip the test."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command-line tool is needed for 'openssl rehash'")
    done = subprocess.run([openssl, "rehash", str(folder)], capture_output=True, check=False)
    if done.returncode != 0 or not any(trust_mod._HASHED_NAME.match(n) for n in os.listdir(folder)):
        pytest.skip(f"'openssl rehash' did not hash {folder}: {done.stderr.decode().strip()}")


def handshake(client_ctx: ssl.SSLContext, leaf: Leaf) -> str:
    """``"ok"``, or why the client refused the server: a full TLS handshake over memory."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    load_cert_chain(server_ctx, leaf)
    return verdict(client_ctx, server_ctx, HOST)


class Platform:
    """A pretend platform store: ``bundle.pem`` and ``hashed/`` holding the same roots."""

    def __init__(self, base: Path, roots: list[CA]) -> None:
        self.bundle = base / "bundle.pem"
        self.bundle.write_bytes(b"".join(ca.cert_pem for ca in roots))
        self.hashed = base / "hashed"
        self.hashed.mkdir()
        for number, ca in enumerate(roots):
            ca.write(self.hashed / f"root-{number}.pem")
        rehash(self.hashed)
        self.empty_dir = base / "empty"
        self.empty_dir.mkdir()
        self.other_bundle = base / "other.pem"
        self.other_bundle.write_bytes(CA(name="some other root").cert_pem)

    def defaults(self) -> ssl.DefaultVerifyPaths:
        """What ``ssl.get_default_verify_paths()`` reports on this platform."""
        return ssl.DefaultVerifyPaths(
            None, None, "SSL_CERT_FILE", str(self.bundle), "SSL_CERT_DIR", str(self.hashed)
        )


@pytest.fixture(scope="module")
def trusted() -> CA:
    return CA(name="equivalence trusted root")


@pytest.fixture(scope="module")
def servers(trusted: CA) -> dict[str, Leaf]:
    """Server certificates whose verdicts must not depend on how the roots are loaded."""
    issuing = trusted.intermediate(name="equivalence issuing CA")
    return {
        "from the trusted root": trusted.issue_server(HOST),
        "through an intermediate": issuing.issue_server(HOST),
        "from an unknown CA": CA(name="equivalence stranger").issue_server(HOST),
        "for another host name": trusted.issue_server("elsewhere.test"),
    }


@pytest.fixture
def platform(tmp_path: Path, trusted: CA, monkeypatch: pytest.MonkeyPatch) -> Platform:
    store = Platform(tmp_path, [trusted, CA(name="equivalence second root")])
    monkeypatch.setattr(ssl, "get_default_verify_paths", store.defaults)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    return store


def verdicts(make: Callable[[], ssl.SSLContext], servers: dict[str, Leaf]) -> dict[str, str]:
    return {name: handshake(make(), leaf) for name, leaf in servers.items()}


def with_env(
    monkeypatch: pytest.MonkeyPatch, cafile: Optional[Path], capath: Optional[Path]
) -> None:
    for name, value in (("SSL_CERT_FILE", cafile), ("SSL_CERT_DIR", capath)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, str(value))


def test_lazy_capath_trusts_exactly_what_the_bundle_trusts(
    platform: Platform, servers: dict[str, Leaf], monkeypatch: pytest.MonkeyPatch
) -> None:
    found = trust_mod.system_trust()
    assert (found.source, found.cafile, found.capath) == ("capath", None, str(platform.hashed))
    lazy = verdicts(lambda: docker_context(system=True), servers)

    # The references: Python's own default context, reading one store at a time.
    with_env(monkeypatch, platform.bundle, platform.empty_dir)
    from_bundle = verdicts(ssl.create_default_context, servers)
    with_env(monkeypatch, platform.other_bundle, platform.hashed)
    from_folder = verdicts(ssl.create_default_context, servers)

    assert lazy == from_bundle == from_folder
    # Not vacuous: the trusted ones verify and the others are refused, each for its reason.
    assert lazy["from the trusted root"] == lazy["through an intermediate"] == "ok"
    assert lazy["from an unknown CA"].startswith("refused: unable to get local issuer")
    assert lazy["for another host name"].startswith("refused: Hostname mismatch")


def test_environment_variables_give_the_same_verdicts(
    platform: Platform, servers: dict[str, Leaf], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    lazy = verdicts(lambda: docker_context(system=True), servers)
    # A copy of the bundle named by SSL_CERT_FILE: honoured as named (parsed in full).
    copy = tmp_path / "copy-of-bundle.pem"
    copy.write_bytes(platform.bundle.read_bytes())
    with_env(monkeypatch, copy, platform.empty_dir)
    found = trust_mod.system_trust()
    assert (found.source, found.cafile) == ("environment", str(copy))
    named = verdicts(lambda: docker_context(system=True), servers)
    assert named == verdicts(ssl.create_default_context, servers) == lazy
    # The variables naming the platform's own store: whichever way it is loaded, same verdicts.
    with_env(monkeypatch, platform.bundle, platform.hashed)
    own = verdicts(lambda: docker_context(system=True), servers)
    assert own == verdicts(ssl.create_default_context, servers) == lazy


def test_a_variable_naming_other_roots_is_honoured(
    platform: Platform, servers: dict[str, Leaf], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lazy mode never hides ``SSL_CERT_FILE``: other roots mean other verdicts."""
    with_env(monkeypatch, platform.other_bundle, platform.empty_dir)
    named = verdicts(lambda: docker_context(system=True), servers)
    assert named == verdicts(ssl.create_default_context, servers)
    assert named["from the trusted root"].startswith("refused: unable to get local issuer")


# --- the decision itself, on a fake platform (no openssl tool needed) -----------------------


def fake_store(base: Path, in_bundle: int, in_folder: int) -> ssl.DefaultVerifyPaths:
    """A bundle with ``in_bundle`` certificates and a folder with ``in_folder`` hashed names."""
    roots = [CA(name=f"fake root {n}") for n in range(max(in_bundle, 1))]
    bundle = base / "bundle.pem"
    bundle.write_bytes(b"".join(ca.cert_pem for ca in roots[:in_bundle]))
    folder = base / "hashed"
    folder.mkdir()
    for number in range(in_folder):
        (folder / f"{number:08x}.0").write_bytes(roots[number % len(roots)].cert_pem)
    (folder / "README").write_text("not a hashed name: not counted")
    return ssl.DefaultVerifyPaths(
        None, None, "SSL_CERT_FILE", str(bundle), "SSL_CERT_DIR", str(folder)
    )


@pytest.mark.parametrize(
    ("in_bundle", "in_folder", "source"),
    [
        (3, 3, "capath"),  # as many: the folder alone, lazily
        (3, 5, "capath"),  # more in the folder
        (3, 2, "openssl"),  # fewer: the folder may miss some, parse the bundle too
        (3, 0, "openssl"),
        (0, 0, "certifi"),  # no store at all
    ],
)
def test_capath_is_chosen_only_when_the_folder_holds_at_least_the_bundle(
    tmp_path: Path, in_bundle: int, in_folder: int, source: str
) -> None:
    defaults = fake_store(tmp_path, in_bundle, in_folder)
    found = trust_mod._decide(None, None, defaults)
    assert found.source == source
    if source == "capath":
        assert (found.cafile, found.capath) == (None, defaults.openssl_capath)
    elif source == "openssl":
        assert found.cafile == defaults.openssl_cafile


def test_variables_always_win_over_the_count(tmp_path: Path) -> None:
    defaults = fake_store(tmp_path, 3, 5)
    named = str(tmp_path / "mine.pem")
    found = trust_mod._decide(named, None, defaults)
    assert (found.source, found.cafile, found.capath) == (
        "environment",
        named,
        defaults.openssl_capath,
    )


def test_system_trust_uses_the_decision_and_caches_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    defaults = fake_store(tmp_path, 2, 2)
    monkeypatch.setattr(ssl, "get_default_verify_paths", lambda: defaults)
    first = trust_mod.system_trust({})
    assert first.source == "capath"
    assert trust_mod.system_trust({}) is first
