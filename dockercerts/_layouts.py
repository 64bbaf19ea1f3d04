"""How each runtime finds and reads a registry's folder: one small object per runtime,
chosen in one place (:func:`layout`), which the per-host state and :func:`~dockercerts.load`
use without knowing which runtime they serve.

Each layout answers four questions:

* ``names(url)``: the registry names a request URL stands for (``reg`` and ``reg:443`` for
  port 443; containerd adds ``docker.io`` for ``registry-1.docker.io``);
* ``places(names)``: every folder the runtime may read for them, in its order;
* ``pick(names, paths)``: which one it reads now (the only step that looks at the disk);
* ``read(...)``: what it reads there, as a :class:`~dockercerts.HostCerts` for the request's
  own host, or the error to raise; ``unchanged(...)`` says whether that is still current.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import httpx

from ._search import first_folder, search
from .containerd import RequestView, read_view, resnapshot
from .hoststoml import HUB, HUB_HOST
from .loader import HostCerts, gather
from .locate import StrPath, host_dir, resolve_platform
from .runtimes import Lookup, Place, certs_roots, check_runtime, places
from .scan import CONTAINERS_IMAGE, MOBY, Password, snapshot, vanished
from .trust import Trust

__all__ = ["Layout", "docker_host_names", "gather_for", "layout", "lookup"]


def docker_host_names(url: httpx.URL) -> tuple[str, ...]:
    """The host directory names Docker could use for ``url``, in the order they are tried.

    httpx lower-cases host names, drops the default port and strips IPv6 brackets; this
    rebuilds Docker's spelling. For port 443 the bare host comes first, then ``host:443``
    (as nerdctl does): the reference ``reg:443/app`` has its own folder in Docker.

        >>> docker_host_names(httpx.URL("https://[::1]:5000/v2/"))
        ('[::1]:5000',)
        >>> docker_host_names(httpx.URL("https://Reg.Example.com/v2/"))
        ('reg.example.com', 'reg.example.com:443')
    """
    host = url.raw_host.decode("ascii")
    if ":" in host:
        host = f"[{host}]"
    port = url.port
    if port is None or port == 443:
        return (host, f"{host}:443")
    return (f"{host}:{port}",)


@dataclass(frozen=True)
class Layout:
    """Where ``runtime`` looks (``roots``, or podman's flat ``cert_dir``) on ``platform``."""

    runtime: str
    roots: tuple[Path, ...]
    platform: str
    cert_dir: Optional[Path] = None

    def names(self, url: httpx.URL) -> tuple[str, ...]:
        found = docker_host_names(url)
        if self.runtime == "containerd" and found[0] == HUB_HOST:
            # containerd pulls Docker Hub from registry-1.docker.io with docker.io's folder.
            return (HUB, *found)
        return found

    def request_host(self, names: tuple[str, ...]) -> str:
        """The host a request goes to, out of :meth:`names` (the alias first for the Hub)."""
        return names[1] if len(names) > 1 and names[0] == HUB else names[0]

    def places(self, names: tuple[str, ...]) -> tuple[Place, ...]:
        if self.cert_dir is not None:
            return (Place(self.cert_dir, "", names[0]),)
        if self.runtime == "docker":
            # Docker names one folder; host_dir checks the name (no path escapes the root).
            return tuple(
                Place(
                    self.roots[0], host_dir(n, root=self.roots[0], platform=self.platform).name, n
                )
                for n in names
            )
        return places(self.runtime, names, self.roots, platform=self.platform)

    def paths(self, names: tuple[str, ...]) -> tuple[Path, ...]:
        return tuple(p.path for p in self.places(names))

    def lookup(self, names: tuple[str, ...]) -> Lookup:
        return search(self.runtime, self.places(names))

    def pick(self, names: tuple[str, ...], paths: tuple[Path, ...]) -> Path:
        """The folder to read: the one found, the one where the search stopped on an error
        (reading it raises that error), or, when none exists, the first place."""
        if len(paths) == 1 and self.runtime == "docker":
            return paths[0]
        return first_folder(self.runtime, paths)

    def registry(self, names: tuple[str, ...], folder: Path) -> str:
        """The registry name ``folder`` stands for (the spelling whose folder was found)."""
        for place in self.places(names):
            if place.path == folder:
                return place.host
        return names[0]

    def unchanged(self, folder: Path, current: HostCerts) -> bool:
        if self.runtime == "containerd":
            return resnapshot(folder, current.snapshot) == current.snapshot
        return snapshot(folder) == current.snapshot

    def read(
        self,
        folder: Path,
        names: tuple[str, ...],
        trust: Optional[Trust],
        password: Optional[Password],
    ) -> Union[HostCerts, BaseException]:
        """What the runtime reads in ``folder`` for a request to ``names``' host, or the error
        to raise (returned: this frame holds the password)."""
        if self.runtime == "containerd":
            view = self.view(folder, names, trust, password)
            return view.certs if isinstance(view, RequestView) else view
        dialect = CONTAINERS_IMAGE if self.runtime == "podman" else MOBY
        return gather(folder, self.platform, trust, password, dialect)

    def view(
        self,
        folder: Path,
        names: tuple[str, ...],
        trust: Optional[Trust],
        password: Optional[Password],
    ) -> Union[HostCerts, RequestView, BaseException]:
        """:meth:`read`, but containerd's is a :class:`~dockercerts.containerd.RequestView`:
        the request's own TLS and every endpoint of the folder, for routing."""
        if self.runtime == "containerd":
            return read_view(folder, *self._containerd(folder, names), **self._go(trust, password))
        return self.read(folder, names, trust, password)

    def _containerd(self, folder: Path, names: tuple[str, ...]) -> tuple[bool, str, str]:
        # A place that exists in any way is read (and its errors raised).
        return not vanished(folder), self.registry(names, folder), self.request_host(names)

    def _go(self, trust: Optional[Trust], password: Optional[Password]) -> dict[str, Any]:
        return {"platform": self.platform, "trust": trust, "password": password}


def layout(
    runtime: str = "docker",
    *,
    root: Optional[StrPath] = None,
    cert_dir: Optional[StrPath] = None,
    platform: Optional[str] = None,
) -> Layout:
    """The layout of ``runtime``; ``root`` replaces its roots with one, ``cert_dir`` (podman
    only, ``--cert-dir``) is the one folder read for every host."""
    kind = check_runtime(runtime)
    plat = resolve_platform(platform)
    if cert_dir is not None and kind != "podman":
        raise ValueError("cert_dir= is podman's --cert-dir; use root= for docker and containerd")
    roots = certs_roots(kind, platform=plat) if root is None else (Path(root),)
    return Layout(kind, roots, plat, Path(cert_dir) if cert_dir is not None else None)


def lookup(
    host: str,
    *,
    runtime: str = "docker",
    root: Optional[StrPath] = None,
    cert_dir: Optional[StrPath] = None,
    platform: Optional[str] = None,
) -> Lookup:
    """Where ``runtime`` looks for registry ``host``'s folder, and which one it reads."""
    return layout(runtime, root=root, cert_dir=cert_dir, platform=platform).lookup((host,))


def gather_for(
    host: str,
    runtime: str,
    root: Optional[StrPath],
    cert_dir: Optional[StrPath],
    platform: Optional[str],
    trust: Optional[Trust],
    password: Optional[Password],
) -> Union[HostCerts, BaseException]:
    """:func:`~dockercerts.load` for any runtime: the certs or the error to raise."""
    try:
        chosen = layout(runtime, root=root, cert_dir=cert_dir, platform=platform)
    except ValueError as exc:
        return exc
    names = (host,)
    paths = chosen.paths(names)
    return chosen.read(chosen.pick(names, paths), names, trust, password)
