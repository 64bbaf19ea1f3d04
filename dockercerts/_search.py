"""Which of a runtime's places exists: the one step of the lookup that touches the disk.

:func:`dockercerts.runtimes.places` lists where a runtime may look; :func:`search` looks,
with that runtime's rules for a place it cannot see:

* docker: the folder is named, never searched; of two spellings of one registry (``reg``
  and ``reg:443``, see :func:`~dockercerts.transport.docker_host_names`) the first that is a
  folder wins;
* podman (containers/image ``dockerCertDir``): the first place whose ``stat`` succeeds wins,
  even if it is a file; a missing place is skipped, so is one whose ``stat`` is denied
  (logged at debug); any other error stops the search, and the pull fails;
* containerd (``HostDirFromRoot``, root by root as the CRI plugin does): the first place
  whose ``stat`` succeeds wins; a missing one is skipped; any other error, permission denied
  included, stops the search.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from ._gowords import os_error
from .runtimes import Looked, Lookup, Place, check_runtime

__all__ = ["first_folder", "search"]

log = logging.getLogger("dockercerts")


def _state(path: Path) -> tuple[str, str]:
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError as exc:
        return "missing", os_error("stat", path, exc)
    except PermissionError as exc:
        return "denied", os_error("stat", path, exc)
    except (OSError, ValueError) as exc:
        if isinstance(exc, OSError) and exc.errno == errno.ENOENT:
            return "missing", os_error("stat", path, exc)
        detail = os_error("stat", path, exc) if isinstance(exc, OSError) else str(exc)
        return "error", detail
    return ("directory" if stat.S_ISDIR(mode) else "file"), ""


def search(runtime: str, places: Sequence[Place]) -> Lookup:
    """Look at ``places`` in order as ``runtime`` does; see the module's text for the rules.

    >>> from dockercerts.runtimes import places
    >>> found = places("containerd", ["reg:5000"], [Path("/nonexistent")])
    >>> search("containerd", found).chosen is None
    True
    """
    kind = check_runtime(runtime)
    looked: list[Looked] = []
    for place in places:
        state, detail = _state(place.path)
        looked.append(Looked(place, state, detail))
        if kind == "docker":
            if state == "directory":
                return Lookup(kind, tuple(looked), place)
            continue
        if state in ("directory", "file"):
            return Lookup(kind, tuple(looked), place)
        if state == "missing":
            continue
        if state == "denied" and kind == "podman":
            log.debug("error accessing certs directory due to permissions: %s", detail)
            continue
        return Lookup(kind, tuple(looked), place, error=detail)
    return Lookup(kind, tuple(looked), None)


def first_folder(runtime: str, paths: Sequence[Path]) -> Path:
    """The folder to read, by :func:`search`'s rules, from bare paths (the per-host state
    asks at every refresh, so no :class:`Lookup` is built): the one found, the one where
    the search stopped on an error (reading it raises that error), or, when none exists,
    the first path (reading a missing folder gives the runtime's defaults)."""
    kind = check_runtime(runtime)
    for path in paths:
        state = _state(path)[0]
        if kind == "docker":
            if state == "directory":
                return path
        elif state != "missing" and not (state == "denied" and kind == "podman"):
            return path
    return paths[0]
