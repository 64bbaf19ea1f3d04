"""Secrets: no private key bytes, password or full PEM ever leaves dockercerts in text.

The material: client keys written plain and encrypted (PKCS#8 and legacy ``DEK-Info``),
passwords, and every broken shape a key can take in a host directory (mismatched pair,
swapped files, encrypted without or with a wrong password, a key saved as ``.cert``,
``.crt``, ``.pem``, an orphan ``.key``, a truncated key). The needles searched for: each
key's whole PEM, its base64 body, several 16-character slices of that body, its DER in hex,
and the passwords (also their UTF-8 bytes' ``repr``).

Searched in: every exception message raised by the loader and the transport (the whole
``__cause__``/``__context__`` chain, ``str``, ``repr``, ``args`` and attributes); every log
record at every level (message, arguments, formatted traceback) while the loader and the
transport run, rejections included; ``repr()``/``str()`` of the public objects; the CLI's
``inspect`` and ``probe`` output (stdout and stderr, text, JSON and ``--debug``).

Also here, issue 7's point 6: a key readable by group or others loads (Docker allows it)
but carries the ``key-readable-by-others`` warning, which ``inspect`` shows.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import logging
import os
import re
import traceback
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Callable, Optional

import anyio
import httpx
import pytest
from cryptography.hazmat.primitives import serialization

import dockercerts
from dockercerts import (
    DOCKER,
    DOCKER_LEGACY,
    TLS_ONLY,
    CertsDirError,
    ClientCertificateRejected,
    load_dir,
)
from dockercerts.testing import CA, CertsD, Leaf

pytestmark = pytest.mark.reliability

PASSWORD = "Tr0ub4dor&3-correct-horse"
WRONG_PASSWORD = "battery-staple-wrong-one"
HAS_CLI = importlib.util.find_spec("dockercerts.cli") is not None
NO_CLI = "dockercerts/cli does not exist yet"


# --------------------------------------------------------------------------- needles


def pem_body(pem: bytes) -> str:
    lines = pem.decode("ascii").strip().splitlines()
    return "".join(line for line in lines if not line.startswith("-----") and ":" not in line)


WINDOW = 16


def windows(text: str, size: int = WINDOW) -> set[str]:
    return {text[i : i + size] for i in range(len(text) - size + 1)}


class Secrets:
    """Every secret of the test's material, and a search over text for any of them.

    A leak is any 16-character slice of a private key's base64 body (every offset, not only
    a few, in every encoding the test writes: PKCS#8, traditional, encrypted, legacy
    encrypted), a 32-character slice of the key's DER in hex, or a password. Slices shared by
    two different keys (ASN.1 structure, not secret) or found in a certificate are dropped.
    """

    def __init__(self) -> None:
        self.passwords: set[str] = set()
        for password in (PASSWORD, WRONG_PASSWORD):
            self.passwords |= {password, repr(password.encode()), password.encode().hex()}
        self._by_key: dict[str, set[str]] = {}
        self._public: set[str] = set()
        self.slices: set[str] = set()

    def add_leaf(self, leaf: Leaf) -> None:
        """A key in its deterministic encodings: PKCS#8, traditional, and DER in hex."""
        der = leaf._key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        self.add_pem(leaf.key_pem())
        self.add_pem(leaf._key.private_bytes(*_TRADITIONAL))
        self._by_key[der.hex()] = windows(der.hex(), 2 * WINDOW)
        self._public |= windows(pem_body(leaf.cert_pem)) | windows(pem_body(leaf.issuer.cert_pem))
        self._rebuild()

    def add_pem(self, pem: bytes) -> None:
        for block in re.findall(rb"-----BEGIN [A-Z ]+-----.*?-----END [A-Z ]+-----", pem, re.S):
            body = pem_body(block)
            self._by_key[body] = windows(body)
        self._rebuild()

    def add_tree(self, root: Path) -> None:
        """Every key block written under ``root``: encrypted PEMs differ on every write (a
        fresh salt), so the needles come from the files themselves."""
        for path in sorted(root.rglob("*")):
            try:
                data = path.read_bytes()
            except OSError:
                continue  # folders, dangling links
            if b"PRIVATE KEY-----" in data:
                self.add_pem(data)

    def _rebuild(self) -> None:
        counts: dict[str, int] = {}
        for found in self._by_key.values():
            for piece in found:
                counts[piece] = counts.get(piece, 0) + 1
        self.slices = {p for p, n in counts.items() if n == 1 and p not in self._public}

    def leaks(self, text: str) -> list[str]:
        found = sorted(p for p in self.passwords if p in text)
        pieces = windows(text) | windows(text, 2 * WINDOW)
        return found + sorted(pieces & self.slices)

    def assert_clean(self, text: str, where: str) -> None:
        leaked = self.leaks(text)
        assert not leaked, f"{where} leaks {len(leaked)} secret fragment(s): {leaked[:3]}"
        assert "PRIVATE KEY-----" not in text, f"{where} contains a PEM private key header"


_TRADITIONAL = (
    serialization.Encoding.PEM,
    serialization.PrivateFormat.TraditionalOpenSSL,
    serialization.NoEncryption(),
)


def legacy_encrypted(leaf: Leaf) -> bytes:
    """The key as legacy OpenSSL PEM with Proc-Type/DEK-Info headers."""
    return leaf._key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.BestAvailableEncryption(PASSWORD.encode()),
    )


def exception_texts(exc: BaseException) -> Iterator[str]:
    """Everything an exception shows, along its whole chain."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield str(current)
        yield repr(current)
        yield from (repr(arg) for arg in current.args)
        for value in vars(current).values():
            yield str(value)
            yield repr(value)
        yield "".join(traceback.format_exception_only(type(current), current))
        for nxt in (current.__cause__, current.__context__):
            if nxt is not None:
                todo.append(nxt)
    yield "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def record_texts(records: Iterable[logging.LogRecord]) -> Iterator[str]:
    formatter = logging.Formatter("%(levelname)s %(name)s %(message)s")
    for record in records:
        yield formatter.format(record)
        yield repr(record.args)
        yield repr(record.msg)
        if record.exc_info and record.exc_info[1] is not None:
            yield from exception_texts(record.exc_info[1])


# --------------------------------------------------------------------------- material


@pytest.fixture(scope="module")
def material(mtls_ca: CA) -> dict[str, Any]:
    stranger = CA(name="a CA no server knows")
    leaves = {
        "good": mtls_ca.issue_client("good"),
        "other": mtls_ca.issue_client("other"),
        "wrong": stranger.issue_client("wrong"),
    }
    secrets = Secrets()
    for leaf in leaves.values():
        secrets.add_leaf(leaf)
    return {"leaves": leaves, "secrets": secrets, "stranger": stranger}


BrokenMaker = Callable[[Any, dict[str, Leaf]], None]

BROKEN: dict[str, BrokenMaker] = {
    "mismatched-pair": lambda d, k: d.cert_only("x", k["good"]).key_only("x", k["other"]),
    "swapped-files": lambda d, k: d.file("x.cert", k["good"].key_pem()).file(
        "x.key", k["good"].cert_pem
    ),
    "encrypted-without-password": lambda d, k: d.pair("x", k["good"], password=PASSWORD.encode()),
    "legacy-encrypted": lambda d, k: d.cert_only("x", k["good"]).file(
        "x.key", legacy_encrypted(k["good"])
    ),
    "key-as-cert": lambda d, k: d.file("x.cert", k["good"].key_pem()),
    "key-and-cert-in-cert": lambda d, k: d.file(
        "x.cert", k["good"].key_pem() + k["good"].cert_pem
    ).file("x.key", k["other"].key_pem()),
    "orphan-key": lambda d, k: d.key_only("tls", k["good"]),
    "truncated-key": lambda d, k: d.cert_only("x", k["good"]).file(
        "x.key", k["good"].key_pem()[:150] + b"\n-----END PRIVATE KEY-----\n"
    ),
    "corrupted-key-body": lambda d, k: d.cert_only("x", k["good"]).file(
        "x.key", k["good"].key_pem().replace(b"A", b"B", 5)
    ),
    "traditional-key-mismatch": lambda d, k: d.cert_only("x", k["good"]).file(
        "x.key", k["other"]._key.private_bytes(*_TRADITIONAL)
    ),
}

# Shapes that load (with a warning at most) yet hold key material in odd places.
QUIET: dict[str, BrokenMaker] = {
    "key-saved-as-crt": lambda d, k: d.file("ca.crt", k["good"].key_pem()),
    "key-saved-as-pem": lambda d, k: d.file("tls.pem", k["good"].key_pem()),
    "key-saved-as-KEY": lambda d, k: d.file("tls.KEY", k["good"].key_pem()),
}


def build(root: Path, name: str, maker: BrokenMaker, leaves: dict[str, Leaf]) -> Path:
    directory = CertsD(root).host(name)
    maker(directory, leaves)
    return directory.path


# --------------------------------------------------------------------------- exceptions


@pytest.mark.parametrize("case", sorted(BROKEN))
@pytest.mark.parametrize("password", [None, WRONG_PASSWORD, PASSWORD])
def test_loader_errors_hold_no_secret(
    case: str, password: Optional[str], material: dict[str, Any], tmp_path: Path
) -> None:
    secrets: Secrets = material["secrets"]
    path = build(tmp_path, "reg:5000", BROKEN[case], material["leaves"])
    secrets.add_tree(tmp_path)
    try:
        certs = load_dir(path, password=password)
    except CertsDirError as exc:
        for text in exception_texts(exc):
            secrets.assert_clean(text, f"{case}: {type(exc).__name__}")
        return
    # Only the encrypted cases load, and only with the right password.
    assert password == PASSWORD, case
    assert case in ("encrypted-without-password", "legacy-encrypted")
    for candidate in certs.candidates():
        assert candidate.context is not None
    secrets.assert_clean(repr(certs), "HostCerts")


@pytest.mark.parametrize("case", sorted(QUIET))
def test_odd_places_load_quietly(case: str, material: dict[str, Any], tmp_path: Path) -> None:
    secrets: Secrets = material["secrets"]
    path = build(tmp_path, "reg:5000", QUIET[case], material["leaves"])
    secrets.add_tree(tmp_path)
    certs = load_dir(path)
    assert certs.pairs == ()
    for text in (repr(certs), str(certs), *(str(w) for w in certs.warnings)):
        secrets.assert_clean(text, case)


# --------------------------------------------------------------------------- logs


def test_logs_at_every_level_hold_no_secret(
    material: dict[str, Any],
    certs_d: CertsD,
    mtls_server: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secrets: Secrets = material["secrets"]
    leaves: dict[str, Leaf] = material["leaves"]
    caplog.set_level(logging.DEBUG)  # the root logger: every logger, every level

    # A TLS-rejecting registry: the stranger's certificate sorts first and is rejected, the
    # encrypted good one is unlocked with the password and accepted.
    tls = mtls_server(reject="tls")
    certs_d.host(tls.host).ca(tls.server_ca).pair("a-wrong", leaves["wrong"]).pair(
        "b-good", leaves["good"], password=PASSWORD.encode()
    )
    # An nginx-like registry: 400 pages for the wrong one, the same encrypted key after it.
    http = mtls_server(reject="http", handshake_cas=[material["stranger"]])
    certs_d.host(http.host).ca(http.server_ca).pair("a-wrong", leaves["wrong"]).pair(
        "b-good", leaves["good"], password=PASSWORD.encode()
    )
    # A registry that accepts nothing: every candidate is rejected.
    none = mtls_server(reject="tls", client_ca=CA(name="nobody's CA"))
    certs_d.host(none.host).ca(none.server_ca).pair("a-wrong", leaves["wrong"]).pair(
        "b-other", leaves["other"]
    )
    # A broken folder, then a folder that breaks after a good load.
    broken = certs_d.host("broken.invalid:5000")
    BROKEN["mismatched-pair"](broken, leaves)

    errors: list[BaseException] = []
    transport = dockercerts.Transport(root=certs_d.root, password=PASSWORD, refresh=0)
    with httpx.Client(transport=transport, timeout=10) as client:
        assert client.get(tls.url + "/v2/").status_code == 200
        assert client.get(http.url + "/v2/").status_code == 200
        with pytest.raises(ClientCertificateRejected) as rejected:
            client.get(none.url + "/v2/")
        errors.append(rejected.value)
        with pytest.raises(CertsDirError) as refused:
            client.get("https://broken.invalid:5000/v2/")
        errors.append(refused.value)
        # Break the TLS host's folder after its good load: the transport logs a warning.
        (certs_d.host(tls.host).path / "b-good.key").write_bytes(leaves["other"].key_pem())
        assert client.get(tls.url + "/v2/").status_code == 200

    async def run_async() -> None:
        transport = dockercerts.AsyncTransport(
            root=certs_d.root, password=lambda path: PASSWORD, refresh=0
        )
        async with httpx.AsyncClient(transport=transport, timeout=10) as client:
            assert (await client.get(http.url + "/v2/")).status_code == 200
            try:
                await client.get(none.url + "/v2/")
            except httpx.TransportError as exc:
                errors.append(exc)

    anyio.run(run_async)
    # The loader on its own, for every broken shape, with and without the password.
    for case, maker in sorted(BROKEN.items()):
        path = build(certs_d.root, f"{case}.invalid", maker, leaves)
        for password in (None, PASSWORD):
            try:
                load_dir(path, password=password)
            except CertsDirError as exc:
                errors.append(exc)

    secrets.add_tree(certs_d.root)  # the encrypted keys as written (a fresh salt each time)
    levels = {r.levelno for r in caplog.records}
    assert {logging.DEBUG, logging.INFO, logging.WARNING} <= levels, levels
    assert any("rejected" in r.getMessage() for r in caplog.records)
    for text in record_texts(caplog.records):
        secrets.assert_clean(text, "a log record")
    assert len(errors) >= len(BROKEN)
    for error in errors:
        for text in exception_texts(error):
            secrets.assert_clean(text, f"{type(error).__name__}")


def test_log_records_keep_no_exception_alive(
    material: dict[str, Any],
    certs_d: CertsD,
    mtls_server: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The 'changed and is now broken' warning must carry text, not the exception object.

    Handlers that keep records (pytest's caplog, QueueHandler, MemoryHandler, error trackers)
    keep ``record.args``; an exception there keeps ``__traceback__``, whose frames hold
    ``scan.check_pair``'s ``key_data`` (the private key's bytes) and, through
    ``_HostState.refresh``, the client with its pools and SSL contexts, after ``close()``.
    The soak test saw it as leaked transports until it stopped propagating records.
    """
    leaves: dict[str, Leaf] = material["leaves"]
    caplog.set_level(logging.DEBUG, logger="dockercerts")
    srv = mtls_server(reject="tls")
    host = certs_d.host(srv.host).ca(srv.server_ca).pair("client", leaves["good"])
    with httpx.Client(transport=dockercerts.Transport(root=certs_d.root, refresh=0)) as client:
        assert client.get(srv.url + "/v2/").status_code == 200
        (host / "client.key").write_bytes(leaves["other"].key_pem())  # now a mismatch
        assert client.get(srv.url + "/v2/").status_code == 200  # the last good load goes on
    broken = [r for r in caplog.records if "broken" in r.getMessage()]
    assert len(broken) == 1
    held = [a for r in caplog.records for a in (r.args or ()) if isinstance(a, BaseException)]
    assert held == [], [type(a).__name__ for a in held]


# --------------------------------------------------------------------------- repr / str


def test_public_objects_show_no_secret(
    material: dict[str, Any], certs_d: CertsD, tmp_path: Path
) -> None:
    secrets: Secrets = material["secrets"]
    leaves: dict[str, Leaf] = material["leaves"]
    host = certs_d.host("reg:5000").ca(leaves["good"].issuer)
    host.pair("enc", leaves["good"], password=PASSWORD.encode()).pair("plain", leaves["other"])
    host.file("tls.pem", leaves["wrong"].key_pem())  # an ignored-name warning
    os.chmod(host / "plain.key", 0o644)  # a key-readable-by-others warning

    secrets.add_tree(certs_d.root)
    certs = dockercerts.load("reg:5000", root=certs_d.root, password=PASSWORD)
    candidates = certs.candidates()
    assert [c.name for c in candidates] == ["enc", "plain"]
    for candidate in candidates:
        assert candidate.context is not None  # built: the password has been used
    objects: list[Any] = [
        certs,
        *candidates,
        *certs.pairs,
        *certs.warnings,
        dockercerts.Transport(root=certs_d.root, password=PASSWORD),
        dockercerts.Transport(root=certs_d.root, password=lambda path: PASSWORD),
        dockercerts.AsyncTransport(root=certs_d.root, password=PASSWORD.encode()),
        DOCKER,
        DOCKER_LEGACY,
        TLS_ONLY,
        dockercerts.RejectionPolicy.preset("docker"),
        dockercerts.Attempt("enc", "TLS alert unknown_ca"),
        *leaves.values(),
        leaves["good"].issuer,
        material["stranger"],
    ]
    assert len(certs.warnings) >= 2
    for obj in objects:
        for text in (repr(obj), str(obj), format(obj)):
            secrets.assert_clean(text, f"{type(obj).__name__}")


# --------------------------------------------------------------------------- CLI


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    from dockercerts import cli

    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out + "\n" + captured.err


@pytest.mark.skipif(not HAS_CLI, reason=NO_CLI)
def test_cli_inspect_and_probe_show_no_secret(
    material: dict[str, Any],
    certs_d: CertsD,
    mtls_server: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    secrets: Secrets = material["secrets"]
    leaves: dict[str, Leaf] = material["leaves"]
    outputs: list[tuple[str, int, str]] = []
    root = str(certs_d.root)
    for case, maker in sorted({**BROKEN, **QUIET}.items()):
        host = f"{case}.invalid:5000"
        build(certs_d.root, host, maker, leaves)
        for extra in ([], ["--json"], ["--debug"]):
            code, text = run_cli(capsys, "inspect", host, "--root", root, *extra)
            outputs.append((f"inspect {case} {extra}", code, text))

    srv = mtls_server(reject="tls")
    certs_d.host(srv.host).ca(srv.server_ca).pair("a-wrong", leaves["wrong"]).pair(
        "b-good", leaves["good"]
    )
    certs_d.host("enc.invalid:5000").pair("enc", leaves["other"], password=PASSWORD.encode())
    for extra in ([], ["--json"], ["--debug"]):
        code, text = run_cli(capsys, "probe", srv.url + "/v2/", "--root", root, *extra)
        outputs.append((f"probe {extra}", code, text))
        code, text = run_cli(capsys, "inspect", "enc.invalid:5000", "--root", root, *extra)
        outputs.append((f"inspect encrypted {extra}", code, text))

    secrets.add_tree(certs_d.root)
    assert any(code == 2 for _, code, _ in outputs)  # Docker would refuse the broken ones
    assert any("rejected" in text for where, _, text in outputs if where.startswith("probe"))
    for where, _code, text in outputs:
        secrets.assert_clean(text, f"dockercerts {where}")


# --------------------------------------------------------------------------- permissions


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
@pytest.mark.parametrize(
    ("mode", "warned"),
    [(0o600, False), (0o400, False), (0o640, True), (0o644, True), (0o604, True), (0o660, True)],
)
def test_key_readable_by_others_loads_with_a_warning(
    mode: int, warned: bool, mtls_ca: CA, certs_d: CertsD
) -> None:
    host = certs_d.host("reg:5000").pair("client", mtls_ca.issue_client("client"))
    os.chmod(host / "client.key", mode)
    certs = load_dir(host.path)  # Docker reads it whatever its mode
    assert [p.name for p in certs.pairs] == ["client"]
    found = [w for w in certs.warnings if w.code == "key-readable-by-others"]
    if not warned:
        assert found == []
        return
    assert len(found) == 1
    assert found[0].path == host / "client.key"
    assert f"{mode:o}" in found[0].message
    assert "chmod 600" in found[0].fix


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_key_readable_by_others_through_a_kubernetes_link(mtls_ca: CA, certs_d: CertsD) -> None:
    leaf = mtls_ca.issue_client("k8s")
    host = certs_d.host("reg:5000").kubernetes(
        {"client.cert": leaf.cert_pem, "client.key": leaf.key_pem()}
    )
    target = host.path / os.readlink(host / "..data") / "client.key"
    os.chmod(target, 0o644)  # the link itself is 0777; the file it points to is what counts
    certs = load_dir(host.path)
    assert [w.code for w in certs.warnings] == ["key-readable-by-others"]
    os.chmod(target, 0o600)
    assert load_dir(host.path).warnings == ()


@pytest.mark.skipif(not HAS_CLI, reason=NO_CLI)
@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_cli_inspect_warns_about_a_readable_key(
    mtls_ca: CA, certs_d: CertsD, capsys: pytest.CaptureFixture[str]
) -> None:
    host = certs_d.host("reg.example.com:5000").ca(mtls_ca)
    host.pair("client", mtls_ca.issue_client("client"))
    os.chmod(host / "client.key", 0o644)
    code, text = run_cli(capsys, "inspect", "reg.example.com:5000", "--root", str(certs_d.root))
    assert code == 1, text
    assert "key-readable-by-others" in text
    assert re.search(r"chmod 600 client\.key", text), text
    from dockercerts import cli

    code = cli.main(["inspect", "reg.example.com:5000", "--root", str(certs_d.root), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == report["exit_code"] == 1
    codes = [(w["code"], Path(w["path"]).name) for w in report["warnings"]]
    assert ("key-readable-by-others", "client.key") in codes
    os.chmod(host / "client.key", 0o600)
    code, text = run_cli(capsys, "inspect", "reg.example.com:5000", "--root", str(certs_d.root))
    assert code == 0, text
    assert "key-readable-by-others" not in text


def test_the_search_finds_what_it_must(tmp_path: Path) -> None:
    # The needles are only as good as the body extraction and the slicing: check both.
    leaf = CA(name="needle check").issue_client("n")
    body = pem_body(leaf.key_pem())
    assert base64.b64decode(body) == leaf._key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    host = CertsD(tmp_path).host("reg:5000").pair("enc", leaf, password=PASSWORD.encode())
    secrets = Secrets()
    secrets.add_leaf(leaf)
    secrets.add_leaf(CA(name="another").issue_client("m"))
    secrets.add_tree(tmp_path)
    assert secrets.leaks(f"oops {body[-24:]} leaked")
    encrypted = pem_body((host / "enc.key").read_bytes())
    assert secrets.leaks(f"key={encrypted[-40:-10]}")
    assert secrets.leaks(f"password {PASSWORD!r}") == [PASSWORD]
    assert secrets.leaks(repr(leaf)) == []
    assert secrets.leaks(leaf.cert_pem.decode()) == []
