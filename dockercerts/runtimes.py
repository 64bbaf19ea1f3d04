r"""Where each runtime looks for a registry's folder: pure rules over strings and paths.

Three runtimes keep per-registry TLS in folders, each with its own roots and names:

=============  =====================================================  ==============================
runtime        roots, in order                                        folder names, in order
=============  =====================================================  ==============================
``docker``     ``/etc/docker/certs.d`` (see :func:`~dockercerts.       ``host[:port]`` (Windows: no
               certs_root`)                                            ``:``)
``podman``     ``$HOME/.config/containers/certs.d``,                  ``host[:port]``
               ``/etc/containers/certs.d``, ``/etc/docker/certs.d``
``containerd`` ``/etc/containerd/certs.d``, ``/etc/docker/certs.d``   ``host_port_``, ``host:port``,
                                                                      ``_default``
=============  =====================================================  ==============================

``podman`` stands for everything built on containers/image (podman, skopeo, buildah,
CRI-O); ``containerd`` for ctr, the CRI plugin (Kubernetes nodes), nerdctl and Docker's
containerd image store. Which of the places exists, and what is read there, is for
:mod:`dockercerts.podman` and :mod:`dockercerts.containerd`; this module only lists them.

    >>> roots = certs_roots("containerd", environ={})
    >>> for place in places("containerd", ["reg:5000"], roots):
    ...     print(place.path)
    /etc/containerd/certs.d/reg_5000_
    /etc/containerd/certs.d/reg:5000
    /etc/containerd/certs.d/_default
    /etc/docker/certs.d/reg_5000_
    /etc/docker/certs.d/reg:5000
    /etc/docker/certs.d/_default
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal, Optional

from .locate import certs_root, check_host, resolve_platform

__all__ = [
    "RUNTIMES",
    "Looked",
    "Lookup",
    "Place",
    "Runtime",
    "certs_roots",
    "check_runtime",
    "containerd_dir_name",
    "folder_names",
    "places",
]

Runtime = Literal["docker", "podman", "containerd"]

#: The runtimes dockercerts knows, the default first.
RUNTIMES: tuple[Runtime, ...] = ("docker", "podman", "containerd")

#: containerd's folder for any registry that has none of its own.
DEFAULT_FOLDER = "_default"


def check_runtime(runtime: object) -> Runtime:
    """``runtime`` if it is one of :data:`RUNTIMES`, else :class:`ValueError`.

    >>> check_runtime("podman")
    'podman'
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, not {runtime!r}")
    return runtime


@dataclass(frozen=True)
class Place:
    """One folder a runtime may read for a registry: ``root / name`` (``name`` empty: the
    root itself, podman's ``--cert-dir``). ``host`` is the registry name it stands for."""

    root: Path
    name: str
    host: str

    @property
    def path(self) -> Path:
        return self.root / self.name if self.name else self.root


def _home(env: Mapping[str, str], platform: str) -> Optional[str]:
    """containers/storage's ``homedir.Get``: ``$HOME`` (``%USERPROFILE%`` on Windows), else
    the account's home directory."""
    home = env.get("USERPROFILE" if platform == "windows" else "HOME")
    if home:
        return home
    if platform != "windows" and env is os.environ:
        try:
            import pwd

            return pwd.getpwuid(os.getuid()).pw_dir
        except (ImportError, KeyError, AttributeError):
            return None
    return None


def certs_roots(
    runtime: str = "docker",
    *,
    platform: Optional[str] = None,
    environ: Optional[Mapping[str, str]] = None,
) -> tuple[Path, ...]:
    r"""The roots ``runtime`` searches, in order, on ``platform`` (default: this one).

    * ``docker``: one root, :func:`~dockercerts.certs_root`.
    * ``podman`` (containers/image ``dockerCertDir``): ``$HOME/.config/containers/certs.d``
      (root and rootless alike), ``/etc/containers/certs.d``, ``/etc/docker/certs.d``; on
      FreeBSD ``/usr/local/etc/...`` for the last two.
    * ``containerd``: the CRI plugin's default ``config_path``,
      ``/etc/containerd/certs.d`` then ``/etc/docker/certs.d``. Rootless (as nerdctl, when
      ``ROOTLESSKIT_STATE_DIR`` is set): ``$XDG_CONFIG_HOME/containerd/certs.d`` and
      ``$XDG_CONFIG_HOME/docker/certs.d`` (``XDG_CONFIG_HOME`` defaults to
      ``$HOME/.config``). Windows (nerdctl): ``%ProgramData%\containerd\certs.d`` and
      ``%ProgramData%\docker\certs.d``. ``ctr`` has no default: ``--hosts-dir`` names one
      root, as ``root=`` does here.

        >>> [str(r) for r in certs_roots("podman", platform="linux", environ={"HOME": "/home/ana"})]
        ['/home/ana/.config/containers/certs.d', '/etc/containers/certs.d', '/etc/docker/certs.d']
    """
    kind = check_runtime(runtime)
    plat = resolve_platform(platform)
    env = os.environ if environ is None else environ
    if kind == "docker":
        return (certs_root(platform=plat, environ=env),)
    if plat == "windows":
        program_data = env.get("ProgramData") or env.get("PROGRAMDATA") or r"C:\ProgramData"
        base = program_data.rstrip("\\")
        if kind == "containerd":
            return (Path(base + r"\containerd\certs.d"), Path(base + r"\docker\certs.d"))
    if kind == "podman":
        etc = "/usr/local/etc" if plat == "freebsd" else "/etc"
        roots = [Path(etc) / "containers" / "certs.d", Path(etc) / "docker" / "certs.d"]
        home = _home(env, plat)
        if home:
            roots.insert(0, Path(home) / ".config" / "containers" / "certs.d")
        return tuple(roots)
    if env.get("ROOTLESSKIT_STATE_DIR"):
        config = env.get("XDG_CONFIG_HOME") or (
            str(PurePosixPath(env["HOME"]) / ".config") if env.get("HOME") else ""
        )
        if config:
            return (Path(config) / "containerd" / "certs.d", Path(config) / "docker" / "certs.d")
    return (Path("/etc/containerd/certs.d"), Path("/etc/docker/certs.d"))


def containerd_dir_name(host: str) -> str:
    """containerd's ``hostDirectory``: the last ``:port`` becomes ``_port_``.

    Taken literally, as containerd does: an IPv6 literal without a port loses a colon
    (``[::1]`` -> ``[:_1]_``), which is why such a folder never matches.

        >>> containerd_dir_name("reg:5000"), containerd_dir_name("reg")
        ('reg_5000_', 'reg')
    """
    index = host.rfind(":")
    if index > 0:
        return f"{host[:index]}_{host[index + 1 :]}_"
    return host


def folder_names(runtime: str, host: str, *, platform: Optional[str] = None) -> tuple[str, ...]:
    """The folder names ``runtime`` tries in each root for registry ``host``, in order.

    The host is checked first (:func:`~dockercerts.check_host`): no input names a folder
    outside the root.

        >>> folder_names("containerd", "reg:5000")
        ('reg_5000_', 'reg:5000', '_default')
        >>> folder_names("containerd", "reg:5000", platform="windows")
        ('reg_5000_', 'reg5000', '_default')
        >>> folder_names("docker", "reg:5000", platform="windows")
        ('reg5000',)
    """
    kind = check_runtime(runtime)
    plat = resolve_platform(platform)
    check_host(host)
    if kind == "docker":
        return (host.replace(":", "") if plat == "windows" else host,)
    if kind == "podman":
        return (host,)
    names = []
    special = containerd_dir_name(host)
    if special != host:
        names.append(special.replace(":", "") if plat == "windows" else special)
    names.append(host.replace(":", "") if plat == "windows" else host)
    names.append(DEFAULT_FOLDER)
    return tuple(names)


def places(
    runtime: str,
    hosts: Sequence[str],
    roots: Sequence[Path],
    *,
    platform: Optional[str] = None,
) -> tuple[Place, ...]:
    """Every folder ``runtime`` may read for a registry known by ``hosts``, in the order it
    looks: root by root, and in each root the names of :func:`folder_names`.

    ``hosts`` holds the spellings of one registry, preferred first: ``("reg", "reg:443")``
    for a URL on port 443, whose reference may have been written either way. For
    containerd, ``_default`` comes once per root, after every spelling's own names.

        >>> [p.name for p in places("containerd", ["reg", "reg:443"], [Path("/r")])]
        ['reg', 'reg_443_', 'reg:443', '_default']
    """
    found: list[Place] = []
    for root in roots:
        seen: set[str] = set()
        for host in hosts:
            for name in folder_names(runtime, host, platform=platform):
                if name == DEFAULT_FOLDER or name in seen:
                    continue
                seen.add(name)
                found.append(Place(Path(root), name, host))
        if check_runtime(runtime) == "containerd":
            found.append(Place(Path(root), DEFAULT_FOLDER, hosts[0] if hosts else ""))
    return tuple(found)


@dataclass(frozen=True)
class Looked:
    """One place looked at: ``state`` is ``"directory"``, ``"file"`` (it exists, so it is
    chosen, and reading it fails), ``"missing"``, ``"denied"`` (its stat failed with
    permission denied) or ``"error"`` (another error, which stops the search); ``detail``
    is the OS error, if any."""

    place: Place
    state: str
    detail: str = ""


@dataclass(frozen=True)
class Lookup:
    """Which folder a runtime reads for a registry, and every place it looked at first.

    ``chosen`` is the folder read (``None``: none exists, so the runtime's defaults apply:
    system roots, no client certificate). ``error`` is set when a stat error stopped the
    search; the runtime fails there (``chosen`` is that place).
    """

    runtime: Runtime
    looked: tuple[Looked, ...]
    chosen: Optional[Place]
    error: Optional[str] = None

    @property
    def folder(self) -> Optional[Path]:
        return None if self.chosen is None else self.chosen.path
