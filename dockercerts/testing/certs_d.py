"""Build ``certs.d`` trees for tests: every shape Docker reads, and the mistakes users make.

Example::

    from dockercerts.testing import CA, CertsD

    ca = CA()
    tree = CertsD(tmp_path / "certs.d")
    (tree.host("localhost:5443")
        .ca(ca)                                        # ca.crt
        .pair("alice", ca.issue_client("alice"))       # alice.cert + alice.key
        .key_only("tls", ca.issue_client("orphan")))   # tls.key with no tls.cert

Every method of :class:`HostDir` returns the ``HostDir`` so calls chain; file names are checked
so that a test cannot write outside its host directory by accident.
"""

from __future__ import annotations

import datetime as _dt
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Optional, Union

from dockercerts.testing.pki import CA, Leaf, PathLike

__all__ = ["CertsD", "HostDir"]

CertSource = Union[CA, Leaf, bytes, str]
"""What :meth:`HostDir.ca` accepts: a CA, a leaf (its certificate only) or PEM text."""

_K8S_DATA = "..data"
_K8S_DATA_TMP = "..data_tmp"


def _check_name(name: str, what: str = "file name") -> str:
    if not name or name in (".", "..") or "/" in name or "\0" in name or os.sep in name:
        raise ValueError(f"{what} {name!r} must be a single path component")
    return name


def _pem_of(source: CertSource) -> bytes:
    if isinstance(source, CA):
        return source.cert_pem
    if isinstance(source, Leaf):
        return source.leaf_pem
    if isinstance(source, str):
        return source.encode("ascii")
    return source


def _k8s_timestamp_dir(parent: Path) -> Path:
    # kubelet's AtomicWriter names each payload ``..<UTC timestamp>.<random>``; the random part
    # keeps two rotations within one second apart.
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y_%m_%d_%H_%M_%S")
    while True:
        candidate = parent / f"..{stamp}.{secrets.randbelow(10**10):010d}"
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate


class HostDir:
    """One host directory, ``<certs.d>/<host[:port]>``, with chainable writers.

    Example::

        d = certs_d.host("localhost:5443").ca(ca).pair("client", leaf)
        sorted(p.name for p in d.path.iterdir())   # ['ca.crt', 'client.cert', 'client.key']
    """

    def __init__(self, path: PathLike, host: Optional[str] = None) -> None:
        self.path = Path(path)
        self.host: str = host if host is not None else self.path.name
        self.path.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"HostDir({str(self.path)!r})"

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def names(self) -> list[str]:
        """The entries of the directory sorted by bytes, the order Docker reads them in."""
        return sorted(os.listdir(self.path), key=os.fsencode)

    def file(self, name: str, data: bytes) -> HostDir:
        """Write ``data`` to ``name`` as is (garbage, DER, a misnamed file, ...)."""
        (self.path / _check_name(name)).write_bytes(data)
        return self

    def ca(self, source: CertSource, name: str = "ca.crt") -> HostDir:
        """Write a trusted CA certificate, by default as ``ca.crt``.

        ``source`` is a :class:`CA` (its certificate), a :class:`Leaf` (its leaf certificate,
        e.g. to trust a self-signed server) or PEM bytes/text.
        """
        return self.file(name, _pem_of(source))

    def pair(self, name: str, leaf: Leaf, *, password: Optional[bytes] = None) -> HostDir:
        """Write a client pair ``<name>.cert`` (leaf + intermediates) and ``<name>.key``.

        ``password`` encrypts the key, which Docker refuses (moby#30935).
        """
        self.cert_only(name, leaf)
        return self.key_only(name, leaf, password=password)

    def cert_only(self, name: str, leaf: Leaf) -> HostDir:
        """Write ``<name>.cert`` without its key (Docker: ``missing key <name>.key ...``)."""
        return self.file(self._stem(name) + ".cert", leaf.cert_pem)

    def key_only(self, name: str, leaf: Leaf, *, password: Optional[bytes] = None) -> HostDir:
        """Write an orphan ``<name>.key`` (Docker: ``missing client certificate ...``)."""
        path = self.path / (self._stem(name) + ".key")
        path.write_bytes(leaf.key_pem(password))
        os.chmod(path, 0o600)
        return self

    def ca_as_cert(self, ca: CA, name: str = "ca") -> HostDir:
        """The classic mistake (moby#19507): a CA saved as ``<name>.cert`` instead of ``.crt``."""
        return self.file(self._stem(name) + ".cert", ca.cert_pem)

    def symlink(self, name: str, target: PathLike) -> HostDir:
        """Create the symlink ``name -> target``; ``target`` is used verbatim and may dangle."""
        os.symlink(os.fspath(target), self.path / _check_name(name))
        return self

    def mkdir(self, name: str) -> HostDir:
        """Create a sub-directory, e.g. one named ``x.crt`` that Docker fails to read."""
        (self.path / _check_name(name)).mkdir()
        return self

    def remove(self, name: str) -> HostDir:
        """Remove a file or symlink (not a directory)."""
        (self.path / _check_name(name)).unlink()
        return self

    def kubernetes(self, files: Mapping[str, bytes]) -> HostDir:
        """Lay ``files`` out like a Kubernetes secret or configMap volume.

        Creates ``..<timestamp>/`` holding the files, ``..data -> ..<timestamp>`` and, for each
        name, ``name -> ..data/name``. Docker reads such a mount normally.

        Example: ``d.kubernetes({"ca.crt": ca.cert_pem, "tls.crt": ..., "tls.key": ...})``.
        """
        if os.path.lexists(self.path / _K8S_DATA):
            raise FileExistsError(f"{self.path} already has {_K8S_DATA}; use rotate_kubernetes")
        payload = self._k8s_payload(files)
        os.symlink(payload.name, self.path / _K8S_DATA)
        for name in files:
            os.symlink(f"{_K8S_DATA}/{name}", self.path / name)
        return self

    def rotate_kubernetes(self, files: Mapping[str, bytes]) -> HostDir:
        """Replace the payload of a :meth:`kubernetes` layout the way kubelet does.

        The new files go to a fresh ``..<timestamp>/``; a temporary ``..data_tmp`` symlink to it
        is renamed over ``..data`` (one atomic ``rename(2)``, so a reader sees the old set or
        the new set, never a mix); then links for added names are created, links for dropped
        names removed, and the old payload deleted.
        """
        data_link = self.path / _K8S_DATA
        if not data_link.is_symlink():
            raise FileNotFoundError(f"{data_link} is not a symlink; call kubernetes() first")
        old_payload = self.path / os.readlink(data_link)
        old_names = set(os.listdir(old_payload))
        payload = self._k8s_payload(files)
        tmp_link = self.path / _K8S_DATA_TMP
        if os.path.lexists(tmp_link):
            tmp_link.unlink()
        os.symlink(payload.name, tmp_link)
        os.replace(tmp_link, data_link)
        for name in files:
            if name not in old_names:
                os.symlink(f"{_K8S_DATA}/{name}", self.path / name)
        for name in old_names - set(files):
            link = self.path / name
            if link.is_symlink():
                link.unlink()
        for entry in old_payload.iterdir():
            entry.unlink()
        old_payload.rmdir()
        return self

    def _k8s_payload(self, files: Mapping[str, bytes]) -> Path:
        for name in files:
            _check_name(name)
            if name.startswith(".."):
                raise ValueError(f"{name!r}: names starting with '..' are reserved by kubelet")
        payload = _k8s_timestamp_dir(self.path)
        for name, data in files.items():
            (payload / name).write_bytes(data)
        return payload

    @staticmethod
    def _stem(name: str) -> str:
        _check_name(name)
        if name.endswith((".cert", ".key", ".crt")):
            raise ValueError(
                f"give the name without extension ({name!r} -> {name.rsplit('.', 1)[0]!r})"
            )
        return name


class CertsD:
    """A ``certs.d`` root folder; :meth:`host` gives its host directories.

    Example::

        tree = CertsD(tmp_path / "certs.d")
        tree.host("localhost:5443").ca(ca)
        tree.host("reg_5000_")                  # containerd's spelling, for flavour tests
    """

    def __init__(self, root: PathLike) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    @property
    def path(self) -> Path:
        """The root folder (same as ``root``)."""
        return self.root

    def __repr__(self) -> str:
        return f"CertsD({str(self.root)!r})"

    def __fspath__(self) -> str:
        return str(self.root)

    def host(self, host: str) -> HostDir:
        """The host directory for ``host`` (``"localhost:5443"``, ``"[::1]:5000"``), created
        if missing. The name is used verbatim, as Docker does on Linux."""
        return HostDir(self.root / _check_name(host, "host directory name"), host)
