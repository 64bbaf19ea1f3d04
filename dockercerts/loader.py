"""A host directory as ordered TLS candidates: :func:`load`, :class:`HostCerts`, :class:`Candidate`.

This is where the pure scan meets ``ssl``: :class:`HostCerts` is the scan's result plus the
trust rule, and :meth:`HostCerts.candidates` turns it into one :class:`Candidate` per client
pair, in Docker's try order. A candidate builds its ``ssl.SSLContext`` the first time it is
asked for it and keeps it, so a host whose first certificate works never pays for the others.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import ssl
import threading
import weakref
from collections.abc import Iterator
from dataclasses import InitVar, dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional, TypeVar, Union

from ._anchors import Anchors
from ._certfacts import describe_cas
from .diagnose import NOT_LOGGED, folder_warnings
from .errors import CertsDirError, CertsDirReadError, KeyPairError
from .locate import StrPath, host_dir, resolve_platform
from .scan import (
    MOBY,
    CACertificate,
    CertsWarning,
    ClientPair,
    Dialect,
    Password,
    Scan,
    Snapshot,
    detached,
    open_regular,
    resolve_password,
    scan_detached,
)
from .trust import Trust, check_system, docker_context, truststore_context

__all__ = ["Candidate", "HostCerts", "default_trust", "load", "load_dir"]


log = logging.getLogger("dockercerts")


def default_trust(platform: Optional[str] = None) -> Trust:
    """Docker's documented rule for ``platform``: ``"replace"`` on Windows, else ``"merge"``.

    ``"merge"``: the system roots plus every ``.crt``. ``"replace"``: with any ``.crt``, only
    those; with none, the system roots.
    """
    return "replace" if resolve_platform(platform) == "windows" else "merge"


_PAIR_READS = 3  # reads of a pair that fails to load before it is reported as broken


class Secret:
    """A key password kept out of ``repr()``, copies and dataclass fields."""

    __slots__ = ("_value",)

    def __init__(self, value: Optional[Password]) -> None:
        self._value = value

    @classmethod
    def of(cls, value: Union[Password, Secret, None]) -> Secret:
        return value if isinstance(value, Secret) else cls(value)

    def get(self) -> Optional[Password]:
        return self._value

    def __repr__(self) -> str:
        return "<password>" if self._value is not None else "<no password>"

    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: object) -> Secret:
        # dataclasses.asdict() deep-copies what is not a dataclass: the secret stays one.
        return self

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a key password is not pickled")


class _ContextMaker:
    """Builds and caches each candidate's context; shared by a host's candidates.

    The trust (the folder's ``.crt`` certificates, deduplicated) is prepared once, at the
    first context, and shared by every candidate: for a large bundle it is the expensive
    part (see :mod:`dockercerts._anchors`).
    """

    def __init__(
        self,
        system: bool,
        anchors: tuple[bytes, ...],
        secret: Secret,
        skip_verify: bool = False,
        verifier: str = "openssl",
    ) -> None:
        self._system = system
        self._skip_verify = skip_verify
        self._verifier = verifier
        self._anchors = anchors
        self._trust: Optional[Anchors] = None
        self._secret = secret
        self._built: dict[Optional[str], ssl.SSLContext] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return "<_ContextMaker>"

    def __deepcopy__(self, memo: object) -> _ContextMaker:
        # A shared cache with a lock: dataclasses.asdict(candidate) keeps it as it is.
        return self

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

    def _new_context(self) -> ssl.SSLContext:
        if self._verifier == "truststore":
            context = truststore_context(self._anchors)
        else:
            if self._trust is None:
                self._trust = _prepared(self._anchors)
            context = docker_context(system=self._system, anchors=self._trust)
        if self._skip_verify:
            # containerd's skip_verify (InsecureSkipVerify): no chain, no name check.
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def _build(self, pair: Optional[ClientPair]) -> ssl.SSLContext:
        if pair is None:
            return self._new_context()
        result = _load_pair(self._new_context, pair, self._secret)
        if isinstance(result, ssl.SSLContext):
            return result
        # Raised here, from a frame that holds neither the password nor the error's origin.
        raise result


# Prepared trusts still in use, by the digest of their certificates: a reload of a folder
# whose .crt files did not change (the transport reloads when a client pair rotates) reuses
# the trust of the previous load while any of its contexts is alive, instead of preparing
# the same anchors again (0.17 s for 10,000).
_PREPARED: weakref.WeakValueDictionary[bytes, Anchors] = weakref.WeakValueDictionary()
_PREPARED_LOCK = threading.Lock()


def _prepared(anchors: tuple[bytes, ...]) -> Anchors:
    """The :class:`Anchors` for ``anchors``, shared with any live one of the same content."""
    key = hashlib.sha256(b"".join(anchors)).digest()  # DER is self-delimiting
    with _PREPARED_LOCK:
        found = _PREPARED.get(key)
    if found is not None:
        return found
    made = Anchors(anchors)  # outside the lock: other hosts need not wait for this one
    with _PREPARED_LOCK:
        return _PREPARED.setdefault(key, made)


def _load_pair(
    make: Callable[[], ssl.SSLContext], pair: ClientPair, secret: Secret
) -> Union[ssl.SSLContext, CertsDirError]:
    """A context with ``pair`` loaded, or the error to raise (returned, not raised: this
    frame holds the password, and a raised error's traceback would keep it)."""
    password = resolve_password(secret.get(), pair.key)
    for attempt in range(1, _PAIR_READS + 1):
        context = make()
        try:
            with _opened(pair) as (cert, key):
                context.load_cert_chain(cert, key, password=lambda: password or b"")
            return context
        except CertsDirError as exc:
            return detached(exc)
        except ssl.SSLError as exc:
            if attempt < _PAIR_READS:
                # The pair was checked at load time, so it is most likely being rotated:
                # OpenSSL reads the .cert and the .key apart, one may be from before the
                # swap and one from after. Once the rotation is over they agree again.
                continue
            return KeyPairError(
                pair.cert,
                pair.key,
                f"OpenSSL cannot load the pair ({exc.reason or 'unknown reason'})",
                "Check that the files did not change since they were loaded",
            )
        except OSError as exc:
            # ssl does not say which of the two files failed: look.
            failed = next((p for p in (pair.key, pair.cert) if not p.is_file()), pair.cert)
            return CertsDirReadError(
                failed,
                pair.cert.parent,
                exc.strerror or type(exc).__name__,
                "The file changed or vanished since the directory was loaded; load it again",
            )
    raise AssertionError("unreachable: the last read returns")


@contextlib.contextmanager
def _opened(pair: ClientPair) -> Iterator[tuple[str, str]]:
    """Paths for OpenSSL to read the pair from, each checked to be a regular file.

    OpenSSL opens files by name, so a ``.key`` replaced by a FIFO after the load would block
    it. Where the platform has ``/dev/fd``, OpenSSL is given the descriptor checked here
    (``/dev/fd/N`` opens the very file behind it), so nothing can be swapped in between;
    elsewhere it gets the names, checked a moment before.
    """
    directory = pair.cert.parent
    cert_fd = open_regular(pair.cert, directory)
    try:
        key_fd = open_regular(pair.key, directory)
    except BaseException:
        os.close(cert_fd)
        raise
    try:
        paths = (f"/dev/fd/{cert_fd}", f"/dev/fd/{key_fd}")
        if not all(os.path.exists(p) for p in paths):
            paths = (str(pair.cert), str(pair.key))
        yield paths
    finally:
        os.close(cert_fd)
        os.close(key_fd)


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
    certificate); ``warnings`` are mistakes Docker passes over silently, the complete
    diagnosis ``dockercerts inspect`` shows (the scan's own, then
    :func:`dockercerts.diagnose.folder_warnings`); ``trust`` is the rule in force
    (``"merge"`` or ``"replace"``). ``ca_details`` describes each certificate of the
    ``.crt`` files (:class:`~dockercerts.scan.CACertificate`), as read by the one scan.

    With ``runtime="containerd"`` it is one endpoint's TLS settings: ``endpoint`` is its URL
    (``None``: the folder names no endpoint for the host), ``ca_files`` its ``ca`` files,
    ``pairs`` its ``client`` entries in file order, and ``skip_verify`` its
    ``skip_verify`` (the server's certificate is then not checked at all).

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
    #: The ``.crt`` file of each of ``ca_certificates``, in the same order.
    ca_sources: tuple[Path, ...] = field(repr=False, compare=False, default=())
    skip_verify: bool = False
    endpoint: Optional[str] = None
    #: Where the system roots come from: ``"openssl"`` or ``"truststore"`` (see ``system=``).
    system: str = "openssl"
    # Not a field: dataclasses.asdict() and fields() never see the password. It is kept
    # under the same name, wrapped, which is what dataclasses.replace() passes on to the copy.
    _password: InitVar[Union[Password, Secret, None]] = None
    # Not an init field, so dataclasses.replace() gives the copy a cache of its own.
    _candidates: list[tuple[Candidate, ...]] = field(
        init=False, repr=False, compare=False, default_factory=list
    )

    def __post_init__(self, _password: Union[Password, Secret, None]) -> None:
        object.__setattr__(self, "_password", Secret.of(_password))

    @property
    def ca_details(self) -> tuple[CACertificate, ...]:
        """Each of ``ca_certificates`` described (:class:`~dockercerts.scan.CACertificate`),
        from the bytes the one scan read; computed when asked (reports ask, loads do not)."""
        return describe_cas(self.ca_sources, self.ca_certificates)

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
            secret: Secret = self.__dict__["_password"]
            maker = _ContextMaker(
                self.uses_system_roots,
                self.ca_certificates,
                secret,
                self.skip_verify,
                self.system,
            )
            pairs: tuple[Optional[ClientPair], ...] = self.pairs or (None,)
            # A race here builds two equal tuples; either one is fine to keep.
            self._candidates.append(tuple(Candidate(pair, maker) for pair in pairs))
        return self._candidates[0]

    def trust_only(self) -> HostCerts:
        """The same folder without its client pairs: its trust alone, and one candidate that
        sends no client certificate. What a server answers it is what Docker gets when Go
        finds no pair to send (see :mod:`dockercerts.gochoice`).

            >>> [c.name for c in load_dir("/nonexistent/reg:5000").trust_only().candidates()]
            [None]
        """
        return replace(self, pairs=()) if self.pairs else self


def load_dir(
    path: StrPath,
    *,
    platform: Optional[str] = None,
    trust: Optional[Trust] = None,
    password: Optional[Password] = None,
    system: str = "openssl",
) -> HostCerts:
    """Read the host directory at ``path`` as Docker does.

    Raises the first :class:`~dockercerts.CertsDirError` in Docker's order; a missing
    directory is not an error. ``trust`` defaults to the platform's rule (see
    :func:`default_trust`); ``password`` unlocks encrypted keys (bytes, text, or a callable
    given the key's path), which Docker itself cannot read. Only regular files are read,
    each up to its size cap (:data:`dockercerts.scan.MAX_CA_FILE_SIZE`,
    :data:`dockercerts.scan.MAX_PAIR_FILE_SIZE`). ``system="truststore"`` verifies with the
    platform's verifier plus the folder's ``.crt`` roots (see :func:`load`).

        >>> certs = load_dir("/etc/docker/certs.d/reg:5000")  # doctest: +SKIP
        >>> [p.name for p in certs.pairs]  # doctest: +SKIP
        ['a-team', 'b-backup']
    """
    result = with_system(gather(path, platform, trust, password), system, trust)
    del password  # the traceback of an error raised below keeps this frame
    certs = unwrap(result)
    _log_warnings(certs)
    return certs


def _log_warnings(certs: HostCerts) -> None:
    for warning in certs.warnings:
        if warning.code not in NOT_LOGGED:
            log.warning("%s: %s", certs.directory, warning)


def _read_dir(
    path: StrPath,
    *,
    platform: Optional[str] = None,
    trust: Optional[Trust] = None,
    password: Optional[Password] = None,
    dialect: Dialect = MOBY,
) -> HostCerts:
    """:func:`load_dir` without logging the warnings (the transport logs new ones only)."""
    result = gather(path, platform, trust, password, dialect)
    del password  # the traceback of an error raised below keeps this frame
    return unwrap(result)


def with_system(
    result: Union[HostCerts, BaseException], system: str, trust: Optional[Trust]
) -> Union[HostCerts, BaseException]:
    """``result`` verifying with ``system``'s roots, or the error to raise for a bad choice.

    truststore always trusts the platform's roots, so it goes with ``"merge"`` only.
    """
    if isinstance(result, BaseException) or system == "openssl":
        return result
    try:
        check_system(system)
    except (ValueError, ImportError) as exc:
        return exc
    if trust == "replace":
        return ValueError(
            "trust='replace' keeps the system roots out, and system='truststore' always "
            "trusts them: leave trust unset (or 'merge')"
        )
    return replace(result, system=system, trust="merge")


_T = TypeVar("_T")


def unwrap(result: Union[_T, BaseException]) -> _T:
    """The result, or its error raised from here: a frame that holds no secret."""
    if isinstance(result, BaseException):
        raise result
    return result


def gather(
    path: StrPath,
    platform: Optional[str],
    trust: Optional[Trust],
    password: Optional[Password],
    dialect: Dialect = MOBY,
) -> Union[HostCerts, BaseException]:
    """The loaded folder, or the error to raise (returned: this frame holds the password)."""
    if trust is None:
        # Go merges the system pool with the .crt files on every platform containers/image
        # runs on; only Docker documents the Windows "replace" rule.
        trust = default_trust(platform) if dialect is MOBY else "merge"
    elif trust not in ("merge", "replace"):
        return ValueError(f"trust must be 'merge' or 'replace', not {trust!r}")
    found = scan_detached(path, password, None, dialect)
    if not isinstance(found, Scan):
        return found
    return HostCerts(
        directory=found.directory,
        exists=found.exists,
        ca_files=found.ca_files,
        pairs=found.pairs,
        warnings=found.warnings + folder_warnings(found, dialect),
        trust=trust,
        snapshot=found.snapshot,
        ca_certificates=found.ca_der,
        ca_sources=found.ca_sources,
        _password=password,
    )


def load(
    host: str,
    *,
    root: Optional[StrPath] = None,
    platform: Optional[str] = None,
    trust: Optional[Trust] = None,
    password: Optional[Password] = None,
    runtime: str = "docker",
    cert_dir: Optional[StrPath] = None,
    system: str = "openssl",
) -> HostCerts:
    """Read the host directory of registry ``host`` (``reg:5000``) as ``runtime`` does.

    ``root`` defaults to the runtime's roots (:func:`~dockercerts.certs_root`; podman and
    containerd search several, see :func:`dockercerts.runtimes.certs_roots`); given, it is
    the only root. ``runtime="podman"`` reads the first folder that exists in its search
    list with containers/image's rules; ``cert_dir`` is podman's ``--cert-dir``, one folder
    for every host. ``runtime="containerd"`` reads ``hosts.toml`` (or the loose files) and
    returns the TLS settings of the endpoint that is ``host`` itself
    (:mod:`dockercerts.containerd` has every endpoint).

    ``system`` is where the system roots come from: ``"openssl"`` (OpenSSL's paths, as Go
    on Linux) or ``"truststore"`` (the platform's verifier through the ``truststore``
    package: the Keychain on macOS, the certificate store on Windows, as Go and Docker
    Desktop verify there; an opt-in extra, ``pip install 'dockercerts[truststore]'``). Either
    way the folder's CA files are added; dockercerts never changes ``ssl`` globally.

        >>> import dockercerts
        >>> certs = dockercerts.load("reg.example.com:5000")  # doctest: +SKIP
        >>> for candidate in certs.candidates():  # doctest: +SKIP
        ...     print(candidate.name, candidate.context)
        >>> dockercerts.load("reg:5000", runtime="containerd").endpoint  # doctest: +SKIP
        'https://reg:5000/v2'
    """
    if runtime != "docker" or cert_dir is not None:
        from ._layouts import gather_for  # the other runtimes read through that module

        result = gather_for(host, runtime, root, cert_dir, platform, trust, password)
    else:
        result = gather(host_dir(host, root=root, platform=platform), platform, trust, password)
    result = with_system(result, system, trust)
    del password  # the traceback of an error raised below keeps this frame
    certs = unwrap(result)
    _log_warnings(certs)
    return certs
