"""A host directory as ordered TLS candidates: :func:`load`, :class:`HostCerts`, :class:`Candidate`.

This is where the pure scan meets ``ssl``: :class:`HostCerts` is the scan's result plus the
trust rule, and :meth:`HostCerts.candidates` turns it into one :class:`Candidate` per client
pair, in Docker's try order. A candidate builds its ``ssl.SSLContext`` the first time it is
asked for it and keeps it, so a host whose first certificate works never pays for the others.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

from .errors import CertsDirReadError, KeyPairError
from .locate import _platform, host_dir
from .scan import CertsWarning, ClientPair, Password, Snapshot, _resolve_password, scan
from .trust import Trust, docker_context

__all__ = ["Candidate", "HostCerts", "default_trust", "load", "load_dir"]

StrPath = Union[str, "os.PathLike[str]"]

log = logging.getLogger("dockercerts")


def default_trust(platform: Optional[str] = None) -> Trust:
    """Docker's documented rule for ``platform``: ``"replace"`` on Windows, else ``"merge"``.

    ``"merge"``: the system roots plus every ``.crt``. ``"replace"``: with any ``.crt``, only
    those; with none, the system roots.
    """
    return "replace" if _platform(platform) == "windows" else "merge"


_PAIR_READS = 3  # reads of a pair that fails to load before it is reported as broken


class _ContextMaker:
    """Builds and caches each candidate's context; shared by a host's candidates."""

    def __init__(
        self, system: bool, anchors: tuple[bytes, ...], password: Optional[Password]
    ) -> None:
        self._system = system
        self._anchors = anchors
        self._password = password
        self._built: dict[Optional[str], ssl.SSLContext] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return "<_ContextMaker>"

    def get(self, pair: Optional[ClientPair]) -> ssl.SSLContext:
        key = None if pair is None else pair.name
        context = self._built.get(key)
        if context is not None:
            return context
        with self._lock:
            context = self._built.get(key)
            if context is None:
                context = self._build(pair)
                self._built[key] = context
        return context

    def _build(self, pair: Optional[ClientPair]) -> ssl.SSLContext:
        if pair is None:
            return docker_context(system=self._system, anchors=self._anchors)
        secret = _resolve_password(self._password, pair.key)
        for attempt in range(1, _PAIR_READS + 1):
            context = docker_context(system=self._system, anchors=self._anchors)
            try:
                context.load_cert_chain(pair.cert, pair.key, password=lambda: secret or b"")
                return context
            except ssl.SSLError as exc:
                if attempt < _PAIR_READS:
                    # The pair was checked at load time, so it is most likely being rotated:
                    # OpenSSL reads the .cert and the .key apart, one may be from before the
                    # swap and one from after. Once the rotation is over they agree again.
                    continue
                raise KeyPairError(
                    pair.cert,
                    pair.key,
                    f"OpenSSL cannot load the pair ({exc.reason or 'unknown reason'})",
                    "Check that the files did not change since they were loaded",
                ) from None
            except OSError as exc:
                # ssl does not say which of the two files failed: look.
                failed = next((p for p in (pair.key, pair.cert) if not p.is_file()), pair.cert)
                raise CertsDirReadError(
                    failed,
                    pair.cert.parent,
                    exc.strerror or type(exc).__name__,
                    "The file changed or vanished since the directory was loaded; load it again",
                ) from None
        raise AssertionError("unreachable: the last read returns or raises")


@dataclass(frozen=True)
class Candidate:
    """One way to connect: a client pair (or none) and the ``ssl.SSLContext`` that sends it.

    ``pair`` is ``None`` for the candidate without a client certificate. ``context`` is
    built on first use and then cached.
    """

    pair: Optional[ClientPair]
    _maker: _ContextMaker = field(repr=False, compare=False)

    @property
    def name(self) -> Optional[str]:
        """The pair's name (``"client"`` for ``client.cert``), or ``None``."""
        return None if self.pair is None else self.pair.name

    @property
    def context(self) -> ssl.SSLContext:
        """The context for this candidate (Docker's TLS settings, its trust, its pair)."""
        return self._maker.get(self.pair)


@dataclass(frozen=True)
class HostCerts:
    """What Docker would load from one host directory, ready to connect with.

    ``ca_files`` are the ``.crt`` files and ``pairs`` the client pairs, both in Docker's
    order; ``exists`` is ``False`` when there is no directory (system trust, no client
    certificate); ``warnings`` are mistakes Docker passes over silently; ``trust`` is the
    rule in force (``"merge"`` or ``"replace"``).

        >>> hc = load_dir("/nonexistent/reg:5000")
        >>> hc.exists, len(hc.candidates()), hc.candidates()[0].pair is None
        (False, 1, True)
    """

    directory: Path
    exists: bool
    ca_files: tuple[Path, ...]
    pairs: tuple[ClientPair, ...]
    warnings: tuple[CertsWarning, ...]
    trust: Trust
    snapshot: Snapshot = field(repr=False, compare=False)
    ca_certificates: tuple[bytes, ...] = field(repr=False, compare=False, default=())
    _password: Optional[Password] = field(repr=False, compare=False, default=None)
    # Not an init field, so dataclasses.replace() gives the copy a cache of its own.
    _candidates: list[tuple[Candidate, ...]] = field(
        init=False, repr=False, compare=False, default_factory=list
    )

    @property
    def uses_system_roots(self) -> bool:
        """Whether the system roots are trusted (always under ``merge``; without ``.crt``
        files under ``replace``)."""
        return self.trust == "merge" or not self.ca_files

    def candidates(self) -> tuple[Candidate, ...]:
        """One candidate per pair in try order; exactly one, without a certificate, if none.

        The tuple is built once; each candidate's context is built when first used.
        """
        if not self._candidates:
            maker = _ContextMaker(self.uses_system_roots, self.ca_certificates, self._password)
            pairs: tuple[Optional[ClientPair], ...] = self.pairs or (None,)
            # A race here builds two equal tuples; either one is fine to keep.
            self._candidates.append(tuple(Candidate(pair, maker) for pair in pairs))
        return self._candidates[0]


def load_dir(
    path: StrPath,
    *,
    platform: Optional[str] = None,
    trust: Optional[Trust] = None,
    password: Optional[Password] = None,
) -> HostCerts:
    """Read the host directory at ``path`` as Docker does.

    Raises the first :class:`~dockercerts.CertsDirError` in Docker's order; a missing
    directory is not an error. ``trust`` defaults to the platform's rule (see
    :func:`default_trust`); ``password`` unlocks encrypted keys (bytes, text, or a callable
    given the key's path), which Docker itself cannot read.

        >>> certs = load_dir("/etc/docker/certs.d/reg:5000")  # doctest: +SKIP
        >>> [p.name for p in certs.pairs]  # doctest: +SKIP
        ['a-team', 'b-backup']
    """
    certs = _read_dir(path, platform=platform, trust=trust, password=password)
    for warning in certs.warnings:
        log.warning("%s: %s", certs.directory, warning)
    return certs


def _read_dir(
    path: StrPath,
    *,
    platform: Optional[str] = None,
    trust: Optional[Trust] = None,
    password: Optional[Password] = None,
) -> HostCerts:
    """:func:`load_dir` without logging the warnings (the transport logs new ones only)."""
    if trust is None:
        trust = default_trust(platform)
    elif trust not in ("merge", "replace"):
        raise ValueError(f"trust must be 'merge' or 'replace', not {trust!r}")
    found = scan(path, password=password)
    return HostCerts(
        directory=found.directory,
        exists=found.exists,
        ca_files=found.ca_files,
        pairs=found.pairs,
        warnings=found.warnings,
        trust=trust,
        snapshot=found.snapshot,
        ca_certificates=found.ca_der,
        _password=password,
    )


def load(
    host: str,
    *,
    root: Optional[StrPath] = None,
    platform: Optional[str] = None,
    trust: Optional[Trust] = None,
    password: Optional[Password] = None,
) -> HostCerts:
    """Read the host directory of registry ``host`` (``reg:5000``) under ``root``.

    ``root`` defaults to Docker's for the platform (:func:`~dockercerts.certs_root`).

        >>> import dockercerts
        >>> certs = dockercerts.load("reg.example.com:5000")  # doctest: +SKIP
        >>> for candidate in certs.candidates():  # doctest: +SKIP
        ...     print(candidate.name, candidate.context)
    """
    return load_dir(
        host_dir(host, root=root, platform=platform),
        platform=platform,
        trust=trust,
        password=password,
    )
