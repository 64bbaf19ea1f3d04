"""Reading the files of a host directory safely: the layer under :mod:`dockercerts.scan`.

Only regular files are read (a FIFO, socket or device is refused by name, as Docker has no rule
for them and would block on them or read without end), opened without blocking, up to a size
cap counted while reading; every way this fails is a :class:`~dockercerts.CertsDirReadError`
that names the file and says what to do. No bytes of a file are kept in a frame that an error
raised here carries.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Optional

from .errors import CertsDirReadError

__all__ = ["extension", "list_dir", "open_regular", "read_capped"]


def extension(name: str) -> str:
    """Docker's extension: the suffix from the last dot, case kept (``.crt`` for ``.crt``).

    Unlike :func:`os.path.splitext`, a leading dot counts, as in Go's ``filepath.Ext``.

        >>> extension(".crt"), extension("ca.crt.bak"), extension("ca.CRT"), extension("x")
        ('.crt', '.bak', '.CRT', '')
    """
    dot = name.rfind(".")
    return "" if dot == -1 else name[dot:]


def list_dir(directory: Path) -> Optional[list[str]]:
    """The directory's names, or ``None`` when it does not exist (not an error in Docker)."""
    try:
        return os.listdir(directory)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        blocker = _file_above(directory)
        if blocker is not None:
            raise CertsDirReadError(
                directory,
                directory,
                f"not a directory: {blocker} is a file, not a folder",
                "The certs.d root and every folder above the host directory must be folders",
            ) from None
        raise CertsDirReadError(
            directory,
            directory,
            "not a directory",
            "A host directory must be a folder named after the registry (host[:port])",
        ) from None
    except PermissionError:
        raise CertsDirReadError(
            directory,
            directory,
            "permission denied while listing it",
            "Run as a user that can read it, or fix its permissions",
        ) from None
    except OSError as exc:
        raise CertsDirReadError(
            directory, directory, exc.strerror or str(exc), "Check the path"
        ) from None


_CHUNK = 1 << 20


# Opening must not block (a FIFO with no writer) and the descriptor must not leak to children.
_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
    | getattr(os, "O_NOCTTY", 0)
)


_KINDS = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _size_text(size: int) -> str:
    if size >= 1024 * 1024 and size % (1024 * 1024) == 0:
        return f"{size // (1024 * 1024)} MiB"
    if size >= 1024 and size % 1024 == 0:
        return f"{size // 1024} KiB"
    return f"{size} bytes"


def _not_regular(path: Path, directory: Path, mode: int) -> Optional[CertsDirReadError]:
    """The error for anything but a regular file, ``None`` for one.

    Go reads whatever the name points to, so Docker blocks forever on a FIFO and fills its
    memory from ``/dev/zero``; Docker has no rule to follow here, so the file is refused.
    """
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return CertsDirReadError(
            path,
            directory,
            "is a directory",
            f"Docker reads every name ending in {extension(path.name)} as a file: "
            "rename or remove the folder",
        )
    kind = next((text for test, text in _KINDS if test(mode)), "not a file")
    return CertsDirReadError(
        path,
        directory,
        f"is {kind}, not a regular file",
        "Docker would block on it or read it without end: replace it with a regular file "
        "holding the PEM data (or a symbolic link to one), or remove it",
    )


def _too_large(path: Path, directory: Path, limit: int) -> CertsDirReadError:
    name = "MAX_CA_FILE_SIZE" if extension(path.name) == ".crt" else "MAX_PAIR_FILE_SIZE"
    return CertsDirReadError(
        path,
        directory,
        f"is more than {_size_text(limit)}, the most dockercerts reads from a "
        f"{extension(path.name)} file",
        "Check that this is the right file: PEM certificates and keys are a few KiB each. "
        f"If the bundle really is this large, raise dockercerts.scan.{name}",
    )


def open_regular(path: Path, directory: Path, limit: int) -> int:
    """A descriptor of ``path`` (links followed) known to be a regular file of at most
    ``limit`` bytes; raises :class:`CertsDirReadError` otherwise. The caller closes it.

    ``stat`` first, so a device is never even opened (opening some has side effects); then
    an open that cannot block, and ``fstat`` on the descriptor, so a file swapped between the
    two calls is judged by what was really opened.
    """
    try:
        error = _not_regular(path, directory, os.stat(path).st_mode)
        if error is None:
            fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        error = _os_error(path, directory, exc)
    if error is not None:
        raise error
    try:
        info = os.fstat(fd)
        error = _not_regular(path, directory, info.st_mode)
        if error is None and info.st_size > limit:
            error = _too_large(path, directory, limit)
    except OSError as exc:
        error = _os_error(path, directory, exc)
    if error is not None:
        os.close(fd)
        raise error
    return fd


def _file_above(directory: Path) -> Optional[Path]:
    """The nearest parent of ``directory`` that exists and is not a folder, if any."""
    for parent in directory.parents:
        try:
            if not stat.S_ISDIR(os.stat(parent).st_mode):
                return parent
        except OSError:
            continue
    return None


def read_capped(path: Path, directory: Path, limit: int) -> bytes:
    """Read a file Docker would read, turning each way it can fail into a clear error.

    Only regular files, at most ``limit`` bytes: the cap is counted while reading too, since
    a file may grow and ``/proc``-like files report a size of 0.
    """
    fd = open_regular(path, directory, limit)
    try:
        data = _read_at_most(fd, limit + 1)
    except OSError as exc:
        error = _os_error(path, directory, exc)
    else:
        if data is not None:
            return data
        error = _too_large(path, directory, limit)
    finally:
        os.close(fd)
    # Raised out here: no bytes of the file in this frame, no OSError as its context.
    raise error


def _read_at_most(fd: int, most: int) -> Optional[bytes]:
    """The whole file, or ``None`` when it holds ``most`` bytes or more (those are dropped)."""
    chunks: list[bytes] = []
    size = 0
    while size < most:
        chunk = os.read(fd, min(_CHUNK, most - size))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
    chunks.clear()
    return None


def _os_error(path: Path, directory: Path, exc: OSError) -> CertsDirReadError:
    """A :class:`CertsDirReadError` for an ``OSError`` met while opening or reading ``path``."""
    if isinstance(exc, IsADirectoryError):
        error = _not_regular(path, directory, stat.S_IFDIR)
        assert error is not None
        return error
    if isinstance(exc, FileNotFoundError):
        target = _link_target(path)
        problem = "file vanished" if target is None else f"dangling symbolic link to {target}"
        return CertsDirReadError(
            path,
            directory,
            problem,
            "Restore the link's target or remove the link (copies of Kubernetes secret "
            "mounts often keep the links and lose the ..data folder)",
        )
    if isinstance(exc, PermissionError):
        return CertsDirReadError(
            path,
            directory,
            "permission denied",
            "Run as a user that can read it, or fix its permissions",
        )
    if exc.errno == errno.ELOOP:
        return CertsDirReadError(
            path, directory, "symbolic link loop", "Fix or remove the link: it points to itself"
        )
    problem = exc.strerror or type(exc).__name__
    return CertsDirReadError(path, directory, problem, "Fix or remove the file")


def _link_target(path: Path) -> Optional[str]:
    try:
        return os.readlink(path)
    except OSError:
        return None
