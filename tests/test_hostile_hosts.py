"""Hostile host names: no input may make dockercerts read anything outside the certs.d root.

The root sits four levels deep in a temporary folder (``T/l1/l2/l3/certs.d``). Every folder a
traversal could reach (``T``, ``l1``, ``l2``, ``l3``, ``l3/x``, ``l3/etc``, an absolute
``T/abs``) holds a broken ``sentinel.cert`` without its key: loading it would raise
``MissingKeyError``. On top of that, a Python audit hook records every ``open`` and directory
listing made while a call runs, and the test fails if one of them lands in ``T`` outside the
root, or lists a folder that is neither under the root nor a system trust store.

Each name goes through ``host_dir``, ``load`` (Linux and Windows rules), ``registry_host``
(as an image reference and as a URL) and the transport (``Transport`` with an ``httpx`` URL
built from the name, where httpx accepts it). Name resolution is stubbed out while the
transport runs, so nothing leaves the machine: a request either fails with
``InvalidHostError`` before any file is touched, or loads a folder under the root and then
fails to resolve the name.
"""

from __future__ import annotations

import os
import socket
import ssl
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import certifi
import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dockercerts import (
    CertsDirError,
    CertsDirTransportError,
    InvalidHostError,
    MissingKeyError,
    Transport,
    host_dir,
    load,
    load_dir,
    registry_host,
)
from dockercerts.testing import CA, CertsD

pytestmark = pytest.mark.reliability

SOAK = os.environ.get("DOCKERCERTS_SOAK", "") not in ("", "0")
EXAMPLES = 5_000 if SOAK else 500

BROKEN_CERT = "sentinel.cert"  # no sentinel.key beside it: reading the folder fails loudly

HOSTILE = [
    # traversal
    "..",
    ".",
    "...",
    "../x",
    "../../..",
    "a/../../etc",
    "reg:5000/../..",
    "..:5000",
    "reg/..",
    # absolute paths (the sentinel's own path is added by the fixture)
    "/etc",
    "/etc/passwd",
    "/",
    "//server/share",
    "C:\\Windows",
    "\\etc",
    # backslashes
    "..\\x",
    "reg\\..\\..\\etc",
    "reg:5000\\..",
    # percent-encodings
    "%2e%2e",
    "%2e%2e%2fetc",
    "%2F",
    "a%2Fb",
    "..%2f..%2fetc",
    "%00",
    "%252e%252e",
    # NUL and control characters
    "\x00",
    "reg\x00.io",
    "reg.io\x00/../..",
    "reg\n..",
    "reg\r\n",
    "reg\t",
    " reg",
    "reg ",
    # very long names
    "a" * 256,
    "a." * 130 + "a",
    "a" * 63 + ("." + "b" * 63) * 3 + ":5000",
    "." * 300,
    # Unicode look-alikes
    "．．",  # fullwidth full stop  # noqa: RUF001
    "．．／etc",  # fullwidth solidus  # noqa: RUF001
    "reg∕..∕etc",  # division slash  # noqa: RUF001
    "reg⁄x",  # fraction slash  # noqa: RUF001
    "reg。io",  # ideographic full stop (IDNA maps it to '.')
    "ｒｅｇ",  # noqa: RUF001
    "rég.example",
    "‥",  # two-dot leader
    "reg\u200b.io",
    # ports and colons
    "host:port:extra",
    "reg:5000:6000",
    "reg:",
    ":5000",
    "reg:-1",
    "reg:0",
    "reg:99999",
    "reg:5000a",
    "reg:+5000",
    "reg: 5000",
    "reg:٥٠٠٠",  # Arabic-Indic digits  # noqa: RUF001
    # IPv6 without or with broken brackets
    "::1",
    "::1:5000",
    "fe80::1",
    "[::1",
    "::1]",
    "[::1]]",
    "[[::1]]",
    "[::1]:",
    "[::1]x",
    "[::1]:5000:6000",
    "[]",
    "[..]",
    "[::1/../..]",
    # other
    "",
    "~",
    "~root",
    "$HOME",
    "reg.io@evil",
    "user:pw@reg",
    "reg?x",
    "reg#x",
    "*",
    "reg..io",
    ".reg",
    "reg.",
]

# What a well-behaved call may list outside the root: the system trust folders, and the
# import system's folders (httpx and httpcore import modules lazily).
_ALLOWED_LISTINGS = {
    os.path.realpath(p)
    for p in (
        ssl.get_default_verify_paths().openssl_capath,
        ssl.get_default_verify_paths().capath or "",
        os.path.dirname(certifi.where()),
    )
    if p
}
_IMPORT_PREFIXES = tuple(
    {
        os.path.realpath(p) + os.sep
        for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, *sys.path)
        if p and os.path.isdir(p) and os.path.realpath(p) != os.sep
    }
)


# --------------------------------------------------------------------------- the guard


class _Recorder:
    """Paths opened or listed while ``recording`` is set (audit hooks cannot be removed)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active = False
        self.events: list[tuple[str, str]] = []

    def hook(self, event: str, args: tuple[Any, ...]) -> None:
        if not self.active or event not in ("open", "os.listdir", "os.scandir"):
            return
        path = args[0] if args else None
        if path is None or isinstance(path, int):
            return  # listdir() of the cwd, or an fd: neither is named by a host
        try:
            text = os.fsdecode(path)
        except TypeError:
            return
        with self.lock:
            self.events.append((event, text))


RECORDER = _Recorder()
sys.addaudithook(RECORDER.hook)


class Tree:
    def __init__(self, base: Path) -> None:
        self.base = base.resolve()
        self.root = self.base / "l1" / "l2" / "l3" / "certs.d"
        self.sentinels = [
            self.base,
            self.base / "l1",
            self.base / "l1" / "l2",
            self.base / "l1" / "l2" / "l3",
            self.base / "l1" / "l2" / "l3" / "x",
            self.base / "l1" / "l2" / "l3" / "etc",
            self.base / "abs",
            self.base / "abs" / "reg:5000",
        ]
        ca = CA(name="hostile CA")
        leaf = ca.issue_client("sentinel")
        for folder in self.sentinels:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / BROKEN_CERT).write_bytes(leaf.cert_pem)
        # A normal tree under the root, so that valid names load something real.
        certs = CertsD(self.root)
        certs.host("reg:5000").ca(ca).pair("client", ca.issue_client("client"))
        certs.host("reg5000").ca(ca)  # the Windows spelling of reg:5000
        certs.host("localhost").ca(ca)

    def check(self, events: list[tuple[str, str]]) -> None:
        root = os.path.realpath(self.root)
        for event, path in events:
            real = os.path.realpath(path)
            under_root = real == root or real.startswith(root + os.sep)
            in_base = real == str(self.base) or real.startswith(str(self.base) + os.sep)
            assert under_root or not in_base, f"{event} {path!r} is outside the root {root}"
            if event != "open" and not under_root:
                assert not in_base, f"{event} {path!r}"
                allowed = real in _ALLOWED_LISTINGS or (real + os.sep).startswith(_IMPORT_PREFIXES)
                assert allowed, f"{event} {path!r}"


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Tree:
    return Tree(tmp_path_factory.mktemp("hostile"))


@pytest.fixture
def guard(tree: Tree) -> Iterator[list[tuple[str, str]]]:
    """Record every file access during the test, and check them at the end."""
    with RECORDER.lock:
        RECORDER.events = []
    RECORDER.active = True
    try:
        yield RECORDER.events
    finally:
        RECORDER.active = False
    tree.check(list(RECORDER.events))


def names(tree: Tree) -> list[str]:
    absolute = str(tree.base / "abs")
    return [*HOSTILE, absolute, absolute + "/reg:5000", "../../../../" + absolute]


def assert_under_root(path: Path, tree: Tree) -> None:
    assert path.parent == tree.root, path
    assert path.name not in ("", ".", ".."), path
    assert not {"/", "\\", "\0"} & set(path.name), path


# --------------------------------------------------------------------------- host_dir and load


@pytest.mark.parametrize("platform", ["linux", "windows"])
def test_host_dir_never_leaves_the_root(tree: Tree, platform: str, guard: list[Any]) -> None:
    accepted = []
    for host in names(tree):
        try:
            path = host_dir(host, root=tree.root, platform=platform)
        except InvalidHostError:
            continue
        assert_under_root(path, tree)
        accepted.append(host)
    assert guard == []  # pure: not one file touched
    assert accepted == []  # every traversal, separator, NUL, look-alike and malformed name


@pytest.mark.parametrize("platform", ["linux", "windows"])
def test_load_never_reads_outside_the_root(tree: Tree, platform: str, guard: list[Any]) -> None:
    loaded = []
    for host in names(tree):
        try:
            certs = load(host, root=tree.root, platform=platform)
        except InvalidHostError:
            continue
        except MissingKeyError as exc:  # pragma: no cover - the failure this test exists for
            pytest.fail(f"{host!r} reached a sentinel: {exc}")
        assert_under_root(certs.directory, tree)
        loaded.append(host)
    # Not one of them is a registry host; the guard fixture checks the recorded accesses.
    assert loaded == []


def test_the_guard_sees_a_read_outside_the_root(tree: Tree) -> None:
    # The negative control: reading a sentinel folder directly must trip both alarms.
    with RECORDER.lock:
        RECORDER.events = []
    RECORDER.active = True
    try:
        with pytest.raises(MissingKeyError):
            load_dir(tree.root / "..")
    finally:
        RECORDER.active = False
    with pytest.raises(AssertionError, match="outside the root"):
        tree.check(list(RECORDER.events))


def test_valid_names_still_load(tree: Tree, guard: list[Any]) -> None:
    certs = load("reg:5000", root=tree.root)
    assert [p.name for p in certs.pairs] == ["client"]
    assert load("reg:5000", root=tree.root, platform="windows").directory.name == "reg5000"
    assert load("[::1]:5000", root=tree.root).exists is False


@pytest.mark.parametrize("form", ["{}/team/app:1.0", "https://{}/v2/", "http://{}:5000/v2/"])
def test_registry_host_then_load(tree: Tree, form: str, guard: list[Any]) -> None:
    refused = 0
    for host in names(tree):
        text = form.format(host)
        try:
            name = registry_host(text)
        except InvalidHostError:  # any other exception, a plain ValueError too, fails
            refused += 1
            continue
        try:
            certs = load(name, root=tree.root)
        except InvalidHostError:  # pragma: no cover - registry_host checks what it returns
            pytest.fail(f"registry_host({text!r}) returned {name!r}, which load() refuses")
        assert_under_root(certs.directory, tree)
    assert refused > 0


# --------------------------------------------------------------------------- the transport


@pytest.fixture
def no_dns(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Make every name resolution fail at once: a request can never leave the machine."""
    asked: list[Any] = []

    def refuse(host: Any, *args: Any, **kwargs: Any) -> Any:
        asked.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "resolution disabled by the test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return asked


def urls_for(host: str) -> list[httpx.URL]:
    """The URLs httpx will build for ``host``, by parsing and by components."""
    found = []
    for make in (
        lambda: httpx.URL(f"https://{host}/v2/"),
        lambda: httpx.URL(scheme="https", host=host, path="/v2/"),
        lambda: httpx.URL(scheme="https", host=host, port=5000, path="/v2/"),
    ):
        try:
            found.append(make())
        except (httpx.InvalidURL, ValueError, TypeError):
            continue
    return found


def test_transport_never_reads_outside_the_root(
    tree: Tree, no_dns: list[Any], guard: list[Any]
) -> None:
    outcomes: dict[str, int] = {}
    transport = Transport(root=tree.root, refresh=0)
    with httpx.Client(transport=transport, timeout=1.0) as client:
        for host in names(tree):
            for url in urls_for(host):
                try:
                    client.get(url)
                except CertsDirTransportError as exc:
                    # httpx's contract: a TransportError, carrying the loader's own error.
                    if not isinstance(exc.error, InvalidHostError):  # pragma: no cover
                        pytest.fail(f"{url}: unexpected {exc.error!r}")
                    outcome = "InvalidHostError"
                except httpx.ConnectError:
                    outcome = "ConnectError (folder under the root loaded, then no DNS)"
                except httpx.UnsupportedProtocol:
                    outcome = "UnsupportedProtocol"
                except MissingKeyError as exc:  # pragma: no cover
                    pytest.fail(f"{url} reached a sentinel: {exc}")
                except CertsDirError as exc:  # pragma: no cover
                    pytest.fail(f"{url}: unexpected {exc!r}")
                else:  # pragma: no cover - nothing answers
                    pytest.fail(f"{url} got a response")
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
    assert outcomes.get("InvalidHostError", 0) > 10, outcomes
    assert outcomes.get("ConnectError (folder under the root loaded, then no DNS)", 0) > 0
    assert no_dns, "the transport never tried to connect"


# --------------------------------------------------------------------------- property


DANGEROUS = st.lists(
    st.sampled_from([*"ab09.:/\\%[]@~ -_\x00\n", *"．∕／。：", "..", "::", "%2e"]),  # noqa: RUF001
    max_size=16,
).map("".join)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    host=st.one_of(st.text(max_size=40), DANGEROUS), platform=st.sampled_from(["linux", "windows"])
)
@example(host="..", platform="linux")
@example(host="a/../../etc", platform="linux")
@example(host="[::1%/..]", platform="linux")
@example(host="[::1%\\..]", platform="windows")
def test_any_text_is_refused_or_a_child_of_the_root(
    tmp_path: Path, host: str, platform: str
) -> None:
    root = tmp_path / "certs.d"
    try:
        path = host_dir(host, root=root, platform=platform)
    except InvalidHostError:
        return
    assert path.parent == root
    assert path.resolve().parent == root.resolve()  # what the kernel would open
    assert path.name not in ("", ".", "..")
    assert not {"/", "\\", "\0"} & set(path.name)
    expected = host.replace(":", "") if platform == "windows" else host
    assert path.name == expected


# --------------------------------------------------------------------------- regressions


@pytest.mark.parametrize(
    "host", ["[::1%..]", "[::1%2F..]:5000", "[fe80::1%eth0]", "[::1%25]:5000", "[::1%]"]
)
def test_ipv6_zone_identifiers_are_invalid_hosts(host: str, tmp_path: Path) -> None:
    # Found by this file, fixed in locate.check_host: ipaddress.IPv6Address accepts any scope
    # id, Docker's grammar (distribution/reference ipv6address) none.
    with pytest.raises(InvalidHostError):
        host_dir(host, root=tmp_path)
    with pytest.raises(InvalidHostError):
        registry_host(f"https://{host}/v2/")


@pytest.mark.parametrize("host", ["[::ffff:127.0.0.1]", "[::ffff:10.0.0.1]:5000", "[::1.2.3.4]"])
def test_ipv4_mapped_ipv6_literals_are_invalid_hosts(host: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidHostError):
        host_dir(host, root=tmp_path)


@pytest.mark.parametrize(
    "url",
    [
        "https://．．／etc/v2/",  # noqa: RUF001
        "https://reg／x:5000/v2/",  # noqa: RUF001
        "https://[::1/v2/",
        "https://[[::1]]/v2/",
        "https://[..]/v2/",
        "https://[]/v2/",
    ],
)
def test_registry_host_malformed_urls_are_invalid_hosts(url: str) -> None:
    # Found by this file, fixed in locate.registry_host: urlsplit's own ValueError
    # ("invalid characters under NFKC normalization", "Invalid IPv6 URL", "does not appear
    # to be an IPv4 or IPv6 address") used to escape unwrapped.
    with pytest.raises(InvalidHostError):
        registry_host(url)
