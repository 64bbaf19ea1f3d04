"""Where a registry's host directory is: pure rules over strings and paths, no file access.

Three questions, three functions:

* :func:`certs_root`: which ``certs.d`` folder the Docker daemon of a platform reads;
* :func:`registry_host`: which registry an image reference or URL talks to, named as Docker
  names its folder;
* :func:`host_dir`: the host directory for that name, after checking that the name cannot
  point anywhere outside the root.
"""

from __future__ import annotations

import ipaddress
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, Optional, Union
from urllib.parse import urlsplit

from .errors import InvalidHostError

__all__ = [
    "Platform",
    "certs_root",
    "check_host",
    "current_platform",
    "host_dir",
    "is_image_reference",
    "registry_host",
]

Platform = Literal["linux", "windows", "darwin", "freebsd"]
#: A path as every function here takes one: text or a path-like object.
StrPath = Union[str, "os.PathLike[str]"]

_PLATFORMS = ("linux", "windows", "darwin", "freebsd")
# One DNS-ish label: what Docker's reference grammar allows, plus '_' (seen in internal
# names reached by URL). Dots separate labels; nothing else may appear.
_LABEL = re.compile(r"[A-Za-z0-9_-]+\Z")
_PORT = re.compile(r"[0-9]{1,5}\Z")

# Docker's image-reference grammar (distribution/reference), so that a mistyped argument is
# an error instead of silently meaning an image on Docker Hub.
_ALNUM = r"[a-z0-9]+"
_PATH = rf"{_ALNUM}(?:(?:[._]|__|[-]+){_ALNUM})*"
_DNS_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DNS_LABEL}(?:\.{_DNS_LABEL})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_REFERENCE = re.compile(
    rf"(?:{_DOMAIN}/)?{_PATH}(?:/{_PATH})*(?::{_TAG})?(?:@{_DIGEST})?\Z", re.ASCII
)
_MAX_HOST_BYTES = 255


def current_platform() -> Platform:
    """The running platform as dockercerts names it: ``"linux"``, ``"windows"``, ``"darwin"``
    or ``"freebsd"``.

    Every other POSIX system counts as ``"linux"``: Docker's Linux rules are its Unix rules.
    FreeBSD is told apart only for containers/image, whose ``/etc`` is ``/usr/local/etc``
    there; Docker's rules for it are Linux's.
    """
    if sys.platform.startswith("win"):
        return "windows"
    if sys.platform == "darwin":
        return "darwin"
    if sys.platform.startswith("freebsd"):
        return "freebsd"
    return "linux"


def resolve_platform(platform: Optional[str]) -> Platform:
    """``platform`` checked, or this machine's when ``None`` (every option that takes one)."""
    if platform is None:
        return current_platform()
    if platform not in _PLATFORMS:
        raise ValueError(f"platform must be one of {', '.join(_PLATFORMS)}, not {platform!r}")
    return platform  # type: ignore[return-value]


def certs_root(
    *,
    platform: Optional[str] = None,
    environ: Optional[Mapping[str, str]] = None,
    runtime: str = "docker",
) -> Path:
    """The ``certs.d`` root the Docker daemon reads on ``platform`` (default: this one).

    ``runtime="podman"`` or ``"containerd"``: the first of the roots that runtime searches
    (all of them: :func:`dockercerts.runtimes.certs_roots`).

    * Linux: ``/etc/docker/certs.d``; for a rootless daemon (``ROOTLESSKIT_STATE_DIR`` is
      set) ``$XDG_CONFIG_HOME/docker/certs.d`` when that is absolute, else
      ``$HOME/.config/docker/certs.d``, else ``/etc/docker/certs.d``.
    * Windows: ``%ProgramData%\\docker\\certs.d``.
    * macOS (Docker Desktop): ``~/.docker/certs.d``, which Desktop copies into its VM.

    ``environ`` defaults to :data:`os.environ`; pass a dict to ask about another setup::

        >>> str(certs_root(platform="linux", environ={}))
        '/etc/docker/certs.d'
        >>> str(certs_root(platform="linux",
        ...                environ={"ROOTLESSKIT_STATE_DIR": "/run/user/1000/dockerd-rootless",
        ...                         "HOME": "/home/ana"}))
        '/home/ana/.config/docker/certs.d'
    """
    plat = resolve_platform(platform)
    env = os.environ if environ is None else environ
    if runtime != "docker":
        from .runtimes import certs_roots  # that module builds on this one

        return certs_roots(runtime, platform=plat, environ=env)[0]
    if plat == "windows":
        program_data = env.get("ProgramData") or env.get("PROGRAMDATA") or r"C:\ProgramData"
        return Path(program_data.rstrip("\\") + r"\docker\certs.d")
    if plat == "darwin":
        home = env.get("HOME") or str(Path.home())
        return Path(home) / ".docker" / "certs.d"
    if env.get("ROOTLESSKIT_STATE_DIR"):
        xdg = env.get("XDG_CONFIG_HOME", "")
        if xdg and os.path.isabs(xdg):
            return Path(xdg) / "docker" / "certs.d"
        home = env.get("HOME", "")
        if home and os.path.isabs(home):
            return Path(home) / ".config" / "docker" / "certs.d"
    return Path("/etc/docker/certs.d")


def check_host(host: str) -> str:
    """Return ``host`` unchanged if it is a registry ``host[:port]``, else raise.

    Accepted: DNS names and IPv4 addresses (``reg``, ``reg.example.com``, ``10.0.0.7``),
    bracketed IPv6 literals (``[::1]``), each optionally followed by ``:port``. Case is kept:
    Docker names folders exactly as the reference is written.

        >>> check_host("reg.example.com:5000")
        'reg.example.com:5000'
    """
    if not isinstance(host, str):
        raise InvalidHostError(repr(host), "not a string")
    if not host:
        raise InvalidHostError(host, "empty")
    if len(host.encode("utf-8", "surrogatepass")) > _MAX_HOST_BYTES:
        raise InvalidHostError(host[:40] + "...", f"longer than {_MAX_HOST_BYTES} bytes")
    if "://" in host:
        raise InvalidHostError(host, "a URL, not a host; use registry_host() to extract it")
    for ch in host:
        if ch == "\0":
            raise InvalidHostError(host, "contains a NUL character")
        if ch in "/\\":
            raise InvalidHostError(host, f"contains {ch!r}, which would name another folder")
        if ch.isspace():
            raise InvalidHostError(host, "contains whitespace")
        if not ch.isascii() or not ch.isprintable():
            raise InvalidHostError(
                host, "contains a non-ASCII or control character; write the name in IDNA form"
            )
    name, port = split_port(host)
    if port is not None and (not _PORT.match(port) or not 0 < int(port) < 65536):
        raise InvalidHostError(host, f"bad port {port!r}")
    if name.startswith("["):
        if not name.endswith("]"):
            raise InvalidHostError(host, "unclosed '[' around an IPv6 address")
        if "%" in name:
            # Zone ids name a local interface; Docker's reference grammar has no room for them.
            raise InvalidHostError(host, "an IPv6 zone id ('%...') is not allowed")
        if "." in name:
            # Nor for IPv4-mapped forms ([::ffff:10.0.0.1]): only hex digits and colons.
            raise InvalidHostError(host, "an IPv6 address must be written in hex only")
        try:
            ipaddress.IPv6Address(name[1:-1])
        except ValueError:
            raise InvalidHostError(host, "not a valid IPv6 address in brackets") from None
        return host
    labels = name.split(".")
    if not all(_LABEL.match(label) for label in labels):
        if ":" in name:
            raise InvalidHostError(host, "an IPv6 address must be written in brackets")
        raise InvalidHostError(host, "empty or invalid name part")
    return host


def split_port(host: str) -> tuple[str, Optional[str]]:
    """``reg:5000`` -> (``reg``, ``"5000"``); ``[::1]:5000`` -> (``[::1]``, ``"5000"``)."""
    if host.startswith("["):
        end = host.find("]")
        if end != -1 and host[end + 1 : end + 2] == ":":
            return host[: end + 1], host[end + 2 :]
        return host, None
    if host.count(":") == 1:
        name, port = host.split(":")
        return name, port
    return host, None


def host_dir(
    host: str,
    *,
    root: Union[str, os.PathLike[str], None] = None,
    platform: Optional[str] = None,
    runtime: str = "docker",
    cert_dir: Union[str, os.PathLike[str], None] = None,
) -> Path:
    """The host directory Docker reads for registry ``host`` (``reg``, ``reg:5000``, ...).

    The folder is named verbatim, port included (``reg:443`` is its own folder); on Windows
    every ``:`` is removed because file names cannot hold it. The name is checked first:
    anything that is not a registry host raises :class:`InvalidHostError` and no path is
    built, so no input can name a folder outside ``root``.

    ``runtime="podman"`` and ``"containerd"`` search several places, so for them this looks
    at the disk: the folder the runtime would read now (the first place when none exists).
    ``cert_dir`` is podman's ``--cert-dir``, returned as it is.

        >>> str(host_dir("reg:5000", root="/etc/docker/certs.d"))
        '/etc/docker/certs.d/reg:5000'
        >>> host_dir("reg:5000", root="/certs.d", platform="windows").name
        'reg5000'
        >>> host_dir("reg:5000", root="/nonexistent", runtime="containerd").name
        'reg_5000_'
    """
    plat = resolve_platform(platform)
    check_host(host)
    if runtime != "docker" or cert_dir is not None:
        from ._layouts import layout  # that module builds on this one

        chosen = layout(runtime, root=root, cert_dir=cert_dir, platform=plat)
        names = (host,)
        return chosen.pick(names, chosen.paths(names))
    base = certs_root(platform=plat) if root is None else Path(root)
    folder = host.replace(":", "") if plat == "windows" else host
    return base / folder


def registry_host(ref_or_url: str) -> str:
    """The registry ``host[:port]`` an image reference or URL talks to, named as Docker does.

    For an image reference the part before the first ``/`` is the registry only when it
    contains ``.`` or ``:``, is ``localhost``, or has upper-case letters; otherwise the image
    is on Docker Hub, ``docker.io``. ``index.docker.io`` is ``docker.io``. For an
    ``https://`` (or ``http://``) URL it is the URL's ``host[:port]`` exactly as written.
    Anything else raises :class:`InvalidHostError`.

        >>> registry_host("reg:5000/team/app:1.0")
        'reg:5000'
        >>> registry_host("ubuntu"), registry_host("team/app"), registry_host("localhost/app")
        ('docker.io', 'docker.io', 'localhost')
        >>> registry_host("https://[::1]:5000/v2/")
        '[::1]:5000'
    """
    text = ref_or_url.strip()
    if "://" in text:
        try:
            parts = urlsplit(text)
            netloc = parts.netloc
        except ValueError as exc:  # a malformed IPv6 literal, NFKC look-alikes, ...
            raise InvalidHostError(ref_or_url, f"not a valid URL ({exc})") from None
        if parts.scheme not in ("https", "http"):
            raise InvalidHostError(ref_or_url, f"unsupported URL scheme {parts.scheme!r}")
        netloc = netloc.rpartition("@")[2]
        return check_host(_normalise_hub(netloc))
    if not is_image_reference(text):
        raise InvalidHostError(
            ref_or_url, "neither an https:// URL nor an image reference such as reg:5000/app:1.0"
        )
    first, slash, _rest = text.partition("/")
    if not slash:
        return "docker.io"
    is_registry = "." in first or ":" in first or first == "localhost" or first.lower() != first
    if not is_registry:
        return "docker.io"
    return check_host(_normalise_hub(first))


def is_image_reference(text: str) -> bool:
    """Whether ``text`` follows Docker's image-reference grammar (``reg:5000/team/app:1.0``).

    >>> is_image_reference("reg:5000/team/app:1.0"), is_image_reference("bad host!")
    (True, False)
    """
    return _REFERENCE.match(text) is not None


def _normalise_hub(host: str) -> str:
    return "docker.io" if host == "index.docker.io" else host
