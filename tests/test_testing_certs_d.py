"""dockercerts.testing.certs_d: each builder call creates exactly the files and links expected."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from dockercerts.testing import CA, CertsD, HostDir, Leaf

HOST = "localhost:5443"


@pytest.fixture(scope="module")
def ca() -> CA:
    return CA(name="certs.d builder CA")


@pytest.fixture(scope="module")
def alice(ca: CA) -> Leaf:
    return ca.issue_client("alice")


@pytest.fixture
def tree(tmp_path: Path) -> CertsD:
    return CertsD(tmp_path / "certs.d")


@pytest.fixture
def hd(tree: CertsD) -> HostDir:
    return tree.host(HOST)


def entries(path: Path) -> dict[str, str]:
    """name -> "file" / "dir" / "link:<target>" for everything directly in ``path``."""
    out = {}
    for entry in os.scandir(path):
        if entry.is_symlink():
            out[entry.name] = "link:" + os.readlink(entry.path)
        elif entry.is_dir():
            out[entry.name] = "dir"
        else:
            out[entry.name] = "file"
    return out


def test_root_and_host_directories_are_created(tmp_path: Path) -> None:
    tree = CertsD(tmp_path / "a" / "certs.d")
    assert tree.root.is_dir()
    assert tree.path == tree.root == Path(os.fspath(tree))
    hd = tree.host("reg.example.com:5000")
    assert hd.path == tmp_path / "a" / "certs.d" / "reg.example.com:5000"
    assert hd.path.is_dir()
    assert hd.host == "reg.example.com:5000"
    assert hd.names() == []
    assert tree.host("[::1]:5000").path.name == "[::1]:5000"


def test_ca_accepts_a_ca_a_leaf_or_pem(hd: HostDir, ca: CA, alice: Leaf) -> None:
    assert hd.ca(ca) is hd
    hd.ca(alice, name="self.crt").ca(b"raw", name="b.crt").ca("text", name="s.crt")
    assert entries(hd.path) == dict.fromkeys(["ca.crt", "self.crt", "b.crt", "s.crt"], "file")
    assert (hd.path / "ca.crt").read_bytes() == ca.cert_pem
    assert (hd.path / "self.crt").read_bytes() == alice.leaf_pem
    assert (hd.path / "b.crt").read_bytes() == b"raw"
    assert (hd.path / "s.crt").read_bytes() == b"text"


def test_pair_writes_cert_and_key(hd: HostDir, ca: CA) -> None:
    bob = ca.intermediate(name="issuing").issue_client("bob")
    hd.pair("client", bob)
    assert entries(hd.path) == {"client.cert": "file", "client.key": "file"}
    assert (hd.path / "client.cert").read_bytes() == bob.cert_pem
    assert bob.cert_pem != bob.leaf_pem  # the intermediate went in too
    assert (hd.path / "client.key").read_bytes() == bob.key_pem()


def test_pair_with_password_writes_an_encrypted_key(hd: HostDir, alice: Leaf) -> None:
    hd.pair("enc", alice, password=b"pw")
    assert (hd.path / "enc.key").read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY")


def test_single_file_mistakes(hd: HostDir, ca: CA, alice: Leaf) -> None:
    hd.cert_only("lonely", alice).key_only("tls", alice).ca_as_cert(ca)
    assert entries(hd.path) == {"lonely.cert": "file", "tls.key": "file", "ca.cert": "file"}
    assert (hd.path / "lonely.cert").read_bytes() == alice.cert_pem
    assert (hd.path / "tls.key").read_bytes() == alice.key_pem()
    assert (hd.path / "ca.cert").read_bytes() == ca.cert_pem


def test_names_with_extensions_are_refused(hd: HostDir, alice: Leaf) -> None:
    with pytest.raises(ValueError, match="without extension"):
        hd.pair("client.cert", alice)
    assert hd.names() == []


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "../escape"])
def test_names_cannot_leave_the_directory(hd: HostDir, name: str) -> None:
    with pytest.raises(ValueError, match="single path component"):
        hd.file(name, b"x")
    with pytest.raises(ValueError):
        CertsD(hd.path.parent).host(name)


def test_file_symlink_mkdir_remove(hd: HostDir, tmp_path: Path) -> None:
    (tmp_path / "elsewhere.pem").write_bytes(b"target")
    hd.file("x.CRT", b"\x00\x01").symlink("ca.crt", tmp_path / "elsewhere.pem")
    hd.symlink("dangling.crt", "no/such/file").mkdir("dir.crt")
    assert entries(hd.path) == {
        "x.CRT": "file",
        "ca.crt": "link:" + str(tmp_path / "elsewhere.pem"),
        "dangling.crt": "link:no/such/file",
        "dir.crt": "dir",
    }
    assert (hd.path / "ca.crt").read_bytes() == b"target"
    assert hd / "x.CRT" == hd.path / "x.CRT"
    hd.remove("dangling.crt").remove("x.CRT")
    assert sorted(entries(hd.path)) == ["ca.crt", "dir.crt"]


def test_names_are_sorted_by_bytes(hd: HostDir) -> None:
    for name in ["b.crt", "B.crt", "a.crt", "é.crt", "_.crt"]:
        hd.file(name, b"")
    assert hd.names() == ["B.crt", "_.crt", "a.crt", "b.crt", "é.crt"]


# --------------------------------------------------------------------------- Kubernetes


def test_kubernetes_layout(hd: HostDir, ca: CA, alice: Leaf) -> None:
    files = {"ca.crt": ca.cert_pem, "tls.crt": alice.cert_pem, "tls.key": alice.key_pem()}
    assert hd.kubernetes(files) is hd
    top = entries(hd.path)
    payloads = [name for name, kind in top.items() if kind == "dir"]
    assert len(payloads) == 1
    payload = payloads[0]
    assert payload.startswith("..2")
    assert top == {
        payload: "dir",
        "..data": "link:" + payload,
        "ca.crt": "link:..data/ca.crt",
        "tls.crt": "link:..data/tls.crt",
        "tls.key": "link:..data/tls.key",
    }
    assert entries(hd.path / payload) == dict.fromkeys(files, "file")
    for name, data in files.items():
        assert (hd.path / name).read_bytes() == data
    with pytest.raises(FileExistsError):
        hd.kubernetes(files)


def test_kubernetes_refuses_reserved_names(hd: HostDir) -> None:
    with pytest.raises(ValueError, match="reserved"):
        hd.kubernetes({"..data": b""})


def test_rotate_swaps_the_data_link_with_one_rename(
    hd: HostDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = {"ca.crt": b"old ca", "tls.crt": b"old cert", "gone.crt": b"dropped"}
    new = {"ca.crt": b"new ca", "tls.crt": b"new cert", "added.crt": b"added"}
    hd.kubernetes(old)
    old_payload = os.readlink(hd.path / "..data")
    swaps: list[tuple[str, str]] = []
    real_replace = os.replace

    def watching_replace(src: Any, dst: Any) -> None:
        # Just before the swap, readers must still see the complete old set...
        assert os.readlink(hd.path / "..data") == old_payload
        for name, data in old.items():
            assert (hd.path / name).read_bytes() == data
        swaps.append((os.path.basename(src), os.path.basename(dst)))
        real_replace(src, dst)
        # ... and right after it, the complete new set: one rename switched everything.
        for name in ("ca.crt", "tls.crt"):
            assert (hd.path / name).read_bytes() == new[name]

    monkeypatch.setattr(os, "replace", watching_replace)
    assert hd.rotate_kubernetes(new) is hd
    monkeypatch.undo()

    assert swaps == [("..data_tmp", "..data")]
    new_payload = os.readlink(hd.path / "..data")
    assert new_payload != old_payload
    assert not (hd.path / old_payload).exists()
    assert entries(hd.path) == {
        new_payload: "dir",
        "..data": "link:" + new_payload,
        "ca.crt": "link:..data/ca.crt",
        "tls.crt": "link:..data/tls.crt",
        "added.crt": "link:..data/added.crt",
    }
    for name, data in new.items():
        assert (hd.path / name).read_bytes() == data


def test_rotate_twice_in_a_row_keeps_distinct_payloads(hd: HostDir) -> None:
    hd.kubernetes({"ca.crt": b"1"}).rotate_kubernetes({"ca.crt": b"2"})
    hd.rotate_kubernetes({"ca.crt": b"3"})
    assert (hd.path / "ca.crt").read_bytes() == b"3"
    assert len([n for n in hd.names() if n.startswith("..2")]) == 1


def test_rotate_needs_a_layout(hd: HostDir) -> None:
    with pytest.raises(FileNotFoundError, match="kubernetes"):
        hd.rotate_kubernetes({"ca.crt": b""})
