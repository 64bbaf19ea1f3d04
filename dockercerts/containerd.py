"""A registry's folder read as containerd reads it: ``hosts.toml``, or the loose files.

containerd (ctr, the CRI plugin on Kubernetes nodes, nerdctl, Docker's containerd image
store) finds a registry's folder in its roots (:mod:`dockercerts.runtimes`), then reads
``hosts.toml`` there (:mod:`dockercerts.hoststoml`). Without one, or with an empty one, or
with one it cannot decode (logged, ``failed to decode ...``), it reads the folder's files in
Docker's layout with rules of its own (``loadCertFiles``):

* sub-folders are skipped;
* a ``.cert`` without its ``.key`` is read as one PEM file holding both;
* a ``.key`` without its ``.cert`` is ignored;
* a ``.crt`` without a usable certificate is an error (``unable to load CA cert``).

Every endpoint's TLS files are then read (``ConfigureHosts``): ``ca`` files are added to the
system roots, ``client`` entries become client certificates in file order, and the first
file that cannot be used fails the whole lookup with containerd's message
(:class:`~dockercerts.errors.EndpointTLSError`).

:func:`load_hosts` returns all of it as a :class:`ContainerdHost`; each endpoint's TLS is a
:class:`~dockercerts.HostCerts`, one candidate per client entry, like a Docker folder's.

    >>> import dockercerts.containerd as containerd
    >>> found = containerd.load_hosts("reg:5000", root="/nonexistent")
    >>> found.folder is None, [e.endpoint.url for e in found.endpoints]
    (True, ['https://reg:5000/v2'])
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional, Union

from cryptography import x509

from ._gowords import key_pair_problem, os_error, quote
from ._loosefiles import loose_files
from ._pem import ca_certificates, pem_blocks
from .diagnose import missing_folder, no_endpoint_warning
from .errors import CertsDirError, CertsDirReadError, EndpointTLSError, HostsTomlError
from .hoststoml import (
    HOSTS_TOML,
    HUB,
    HUB_HOST,
    ClientEntry,
    Endpoint,
    HostsFile,
    Ignored,
    endpoints,
    parse_hosts_toml,
)
from .loader import HostCerts, unwrap
from .locate import StrPath, resolve_platform, split_port
from .runtimes import Lookup, Place, certs_roots, places
from .scan import (
    CertsWarning,
    ClientPair,
    Password,
    Reraise,
    Snapshot,
    check_pair,
    detached,
    pair_warnings,
    permission_warning,
    read_capped,
    snapshot,
    vanished,
)
from .trust import Trust

__all__ = ["ContainerdHost", "EndpointCerts", "RequestView", "load_hosts", "same_host"]

log = logging.getLogger("dockercerts")


@dataclass(frozen=True)
class EndpointCerts:
    """One endpoint of a registry and the TLS it is reached with."""

    endpoint: Endpoint
    certs: HostCerts


@dataclass(frozen=True)
class ContainerdHost:
    """What containerd reads for ``registry``: where (``lookup``, ``folder``), from which
    file (``hosts_file``; ``hosts_error`` when it could not be decoded and the loose files
    were read instead), and the ``endpoints`` it tries, in order, each with its TLS.
    ``ignored`` lists what containerd passed over without a word.
    """

    registry: str
    lookup: Lookup
    folder: Optional[Path]
    hosts_file: Optional[HostsFile]
    hosts_error: Optional[HostsTomlError]
    endpoints: tuple[EndpointCerts, ...]
    ignored: tuple[Ignored, ...] = ()
    snapshot: Snapshot = field(default=Snapshot(()), repr=False, compare=False)

    @property
    def source(self) -> str:
        """``"hosts.toml"``, ``"files"`` (the loose ``.crt``/``.cert``/``.key`` files) or
        ``"none"`` (no folder: containerd's defaults)."""
        if self.hosts_file is not None:
            return HOSTS_TOML
        return "files" if self.folder is not None else "none"

    def endpoint_for(self, host: str) -> Optional[EndpointCerts]:
        """The first endpoint that is ``host`` (``host[:port]``; no port: 443), if any.

        A request to that host is made with that endpoint's TLS settings.
        """
        return next((e for e in self.endpoints if same_host(e.endpoint, host)), None)

    def warnings_for(self, host: str) -> tuple[CertsWarning, ...]:
        """Everything wrong with the folder for requests to ``host``: ``host-directory-missing``
        when there is none, each endpoint's warnings once, in endpoint order, then
        ``no-endpoint-for-host`` when no endpoint is at ``host`` itself. What
        ``dockercerts inspect --runtime containerd`` shows.

            >>> found = load_hosts("reg.example:5000", root="/nonexistent")
            >>> [w.code for w in found.warnings_for("reg.example:5000")]
            ['host-directory-missing']
        """
        found: list[CertsWarning] = []
        if self.folder is None and self.lookup.looked:  # containerd's defaults apply
            found.append(missing_folder("containerd", self.lookup.looked[0].place.path))
        seen: set[tuple[str, str, str]] = set()
        for entry in self.endpoints:
            for w in entry.certs.warnings:
                if (w.code, str(w.path), w.message) not in seen:
                    seen.add((w.code, str(w.path), w.message))
                    found.append(w)
        if self.folder is not None and self.endpoint_for(host) is None:
            found.append(
                no_endpoint_warning(self.folder, host, [e.endpoint.url for e in self.endpoints])
            )
        return tuple(found)


def _canonical(host: str, default_port: int) -> tuple[str, int]:
    name, port = split_port(host)
    number = int(port) if port and port.isdigit() else default_port
    name = name.lower()
    if name == HUB:
        name = HUB_HOST
    return name, number


def same_host(endpoint: Endpoint, host: str) -> bool:
    """Whether ``endpoint`` is reached at ``host`` (``host[:port]``, HTTPS), so a request to
    ``host`` uses its TLS settings. ``docker.io`` is ``registry-1.docker.io``, as containerd
    has it.

        >>> from dockercerts.hoststoml import endpoints
        >>> same_host(endpoints(None, "docker.io")[0], "registry-1.docker.io:443")
        True
    """
    if not endpoint.host:
        return False
    # An http:// endpoint is tried over HTTPS first on the same port when it has TLS settings.
    default = 443 if endpoint.scheme == "https" else 80
    return _canonical(endpoint.host, default) == _canonical(host, 443)


# --- reading files as containerd does -----------------------------------------------------------


class _Unreadable(Exception):
    """Go's error text for a file that cannot be read."""


def _go_read(path: Path, folder: Path) -> bytes:
    """``os.ReadFile`` as containerd calls it, with dockercerts' limits (regular files only,
    capped): raises :class:`_Unreadable` with Go's words."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise _Unreadable(os_error("open", path, exc)) from None
    if stat.S_ISDIR(mode):
        raise _Unreadable(os_error("read", path, "is a directory"))
    try:
        return read_capped(path, folder)
    except CertsDirReadError as exc:
        raise _Unreadable(f"open {path}: {exc.problem}") from None


def _stat_entry(path: Path) -> tuple[object, ...]:
    try:
        st = os.stat(path)
    except OSError as exc:
        return ("ref", str(path), type(exc).__name__)
    return ("ref", str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _snapshot(folder: Path, referenced: Sequence[Path]) -> Snapshot:
    """The folder's files, ``hosts.toml`` and every file it names (they may live elsewhere)."""
    entries = (*snapshot(folder).entries, _stat_entry(folder / HOSTS_TOML))
    return Snapshot(entries + tuple(_stat_entry(p) for p in referenced))


def resnapshot(folder: Path, previous: Snapshot) -> Snapshot:
    """:func:`_snapshot` again, for the files the previous read named: comparing the two says
    whether anything containerd would read changed."""
    referenced = [Path(str(e[1])) for e in previous.entries[1:] if e[:1] == ("ref",) and len(e) > 1]
    seen = {folder / HOSTS_TOML}
    unique = []
    for path in referenced:
        if path not in seen:
            seen.add(path)
            unique.append(path)
    return _snapshot(folder, unique)


def _pair_name(entry: ClientEntry, folder: Path, taken: set[str]) -> str:
    try:
        name = str(entry.cert.relative_to(folder))
    except ValueError:
        name = str(entry.cert)
    unique, number = name, 2
    while unique in taken:
        unique = f"{name}#{number}"
        number += 1
    taken.add(unique)
    return unique


def _client_pair(
    entry: ClientEntry,
    name: str,
    folder: Path,
    url: str,
    password: Optional[Password],
) -> tuple[ClientPair, list[x509.Certificate]]:
    """One ``client`` entry read as containerd reads it (``tls.X509KeyPair``)."""
    files = [entry.cert] + ([entry.key] if entry.key is not None else [])
    data = []
    for path in files:
        try:
            data.append(_go_read(path, folder))
        except _Unreadable as exc:
            fix = "Check the path in hosts.toml (relative paths are relative to the folder)"
            if path == folder and entry.key == folder:
                fix = (
                    'containerd joins the empty key of ["cert", ""] to the folder and reads '
                    f'the folder as the key: write client = "{entry.cert.name}" (one file '
                    "holding certificate and key) instead"
                )
            raise EndpointTLSError(
                f"unable to read CERT file {quote(str(path))}: {exc}",
                path,
                endpoint=url,
                fix=fix,
            ) from None
    key_path = entry.key if entry.key is not None else entry.cert
    problem = key_pair_problem(
        [kind for kind, _, _ in pem_blocks(data[0])],
        [kind for kind, _, _ in pem_blocks(data[-1])],
    )
    data.clear()  # no key bytes kept in this frame
    if problem is not None:
        raise EndpointTLSError(
            f"failed to load X509 key pair: {problem}",
            entry.cert,
            endpoint=url,
            fix="A client entry is a PEM certificate and its key: one file holding both, or a "
            "[cert, key] pair",
        )
    try:
        pair, chain = check_pair(name, entry.cert, key_path, folder, password)
    except CertsDirError as exc:
        text = str(exc)
        reason = (
            "tls: private key does not match public key"
            if "does not match" in text
            else "tls: failed to parse private key"
        )
        raise EndpointTLSError(
            f"failed to load X509 key pair: {reason}",
            entry.cert,
            endpoint=url,
            fix=getattr(exc, "fix", "") or "Check the certificate and key files",
        ) from None
    return pair, chain


def _endpoint_certs(
    endpoint: Endpoint,
    folder: Path,
    exists: bool,
    trust: Trust,
    password: Optional[Password],
    shared: list[CertsWarning],
    snap: Snapshot,
) -> HostCerts:
    """containerd's ``updateTLSConfigFromHost`` for one endpoint, as a :class:`HostCerts`."""
    url = endpoint.url
    anchors: list[bytes] = []
    parsed: dict[bytes, datetime] = {}
    for path in endpoint.ca or ():
        try:
            data = _go_read(path, folder)
        except _Unreadable as exc:
            raise EndpointTLSError(
                f"unable to read CA cert {quote(str(path))}: {exc}",
                path,
                endpoint=url,
                fix="Check the path in hosts.toml (relative paths are relative to the folder)",
            ) from None
        found = ca_certificates(data, parsed)
        if not found:
            raise EndpointTLSError(
                f"unable to load CA cert {quote(str(path))}",
                path,
                endpoint=url,
                fix="The file holds no PEM certificate: save the registry's CA in PEM form "
                "(-----BEGIN CERTIFICATE-----)",
            )
        anchors.extend(found)
    pairs: list[ClientPair] = []
    warnings = list(shared)
    taken: set[str] = set()
    now = datetime.now(timezone.utc)
    for entry in endpoint.client or ():
        pair, chain = _client_pair(entry, _pair_name(entry, folder, taken), folder, url, password)
        pairs.append(pair)
        warnings.extend(pair_warnings(pair, chain, now))
        perm = permission_warning(pair.key)
        if perm is not None:
            warnings.append(perm)
    if endpoint.skip_verify:
        warnings.append(
            CertsWarning(
                "skip-verify",
                folder / HOSTS_TOML,
                f"skip_verify = true for {url}: the server's certificate and name are NOT "
                "checked; anyone on the path can read and change the traffic",
                'Remove skip_verify and add the registry\'s CA with ca = "..."',
            )
        )
    return HostCerts(
        directory=folder,
        exists=exists,
        ca_files=tuple(endpoint.ca or ()),
        pairs=tuple(pairs),
        warnings=tuple(warnings),
        trust=trust,
        snapshot=snap,
        ca_certificates=tuple(anchors),
        skip_verify=bool(endpoint.skip_verify),
        endpoint=url,
        _password=password,
    )


@dataclass(frozen=True)
class _Read:
    hosts_file: Optional[HostsFile]
    hosts_error: Optional[HostsTomlError]
    endpoints: tuple[EndpointCerts, ...]
    ignored: tuple[Ignored, ...]
    snapshot: Snapshot


def _read_folder(
    folder: Path,
    registry: str,
    exists: bool,
    platform: str,
    trust: Trust,
    password: Optional[Password],
) -> Union[_Read, BaseException]:
    """The folder read as containerd does, or the error to raise (returned: this frame holds
    the password, and a raised error's traceback would keep it)."""
    try:
        return _read_folder_raising(folder, registry, exists, platform, trust, password)
    except CertsDirError as exc:
        return detached(exc)
    except Reraise as wrapper:
        return wrapper.error


def _read_folder_raising(
    folder: Path,
    registry: str,
    exists: bool,
    platform: str,
    trust: Trust,
    password: Optional[Password],
) -> _Read:
    toml_path = folder / HOSTS_TOML
    before = (*snapshot(folder).entries, _stat_entry(toml_path))
    data = b""
    try:
        data = _go_read(toml_path, folder) if exists else b""
    except _Unreadable as exc:
        if not vanished(toml_path):
            raise CertsDirReadError(
                toml_path,
                folder,
                str(exc),
                "Fix the file's permissions or type: containerd fails the pull here",
            ) from None
    hosts_file: Optional[HostsFile] = None
    hosts_error: Optional[HostsTomlError] = None
    ignored: list[Ignored] = []
    shared: list[CertsWarning] = []
    found: Sequence[Endpoint] = ()
    if data:
        try:
            hosts_file = parse_hosts_toml(data, folder, path=toml_path, platform=platform)
            found = hosts_file.endpoints
            ignored += hosts_file.ignored
        except HostsTomlError as exc:
            hosts_error = exc
            shared.append(
                CertsWarning(
                    "hosts-toml-unusable",
                    toml_path,
                    f"containerd cannot decode it ({exc.reason}) and reads the folder's "
                    ".crt/.cert/.key files instead",
                    "Fix hosts.toml (see containerd's docs/hosts.md)",
                )
            )
    if hosts_file is None and exists:
        server, more = loose_files(folder, registry)
        found = (server,)
        ignored += more
    resolved = endpoints(found, registry)
    referenced: list[Path] = []
    for endpoint in resolved:
        referenced += list(endpoint.ca or ())
        for entry in endpoint.client or ():
            referenced += [entry.cert] + ([entry.key] if entry.key is not None else [])
    refs = tuple(_stat_entry(p) for p in dict.fromkeys(referenced))
    snap = Snapshot(before + refs)
    certs = tuple(
        EndpointCerts(e, _endpoint_certs(e, folder, exists, trust, password, shared, snap))
        for e in resolved
    )
    return _Read(hosts_file, hosts_error, certs, tuple(ignored), snap)


def _lookup(
    host: str,
    root: Optional[StrPath],
    platform: str,
) -> tuple[Lookup, tuple[Place, ...]]:
    from ._search import search

    roots = certs_roots("containerd", platform=platform) if root is None else (Path(root),)
    found = places("containerd", [host], roots, platform=platform)
    return search("containerd", found), found


def load_hosts(
    host: str,
    *,
    root: Optional[StrPath] = None,
    platform: Optional[str] = None,
    trust: Optional[Trust] = None,
    password: Optional[Password] = None,
) -> ContainerdHost:
    """Everything containerd reads for registry ``host`` (``host[:port]`` as written in the
    image reference): the folder, ``hosts.toml`` and every endpoint with its TLS.

    ``root`` is the one root to search (``ctr --hosts-dir``); by default the CRI plugin's
    roots (:func:`~dockercerts.runtimes.certs_roots`). ``trust`` defaults to ``"merge"``
    (containerd adds ``ca`` files to the system roots on every platform). Raises the first
    :class:`~dockercerts.CertsDirError` containerd would fail with.

        >>> found = load_hosts("docker.io", root="/etc/containerd/certs.d")  # doctest: +SKIP
        >>> for e in found.endpoints:  # doctest: +SKIP
        ...     print(e.endpoint.url, [p.name for p in e.certs.pairs])
        https://mirror.internal/v2 ['mirror-client.pem']
        https://registry-1.docker.io/v2 []
    """
    result = _load(host, root, platform, trust, password)
    del password  # the traceback of an error raised below keeps this frame
    return unwrap(result)


def _load(
    host: str,
    root: Optional[StrPath],
    platform: Optional[str],
    trust: Optional[Trust],
    password: Optional[Password],
) -> Union[ContainerdHost, BaseException]:
    plat = resolve_platform(platform)
    if trust is not None and trust not in ("merge", "replace"):
        return ValueError(f"trust must be 'merge' or 'replace', not {trust!r}")
    lookup, found = _lookup(host, root, plat)
    folder = (lookup.chosen or found[0]).path
    result = _read_folder(folder, host, lookup.chosen is not None, plat, trust or "merge", password)
    if isinstance(result, BaseException):
        return result
    _log(result, folder)
    return ContainerdHost(
        registry=host,
        lookup=lookup,
        folder=lookup.folder,
        hosts_file=result.hosts_file,
        hosts_error=result.hosts_error,
        endpoints=result.endpoints,
        ignored=result.ignored,
        snapshot=result.snapshot,
    )


def _log(result: _Read, folder: Path) -> None:
    if result.hosts_error is not None:
        # containerd logs this at error level and carries on with the loose files.
        log.error("%s", result.hosts_error)


@dataclass(frozen=True)
class RequestView:
    """What a request to ``request_host`` gets from a registry's folder: ``certs``, the TLS
    of the endpoint at that host (when the folder names none there: the system roots and no
    client certificate, with a warning), ``own`` (that endpoint's index in ``endpoints``,
    ``None`` when there is none), and every endpoint of the folder, for routing
    (:mod:`dockercerts.routing`)."""

    registry: str
    certs: HostCerts
    own: Optional[int]
    endpoints: tuple[EndpointCerts, ...]


def read_view(
    folder: Path,
    exists: bool,
    registry: str,
    request_host: str,
    *,
    platform: str,
    trust: Optional[Trust],
    password: Optional[Password],
) -> Union[RequestView, BaseException]:
    """What a request to ``request_host`` gets from ``folder`` (read for ``registry``), with
    every endpoint of the folder (a :class:`RequestView`). Returns the error instead of
    raising it (this frame holds the password)."""
    result = _read_folder(folder, registry, exists, platform, trust or "merge", password)
    if isinstance(result, BaseException):
        return result
    # No log line here: the transport logs the folder's warnings, once per change.
    own = next(
        (i for i, e in enumerate(result.endpoints) if same_host(e.endpoint, request_host)), None
    )
    if own is not None:
        return RequestView(registry, result.endpoints[own].certs, own, result.endpoints)
    note = no_endpoint_warning(folder, request_host, [e.endpoint.url for e in result.endpoints])
    first = result.endpoints[0].certs
    certs = HostCerts(
        directory=folder,
        exists=exists,
        ca_files=(),
        pairs=(),
        warnings=(*first.warnings, note),
        trust=trust or "merge",
        snapshot=result.snapshot,
        endpoint=None,
        _password=password,
    )
    return RequestView(registry, certs, None, result.endpoints)
