"""Spec section 1: where the host directory is (certs_root, host_dir, registry_host).

Pure string and path rules, so no certificates are needed here; every rule is checked against
an input that a wrong implementation would answer differently.
"""

from __future__ import annotations

import string
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import dockercerts
from dockercerts import CertsDirError, InvalidHostError, certs_root, host_dir, registry_host

ROOTLESS = {"ROOTLESSKIT_STATE_DIR": "/run/user/1000/dockerd-rootless"}


# --------------------------------------------------------------------------- certs_root


def test_linux_daemon_root_is_etc_docker_certs_d() -> None:
    assert certs_root(platform="linux", environ={}) == Path("/etc/docker/certs.d")


def test_linux_non_rootless_ignores_xdg_and_home() -> None:
    # XDG_CONFIG_HOME only matters for a rootless daemon.
    env = {"XDG_CONFIG_HOME": "/home/ana/.cfg", "HOME": "/home/ana"}
    assert certs_root(platform="linux", environ=env) == Path("/etc/docker/certs.d")


def test_rootless_uses_absolute_xdg_config_home() -> None:
    env = {**ROOTLESS, "XDG_CONFIG_HOME": "/home/ana/.cfg", "HOME": "/home/ana"}
    assert certs_root(platform="linux", environ=env) == Path("/home/ana/.cfg/docker/certs.d")


def test_rootless_relative_xdg_falls_back_to_home() -> None:
    env = {**ROOTLESS, "XDG_CONFIG_HOME": "relative/cfg", "HOME": "/home/ana"}
    assert certs_root(platform="linux", environ=env) == Path("/home/ana/.config/docker/certs.d")


def test_rootless_without_xdg_uses_home() -> None:
    env = {**ROOTLESS, "HOME": "/home/bob"}
    assert certs_root(platform="linux", environ=env) == Path("/home/bob/.config/docker/certs.d")


@pytest.mark.parametrize(
    "extra",
    [{}, {"XDG_CONFIG_HOME": "rel"}, {"XDG_CONFIG_HOME": "", "HOME": ""}],
    ids=["nothing", "relative-xdg-no-home", "both-empty"],
)
def test_rootless_without_usable_xdg_or_home_is_etc(extra: dict[str, str]) -> None:
    env = {**ROOTLESS, **extra}
    assert certs_root(platform="linux", environ=env) == Path("/etc/docker/certs.d")


def test_rootless_detection_needs_a_non_empty_state_dir() -> None:
    env = {"ROOTLESSKIT_STATE_DIR": "", "HOME": "/home/ana"}
    assert certs_root(platform="linux", environ=env) == Path("/etc/docker/certs.d")


def test_certs_root_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROOTLESSKIT_STATE_DIR", "/run/x")
    monkeypatch.setenv("XDG_CONFIG_HOME", "/srv/cfg")
    assert certs_root(platform="linux") == Path("/srv/cfg/docker/certs.d")
    monkeypatch.delenv("ROOTLESSKIT_STATE_DIR")
    assert certs_root(platform="linux") == Path("/etc/docker/certs.d")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"ProgramData": r"D:\PD"}, r"D:\PD\docker\certs.d"),
        ({"ProgramData": "D:\\PD\\"}, r"D:\PD\docker\certs.d"),
        ({"PROGRAMDATA": r"E:\Data"}, r"E:\Data\docker\certs.d"),
        ({}, r"C:\ProgramData\docker\certs.d"),
    ],
    ids=["ProgramData", "trailing-backslash", "upper-case-var", "unset"],
)
def test_windows_root_is_programdata(env: dict[str, str], expected: str) -> None:
    assert str(certs_root(platform="windows", environ=env)) == expected


def test_windows_ignores_rootless_rule() -> None:
    env = {**ROOTLESS, "XDG_CONFIG_HOME": "/x", "ProgramData": r"C:\PD"}
    assert str(certs_root(platform="windows", environ=env)) == r"C:\PD\docker\certs.d"


def test_darwin_root_is_home_docker_certs_d() -> None:
    env = {"HOME": "/Users/ana", **ROOTLESS}
    assert certs_root(platform="darwin", environ=env) == Path("/Users/ana/.docker/certs.d")


def test_unknown_platform_is_rejected() -> None:
    with pytest.raises(ValueError, match="platform"):
        certs_root(platform="plan9", environ={})
    with pytest.raises(ValueError, match="platform"):
        host_dir("reg", root="/r", platform="Linux")


# --------------------------------------------------------------------------- host_dir

ACCEPTED = [
    ("reg", "reg", "reg"),
    ("reg:5000", "reg:5000", "reg5000"),
    ("reg:443", "reg:443", "reg443"),  # no default-port folding
    ("reg.example.com", "reg.example.com", "reg.example.com"),
    ("Reg.Example.com:5000", "Reg.Example.com:5000", "Reg.Example.com5000"),  # case kept
    ("[::1]:5000", "[::1]:5000", "[1]5000"),
    ("[::1]", "[::1]", "[1]"),
    ("10.0.0.7:65535", "10.0.0.7:65535", "10.0.0.765535"),
    ("docker.io", "docker.io", "docker.io"),
    ("localhost:1", "localhost:1", "localhost1"),
]


@pytest.mark.parametrize(("host", "posix", "windows"), ACCEPTED)
def test_host_dir_is_the_name_verbatim(host: str, posix: str, windows: str) -> None:
    root = Path("/certs.d")
    assert host_dir(host, root=root, platform="linux") == root / posix
    assert host_dir(host, root=root, platform="darwin") == root / posix
    # Windows: every ':' removed.
    assert host_dir(host, root=root, platform="windows") == root / windows


def test_host_dir_accepts_str_root() -> None:
    assert host_dir("reg:5000", root="/x/certs.d", platform="linux") == Path("/x/certs.d/reg:5000")


def test_host_dir_default_root_follows_platform(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ROOTLESSKIT_STATE_DIR", raising=False)
    assert host_dir("reg:5000", platform="linux") == Path("/etc/docker/certs.d/reg:5000")
    monkeypatch.setenv("ProgramData", r"C:\PD")
    assert str(host_dir("reg:5000", platform="windows")) == str(
        Path(r"C:\PD\docker\certs.d") / "reg5000"
    )


REJECTED = [
    "",
    ".",
    "..",
    "a/b",
    "../x",
    "reg/..",
    "a\\b",
    "..\\x",
    "a\0b",
    "\0",
    "a b",
    " reg",
    "reg\t",
    "reg\n",
    "https://reg",
    "http://reg:5000",
    "reg:0",
    "reg:65536",
    "reg:99999",
    "reg:abc",
    "reg:",
    "reg:-1",
    "reg:+5",
    ":5000",
    "host:port:extra",
    "reg:5000:1",
    "::1",
    "fe80::1",
    "[::1",
    "[::1]x",
    "[not-ip]:5000",
    "[::1]:",
    "[::1]:0",
    "reg.",
    ".reg",
    "a..b",
    "a" * 256,
    "a." * 127 + "ab",  # 256 bytes, each label short
    "r\u0435g.example.com",  # Cyrillic 'e'
    "\uff52eg",  # full-width 'r'
    "reg\u2215x",  # division slash looks like '/'
    "reg\u2024com",  # one-dot leader looks like '.'
    "reg\u00a0",  # no-break space
    "reg\x7f",
    "reg\x1b",
    "reg?x",
    "reg*",
    "reg%2f",
    "r@g",
]


@pytest.mark.parametrize("host", REJECTED)
def test_host_dir_rejects_non_hosts(host: str) -> None:
    with pytest.raises(InvalidHostError) as info:
        host_dir(host, root="/certs.d", platform="linux")
    assert isinstance(info.value, CertsDirError)
    assert isinstance(info.value, ValueError)
    assert info.value.reason
    with pytest.raises(InvalidHostError):
        host_dir(host, root="/certs.d", platform="windows")


def test_host_dir_limit_is_255_bytes() -> None:
    assert host_dir("a" * 255, root="/r", platform="linux").name == "a" * 255
    with pytest.raises(InvalidHostError, match="255"):
        host_dir("a" * 256, root="/r", platform="linux")


def test_invalid_host_error_names_the_input() -> None:
    with pytest.raises(InvalidHostError) as info:
        host_dir("a/b", root="/r")
    assert info.value.host == "a/b"
    assert "a/b" in str(info.value)


def test_non_string_host_is_rejected() -> None:
    with pytest.raises(InvalidHostError):
        host_dir(b"reg", root="/r")  # type: ignore[arg-type]


def test_invalid_host_is_rejected_before_any_file_is_read(tmp_path: Path) -> None:
    # A folder that "../outside" would reach holds a broken pair: reading it would raise
    # MissingKeyError. The host must be refused first.
    root = tmp_path / "certs.d"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "client.cert").write_bytes(b"x")
    with pytest.raises(InvalidHostError):
        dockercerts.load("../outside", root=root, platform="linux")
    with pytest.raises(InvalidHostError):
        dockercerts.load("..", root=root / "sub", platform="linux")


# A grammar of "nearly host" strings: every character that has a meaning for paths or hosts.
_TRICKY = string.ascii_letters[:6] + "019" + ".-_:[]/\\%@ \t\0~" + "\u0435\uff0e\u2215"
_near_hosts = st.one_of(
    st.text(alphabet=_TRICKY, min_size=0, max_size=12),
    st.from_regex(
        r"\A(\[[0-9a-f:.]{0,12}\]|[a-z0-9_.-]{1,12})(:[0-9]{0,6})?\Z",
        fullmatch=True,
    ),
    st.builds(lambda a, b: f"{a}:{b}", st.sampled_from([".", "..", "", "a", "[::]"]), st.text()),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(host=_near_hosts, platform=st.sampled_from(["linux", "windows", "darwin"]))
@example(host="[::]", platform="windows")
@example(host="a.b", platform="linux")
@example(host="-", platform="linux")
def test_no_accepted_name_leaves_the_root(
    host: str, platform: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    root = tmp_path_factory.getbasetemp() / "hyp-root"
    try:
        path = host_dir(host, root=root, platform=platform)
    except InvalidHostError:
        return
    # One path component, directly under the root, and not a special name.
    assert path.resolve().parent == root.resolve()
    assert path.name not in ("", ".", "..")
    assert PurePosixPath(path.name).parts == (path.name,)
    assert "\\" not in path.name
    assert "\0" not in path.name
    assert len(path.name.encode()) <= 255
    if platform == "windows":
        assert ":" not in path.name
    else:
        assert path.name == host


# --------------------------------------------------------------------------- registry_host

DIGEST = "sha256:" + "0123456789abcdef" * 4


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        # the examples
        ("reg:5000/team/app:1.0", "reg:5000"),
        ("ubuntu", "docker.io"),
        ("team/app", "docker.io"),
        ("localhost/app", "localhost"),
        ("https://reg:5000/v2/", "reg:5000"),
        # more references, with and without a registry part
        ("reg:5000/app", "reg:5000"),
        ("reg.example.com/app", "reg.example.com"),
        ("reg:443/app", "reg:443"),
        ("ubuntu:22.04", "docker.io"),
        ("library/ubuntu", "docker.io"),
        ("docker.io/library/ubuntu", "docker.io"),
        ("index.docker.io/library/x", "docker.io"),
        ("localhost:5000/x/y/z:tag", "localhost:5000"),
        ("10.1.2.3/app", "10.1.2.3"),
        ("[::1]:5000/app", "[::1]:5000"),
        # Docker: an upper-case first component can only be a registry.
        ("Team/app", "Team"),
        ("REG/app:1", "REG"),
        # 'reg:5000' alone is repository 'reg' with tag '5000' on Docker Hub.
        ("reg:5000", "docker.io"),
        ("localhost", "docker.io"),
        ("localhost:5000", "docker.io"),
        # digests
        (f"reg:5000/app@{DIGEST}", "reg:5000"),
        (f"reg:5000/app:1.0@{DIGEST}", "reg:5000"),
        (f"ubuntu@{DIGEST}", "docker.io"),
        (f"team/app@{DIGEST}", "docker.io"),
        # URLs: host[:port] exactly as written, IPv6 in brackets, userinfo dropped
        ("https://reg:443/", "reg:443"),
        ("https://reg.example.com", "reg.example.com"),
        ("http://reg:5000/v2/_catalog", "reg:5000"),
        ("https://user:secret@reg:5000/v2/", "reg:5000"),
        ("https://user@reg.example.com/", "reg.example.com"),
        ("https://[::1]:5000/v2/", "[::1]:5000"),
        ("https://u:p@[::1]:5000/v2/", "[::1]:5000"),
        ("https://[fe80::1]/", "[fe80::1]"),
        ("https://index.docker.io/v1/", "docker.io"),
        ("https://Reg.Example.com:5000/", "Reg.Example.com:5000"),
        ("https://reg", "reg"),
    ],
)
def test_registry_host(ref: str, expected: str) -> None:
    assert registry_host(ref) == expected


def test_registry_host_result_is_a_valid_host_dir_name() -> None:
    host = registry_host("https://u:p@[::1]:5000/v2/")
    assert host_dir(host, root="/r", platform="linux") == Path("/r/[::1]:5000")
    assert host_dir(host, root="/r", platform="windows") == Path("/r/[1]5000")


@pytest.mark.parametrize(
    "url", ["ftp://reg/", "file:///etc/passwd", "unix://var/run/docker.sock", "ssh://reg/"]
)
def test_registry_host_rejects_unsupported_scheme(url: str) -> None:
    with pytest.raises(InvalidHostError, match="scheme"):
        registry_host(url)


@pytest.mark.parametrize(
    "bad",
    [
        "https://",
        "https://../",
        "https://reg:0/",
        "https://reg:65536/",
        "https://reg:5000:1/",
        "https://a b/",
        "../x/app",
        "reg.example.com:abc/app",
        # not image references at all (Docker's reference grammar)
        "",
        "bad host!",
        "/app",
        "reg:5000//app",
        "reg:5000/app/",
        "reg:5000/Team/App",
        "reg:5000/app:",
        "reg:5000/app@sha256:abc",
    ],
)
def test_registry_host_rejects_non_hosts(bad: str) -> None:
    with pytest.raises(InvalidHostError):
        registry_host(bad)


def test_registry_host_malformed_ipv6_url_is_invalid_host() -> None:
    with pytest.raises(InvalidHostError):
        registry_host("https://[::1/v2/")
