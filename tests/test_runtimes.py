"""Where podman and containerd look, and how podman reads what it finds.

Each rule is checked against its source (listed in docs/runtimes.md): containers/image
``dockerCertDir`` and ``SetupCertificates`` for podman; containerd ``hostPaths``,
``hostDirectory``, ``HostDirFromRoot`` and the CRI plugin's ``config_path`` for containerd;
nerdctl ``HostsDirs`` for the rootless and Windows roots.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

import dockercerts
from dockercerts import MissingKeyError, load
from dockercerts._layouts import Layout, layout
from dockercerts._search import search
from dockercerts.errors import LEGACY_NOTE, CertsDirReadError, InvalidHostError
from dockercerts.runtimes import (
    RUNTIMES,
    certs_roots,
    check_runtime,
    containerd_dir_name,
    folder_names,
    places,
)
from dockercerts.testing import CA, CertsD

# --- roots ---------------------------------------------------------------------------------------


def test_podman_roots_home_first_for_root_and_rootless() -> None:
    env = {"HOME": "/home/ana", "ROOTLESSKIT_STATE_DIR": "/run/x"}
    assert [str(r) for r in certs_roots("podman", platform="linux", environ=env)] == [
        "/home/ana/.config/containers/certs.d",
        "/etc/containers/certs.d",
        "/etc/docker/certs.d",
    ]
    freebsd = certs_roots("podman", platform="freebsd", environ={"HOME": "/home/ana"})
    assert [str(r) for r in freebsd][1:] == [
        "/usr/local/etc/containers/certs.d",
        "/usr/local/etc/docker/certs.d",
    ]
    # No HOME in a given environment: the two system roots only.
    assert len(certs_roots("podman", platform="linux", environ={})) == 2


def test_containerd_roots_cri_rootless_windows() -> None:
    assert [str(r) for r in certs_roots("containerd", platform="linux", environ={})] == [
        "/etc/containerd/certs.d",
        "/etc/docker/certs.d",
    ]
    rootless = {"ROOTLESSKIT_STATE_DIR": "/run/user/1000/x", "HOME": "/home/ana"}
    assert [str(r) for r in certs_roots("containerd", platform="linux", environ=rootless)] == [
        "/home/ana/.config/containerd/certs.d",
        "/home/ana/.config/docker/certs.d",
    ]
    xdg = {**rootless, "XDG_CONFIG_HOME": "/cfg"}
    assert str(certs_roots("containerd", platform="linux", environ=xdg)[0]) == (
        "/cfg/containerd/certs.d"
    )
    windows = certs_roots("containerd", platform="windows", environ={"ProgramData": "D:\\PD"})
    assert [str(r) for r in windows] == ["D:\\PD\\containerd\\certs.d", "D:\\PD\\docker\\certs.d"]


def test_docker_roots_and_certs_root_runtime() -> None:
    assert certs_roots("docker", platform="linux", environ={}) == (Path("/etc/docker/certs.d"),)
    assert dockercerts.certs_root(platform="linux", environ={}, runtime="containerd") == Path(
        "/etc/containerd/certs.d"
    )
    with pytest.raises(ValueError, match="runtime must be one of docker, podman, containerd"):
        check_runtime("cri-o")


# --- folder names --------------------------------------------------------------------------------


def test_containerd_folder_names_unix_and_windows() -> None:
    assert folder_names("containerd", "reg:5000") == ("reg_5000_", "reg:5000", "_default")
    assert folder_names("containerd", "reg") == ("reg", "_default")
    assert folder_names("containerd", "reg:5000", platform="windows") == (
        "reg_5000_",
        "reg5000",
        "_default",
    )
    # hostDirectory taken literally: the last colon of an IPv6 literal.
    assert containerd_dir_name("[::1]:5000") == "[::1]_5000_"
    assert containerd_dir_name("[::1]") == "[:_1]_"


def test_podman_and_docker_names() -> None:
    assert folder_names("podman", "reg:443") == ("reg:443",)
    assert folder_names("docker", "reg:5000", platform="windows") == ("reg5000",)


def test_hostile_names_never_become_paths() -> None:
    for runtime in RUNTIMES:
        for bad in ("../etc", "a/b", "", "reg:99999", "a\0b"):
            with pytest.raises(InvalidHostError):
                folder_names(runtime, bad)


def test_places_root_major_default_last_in_each_root() -> None:
    found = places("containerd", ["reg", "reg:443"], [Path("/a"), Path("/b")])
    assert [str(p.path) for p in found] == [
        "/a/reg",
        "/a/reg_443_",
        "/a/reg:443",
        "/a/_default",
        "/b/reg",
        "/b/reg_443_",
        "/b/reg:443",
        "/b/_default",
    ]


HOSTS = st.from_regex(r"[a-z][a-z0-9-]{0,8}(\.[a-z][a-z0-9]{0,5}){0,2}", fullmatch=True)
PORTS = st.one_of(st.none(), st.integers(1, 65535))


@given(HOSTS, PORTS, st.sampled_from(["linux", "windows"]))
def test_containerd_order_property(name: str, port: Any, platform: str) -> None:
    host = name if port is None else f"{name}:{port}"
    names = folder_names("containerd", host, platform=platform)
    assert names[-1] == "_default"
    if port is None:
        assert names == (host, "_default")
    else:
        assert names[0] == f"{name}_{port}_"
        assert names[1] == (f"{name}{port}" if platform == "windows" else host)
    if platform == "windows":
        assert all(":" not in n for n in names)


@given(
    HOSTS,
    PORTS,
    st.lists(st.sampled_from(["/r1", "/r2", "/r3"]), min_size=1, max_size=3, unique=True),
    st.sampled_from(RUNTIMES),
)
def test_places_property(name: str, port: Any, roots: list[str], runtime: str) -> None:
    """Root by root; in each root every spelling's names once, then ``_default`` once
    (containerd); every path is inside its root."""
    spellings = [name] if port is None else [f"{name}:{port}", name]
    found = places(runtime, spellings, [Path(r) for r in roots])
    assert [p.root for p in found] == sorted(
        (p.root for p in found), key=lambda r: roots.index(str(r))
    )
    for root in roots:
        names = [p.name for p in found if str(p.root) == root]
        assert len(names) == len(set(names))
        if runtime == "containerd":
            assert names[-1] == "_default"
            assert names.count("_default") == 1
        expected = [n for s in spellings for n in folder_names(runtime, s) if n != "_default"]
        assert [n for n in names if n != "_default"] == list(dict.fromkeys(expected))
    for place in found:
        assert place.path.parent == place.root


# --- which folder exists -------------------------------------------------------------------------


@pytest.fixture
def ca() -> CA:
    return CA(name="runtimes test CA")


def test_podman_first_existing_folder_wins_no_merge(tmp_path: Path, ca: CA) -> None:
    home, etc = tmp_path / "home", tmp_path / "etc"
    CertsD(home / ".config/containers/certs.d").host("reg:5000")  # empty, but it exists
    CertsD(etc / "docker/certs.d").host("reg:5000").ca(ca)
    roots = [
        home / ".config/containers/certs.d",
        etc / "containers/certs.d",
        etc / "docker/certs.d",
    ]
    found = search("podman", places("podman", ["reg:5000"], roots))
    assert found.folder == home / ".config/containers/certs.d/reg:5000"
    assert [lk.state for lk in found.looked] == ["directory"]
    # Read it: the CA in the later root is never seen.
    chosen = Layout("podman", tuple(roots), "linux")
    names = ("reg:5000",)
    certs = chosen.read(chosen.pick(names, chosen.paths(names)), names, None, None)
    assert isinstance(certs, dockercerts.HostCerts)
    assert certs.directory == found.folder
    assert certs.ca_files == ()


def test_podman_skips_missing_and_denied_stops_on_other_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    roots = [tmp_path / "a", tmp_path / "b", tmp_path / "c"]
    (tmp_path / "c" / "reg").mkdir(parents=True)
    real_stat = os.stat

    def stat(path: Any, *args: Any, **kw: Any) -> Any:
        if str(path).startswith(str(tmp_path / "b")):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_stat(path, *args, **kw)

    monkeypatch.setattr("dockercerts._search.os.stat", stat)
    podman = search("podman", places("podman", ["reg"], roots))
    assert [lk.state for lk in podman.looked] == ["missing", "denied", "directory"]
    assert podman.folder == tmp_path / "c" / "reg"
    assert podman.error is None
    # containerd stops at the denied place: its pull fails there.
    containerd = search("containerd", places("containerd", ["reg"], roots))
    assert containerd.error is not None
    assert "permission denied" in containerd.error
    assert containerd.chosen is not None
    assert containerd.chosen.root == tmp_path / "b"


def test_a_file_named_like_the_folder_wins_and_a_file_above_stops(tmp_path: Path) -> None:
    (tmp_path / "r1").mkdir()
    (tmp_path / "r1" / "reg:5000").write_text("not a folder")
    (tmp_path / "r2").write_text("a root that is a file")
    for runtime in ("podman", "containerd"):
        found = search(runtime, places(runtime, ["reg:5000"], [tmp_path / "r1"]))
        assert found.chosen is not None
        assert found.looked[-1].state == "file"
        stopped = search(runtime, places(runtime, ["reg:5000"], [tmp_path / "r2", tmp_path / "r1"]))
        assert stopped.error is not None
        assert "not a directory" in stopped.error


def test_containerd_order_across_roots(tmp_path: Path) -> None:
    one, two = CertsD(tmp_path / "one"), CertsD(tmp_path / "two")
    two.host("reg_5000_")
    one.host("_default")
    found = search("containerd", places("containerd", ["reg:5000"], [one.root, two.root]))
    # _default of the first root comes before anything in the second root.
    assert found.folder == one.root / "_default"
    one.host("reg:5000")
    found = search("containerd", places("containerd", ["reg:5000"], [one.root, two.root]))
    assert found.folder == one.root / "reg:5000"
    one.host("reg_5000_")
    found = search("containerd", places("containerd", ["reg:5000"], [one.root, two.root]))
    assert found.folder == one.root / "reg_5000_"


def test_host_dir_with_runtime_looks_at_the_disk(tmp_path: Path) -> None:
    tree = CertsD(tmp_path)
    assert dockercerts.host_dir("reg:5000", root=tmp_path, runtime="containerd") == (
        tmp_path / "reg_5000_"
    )
    tree.host("reg:5000")
    assert dockercerts.host_dir("reg:5000", root=tmp_path, runtime="containerd") == (
        tmp_path / "reg:5000"
    )
    assert dockercerts.host_dir("reg:5000", cert_dir=tmp_path / "flat", runtime="podman") == (
        tmp_path / "flat"
    )


# --- podman reads what it finds ------------------------------------------------------------------


def test_podman_load_search_list_via_home(
    tmp_path: Path, ca: CA, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    alice = ca.issue_client("alice")
    CertsD(tmp_path / "home/.config/containers/certs.d").host("reg:5000").ca(ca).pair("a", alice)
    certs = load("reg:5000", runtime="podman")
    assert certs.directory == tmp_path / "home/.config/containers/certs.d/reg:5000"
    assert [p.name for p in certs.pairs] == ["a"]
    assert certs.trust == "merge"


def test_podman_cert_dir_is_flat(tmp_path: Path, ca: CA) -> None:
    flat = tmp_path / "flat"
    CertsD(tmp_path).host("flat").ca(ca).pair("c", ca.issue_client("c"))
    for host in ("reg:5000", "other.example"):
        certs = load(host, runtime="podman", cert_dir=flat)
        assert certs.directory == flat
        assert [p.name for p in certs.pairs] == ["c"]
    with pytest.raises(ValueError, match="cert_dir= is podman's"):
        load("reg:5000", runtime="containerd", cert_dir=flat)


def test_podman_wording_and_what_it_passes_over(tmp_path: Path, ca: CA) -> None:
    tree = CertsD(tmp_path)
    broken = tree.host("reg:5000").cert_only("client", ca.issue_client("x"))
    with pytest.raises(MissingKeyError) as caught:
        load("reg:5000", runtime="podman", root=tmp_path)
    assert str(caught.value) == (
        f"missing key client.key for client certificate client.cert. {LEGACY_NOTE}"
    )
    with pytest.raises(MissingKeyError, match="must use the extension"):
        load("reg:5000", root=tmp_path)
    broken.remove("client.cert")
    # A dangling .crt: Docker fails, containers/image passes over it.
    broken.ca(ca).symlink("gone.crt", tmp_path / "nowhere.crt")
    with pytest.raises(CertsDirReadError, match="dangling"):
        load("reg:5000", root=tmp_path)
    certs = load("reg:5000", runtime="podman", root=tmp_path)
    assert [w.code for w in certs.warnings] == ["crt-vanished"]
    assert len(certs.ca_certificates) == 1


def test_podman_unlistable_folder_reads_as_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    CertsD(tmp_path).host("reg:5000")
    real = os.listdir

    def listdir(path: Any) -> Any:
        if str(path).endswith("reg:5000"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr("dockercerts.scan.os.listdir", listdir)
    certs = load("reg:5000", runtime="podman", root=tmp_path)
    assert certs.pairs == ()
    assert [w.code for w in certs.warnings] == ["folder-unreadable"]
    with pytest.raises(CertsDirReadError, match="permission denied"):
        load("reg:5000", root=tmp_path)


def test_transport_names_for_the_hub_under_containerd() -> None:
    chosen = layout("containerd", root="/nonexistent")
    assert chosen.names(httpx.URL("https://registry-1.docker.io/v2/")) == (
        "docker.io",
        "registry-1.docker.io",
        "registry-1.docker.io:443",
    )
    assert layout("docker").names(httpx.URL("https://registry-1.docker.io/v2/"))[0] == (
        "registry-1.docker.io"
    )


@given(
    st.sampled_from(RUNTIMES),
    st.lists(st.sampled_from(["none", "dir", "file"]), min_size=1, max_size=6),
)
def test_the_quick_pick_agrees_with_the_search(runtime: str, kinds: list[str]) -> None:
    """The per-host state's pick (bare paths, every refresh) and the reported search agree
    on any mix of missing places, folders and files."""
    import tempfile

    from dockercerts._search import first_folder

    with tempfile.TemporaryDirectory() as base:
        roots = [Path(base) / f"r{i}" for i in range(3)]
        found = places(runtime, ["reg:5000"], roots)[: len(kinds)]
        for place, kind in zip(found, kinds):
            place.root.mkdir(exist_ok=True)
            if kind == "dir":
                place.path.mkdir()
            elif kind == "file":
                place.path.write_text("x")
        lookup = search(runtime, found)
        expected = lookup.chosen.path if lookup.chosen is not None else found[0].path
        assert first_folder(runtime, [p.path for p in found]) == expected
