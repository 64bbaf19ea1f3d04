"""Arguments: what an ``inspect`` or ``probe`` argument names; the choices the commands share."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any, Optional

from ..errors import (
    InvalidHostError,
)
from ..loader import default_trust
from ..locate import (
    certs_root,
    check_host,
    is_image_reference,
    registry_host,
)
from ..trust import Trust

#: Version of the ``--json`` output; bumped only when a key changes meaning or disappears.
SCHEMA = 1


Report = dict[str, Any]


PLATFORMS = ("linux", "windows", "darwin", "freebsd")


RUNTIMES = ("docker", "podman", "containerd")


class CLIError(Exception):
    """A problem with what the user asked for: one line on stderr, with its fix, exit 2."""

    def __init__(self, message: str, fix: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix


def classify(argument: str) -> tuple[str, str]:
    """``(kind, host)`` for an ``inspect`` argument: ``"url"``, ``"host"`` or ``"image"``.

    A bare ``name:port`` is a *host* here (as in ``docker login reg:5000``), although Docker
    would read ``reg:5000`` alone as the image ``reg`` with tag ``5000`` on Docker Hub.

        >>> classify("reg:5000"), classify("reg:5000/team/app:1.0"), classify("ubuntu:22.04")
        (('host', 'reg:5000'), ('image', 'reg:5000'), ('image', 'docker.io'))
    """
    text = argument.strip()
    if not text:
        raise CLIError("the argument is empty", "give a registry host, URL or image reference")
    if "://" in text:
        return "url", registry_host(text)
    if "/" not in text:
        with contextlib.suppress(InvalidHostError):
            return "host", check_host(text)
    name = _repository_name(text)
    if len(name) > _MAX_NAME:
        # Docker's limit (distribution/reference NameTotalLengthMax), checked before the
        # grammar: a 100 KB argument must be refused, not matched or echoed.
        raise CLIError(
            f"the repository name is {len(name)} characters long; Docker refuses names of "
            f"more than {_MAX_NAME} characters",
            "check the argument",
        )
    if not is_image_reference(text):
        raise CLIError(
            f"{shorten(redact(argument))!r} is not a registry host, URL or image reference",
            "write a host (reg.example.com:5000), a URL (https://reg.example.com:5000/v2/) "
            "or an image reference (reg.example.com:5000/team/app:1.0)",
        )
    return "image", registry_host(text)


_MAX_NAME = 255  # Docker refuses repository names longer than this


PORT_LIKE = re.compile(r"[^:/@]+:([0-9]+)\Z")


def _repository_name(text: str) -> str:
    """The name part of an image reference (no digest, no tag), for its length check."""
    name = text.split("@", 1)[0]
    last = name.rfind(":")
    return name[:last] if last > name.rfind("/") else name


def shorten(text: str, most: int = 200) -> str:
    return text if len(text) <= most else text[:most] + "..."


def redact(argument: str) -> str:
    """``argument`` with the user name and password of a URL replaced by ``***``.

    >>> redact("https://alice:secret@reg:5000/v2/")
    'https://***@reg:5000/v2/'
    """
    if "://" not in argument or "@" not in argument:
        return argument
    scheme, rest = argument.split("://", 1)
    authority, sep, tail = rest.partition("/")
    if "@" not in authority:
        return argument
    return f"{scheme}://***@{authority.rsplit('@', 1)[1]}{sep}{tail}"


def resolve_root(root: Optional[str], platform: str) -> Path:
    # Absolute, so a report copied from a terminal still says where the folder was.
    return Path(root).absolute() if root is not None else certs_root(platform=platform)


def trust_rule(value: Optional[str], platform: str) -> Trust:
    if value == "merge":
        return "merge"
    if value == "replace":
        return "replace"
    return default_trust(platform)
