"""containerd's ``hosts.toml``, parsed as containerd parses it: pure, no file access.

containerd reads one ``hosts.toml`` per registry folder (``certs.d/<host>/hosts.toml``); it
names the upstream (``server``), the hosts to try first (``[host."https://mirror"]`` tables,
in file order) and each one's TLS material. :func:`parse_hosts_toml` turns the text into a
frozen :class:`HostsFile` with the rules of containerd's ``parseHostsFile`` and
``parseHostConfig`` (``core/remotes/docker/config/hosts.go``), or raises
:class:`~dockercerts.errors.HostsTomlError` with containerd's words. :func:`endpoints` then
fills in what containerd fills in for a registry (the registry itself when there is no
``server``).

    >>> hosts = parse_hosts_toml('''
    ... server = "https://registry-1.docker.io"
    ... [host."https://mirror.example"]
    ...   capabilities = ["pull"]
    ...   ca = "mirror-ca.crt"
    ... ''', "/etc/containerd/certs.d/docker.io")
    >>> for endpoint in hosts.endpoints:
    ...     print(endpoint.url, endpoint.capabilities)
    https://mirror.example/v2 ('pull',)
    https://registry-1.docker.io/v2 ('pull', 'resolve', 'push', 'referrers')
    >>> str(hosts.endpoints[0].ca[0])
    '/etc/containerd/certs.d/docker.io/mirror-ca.crt'

Rules worth knowing (each from containerd's source):

* Top-level ``ca``, ``client``, ``skip_verify``, ``capabilities``, ``header`` apply to the
  ``server`` endpoint only, never to ``[host]`` tables.
* Field names match case-insensitively (go-toml's fallback), but a host counts only when it
  has its own ``[host."..."]`` table header, spelled ``host`` in lower case: hosts written as
  dotted keys are decoded and never used (they are listed in :attr:`HostsFile.ignored`).
* A host name without ``http`` in front gets ``https://``; a path gets ``/v2`` appended
  unless ``override_path = true``; ``capabilities`` default to all four.
* ``client`` is a path (certificate and key in one PEM file), a list of such paths, or a
  list of ``[cert, key]`` pairs. Relative paths are relative to the folder. containerd's
  documentation says an empty key (``["client.pem", ""]``) means the key is in the
  certificate file, but its code joins ``""`` to the folder too and then reads the folder as
  the key, which fails (``unable to read CERT file "<folder>": ... is a directory``): the
  parser keeps that path, so the load fails as containerd's does.
"""

from __future__ import annotations

import ipaddress
import ntpath
import os
import posixpath
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional, Union
from urllib.parse import urlsplit

from ._gowords import go_type, go_value, parse_duration, quote
from ._tomlheaders import table_headers as table_headers
from .errors import HostsTomlError
from .locate import StrPath, split_port

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python < 3.11 only
    import tomli as tomllib

__all__ = [
    "CAPABILITIES",
    "HOSTS_TOML",
    "ClientEntry",
    "Endpoint",
    "HostsFile",
    "Ignored",
    "endpoints",
    "parse_hosts_toml",
]

#: The file containerd reads in a registry's folder.
HOSTS_TOML = "hosts.toml"

#: Every capability, in containerd's order; the default when none is given.
CAPABILITIES = ("pull", "resolve", "push", "referrers")

#: Docker Hub's registry name and the host containerd sends its requests to.
HUB = "docker.io"
HUB_HOST = "registry-1.docker.io"


@dataclass(frozen=True)
class ClientEntry:
    """One ``client`` entry: a certificate file and its key (``None``: in the same file)."""

    cert: Path
    key: Optional[Path] = None


@dataclass(frozen=True)
class Endpoint:
    """One host containerd may talk to for the folder's registry.

    ``key`` is what the file says (the ``[host."..."]`` name, or ``server``; ``""`` for a
    server left out). ``scheme``, ``host`` (``host[:port]``) and ``path`` are containerd's
    reading of it (``host`` is ``""`` until :func:`endpoints` fills in the registry).
    ``ca``, ``client`` and ``skip_verify`` are ``None`` when not set: only an endpoint with
    one of them set gets TLS settings of its own (:attr:`explicit_tls`). ``dial_timeout`` is
    in seconds; ``header`` keeps the file's order.
    """

    key: str
    scheme: str
    host: str
    path: str
    capabilities: tuple[str, ...] = CAPABILITIES
    ca: Optional[tuple[Path, ...]] = None
    client: Optional[tuple[ClientEntry, ...]] = None
    skip_verify: Optional[bool] = None
    override_path: bool = False
    dial_timeout: Optional[float] = None
    header: tuple[tuple[str, tuple[str, ...]], ...] = ()
    is_server: bool = False
    #: True when containerd made this endpoint up: no ``server`` (or no ``hosts.toml``), so
    #: the registry itself (``registry-1.docker.io`` for ``docker.io``).
    implicit: bool = False

    @property
    def url(self) -> str:
        """``scheme://host/path`` as containerd will request it (before ``/<name>/...``)."""
        return f"{self.scheme}://{self.host}{self.path}"

    @property
    def explicit_tls(self) -> bool:
        """Whether containerd builds TLS settings for this endpoint (``ca``, ``client`` or
        ``skip_verify`` set); otherwise it uses its defaults (system roots, no certificate)."""
        return self.ca is not None or self.client is not None or self.skip_verify is not None


@dataclass(frozen=True)
class Ignored:
    """Something in ``hosts.toml`` that containerd passes over without a word."""

    key: str
    reason: str


@dataclass(frozen=True)
class HostsFile:
    """A decoded ``hosts.toml``: the endpoints in the order containerd tries them.

    ``endpoints`` holds the ``[host]`` tables in file order, then the server (always
    present: containerd adds one even without ``server``). ``server`` is the value as
    written (``None``: absent). ``ignored`` lists what containerd silently skips.
    """

    path: Path
    server: Optional[str]
    endpoints: tuple[Endpoint, ...]
    ignored: tuple[Ignored, ...] = ()

    @property
    def hosts(self) -> tuple[Endpoint, ...]:
        """The ``[host]`` endpoints (mirrors), without the server."""
        return tuple(e for e in self.endpoints if not e.is_server)


# --- the struct containerd decodes into ---------------------------------------------------------

# TOML key -> (Go field name, Go type, Python check). go-toml matches a key exactly, then
# in lower case.
_FIELDS: dict[str, tuple[str, str]] = {
    "capabilities": ("Capabilities", "[]string"),
    "ca": ("CACert", "interface {}"),
    "client": ("Client", "interface {}"),
    "skip_verify": ("SkipVerify", "*bool"),
    "header": ("Header", "map[string]interface {}"),
    "override_path": ("OverridePath", "bool"),
    "dial_timeout": ("DialTimeout", "string"),
}
_FILE_FIELDS = {**_FIELDS, "server": ("Server", "string"), "host": ("HostConfigs", "map")}


def _kind(value: object) -> str:
    """go-toml's name for the kind of a TOML value."""
    if isinstance(value, bool):
        return "Bool"
    if isinstance(value, str):
        return "String"
    if isinstance(value, int):
        return "Integer"
    if isinstance(value, float):
        return "Float"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, dict):
        return "Table"
    name = type(value).__name__
    return {"datetime": "DateTime", "date": "LocalDate", "time": "LocalTime"}.get(name, name)


def _mismatch(value: object, struct: str, field: str, gotype: str) -> str:
    return (
        f"toml: cannot decode TOML {_kind(value)} into struct field "
        f"{struct}.{field} of type {gotype}"
    )


def _checked(name: str, value: object, struct: str) -> Optional[str]:
    """``None`` when ``value`` decodes into field ``name``, else go-toml's complaint."""
    field, gotype = _FILE_FIELDS[name]
    ok = {
        "capabilities": isinstance(value, list),
        "skip_verify": isinstance(value, bool),
        "override_path": isinstance(value, bool),
        "dial_timeout": isinstance(value, str),
        "server": isinstance(value, str),
        "header": isinstance(value, dict),
        "host": isinstance(value, dict),
    }.get(name, True)
    if not ok:
        return _mismatch(value, struct, field, gotype)
    if name == "capabilities":
        assert isinstance(value, list)
        bad = next((item for item in value if not isinstance(item, str)), None)
        if bad is not None:
            return f"toml: cannot decode TOML {_kind(bad)} into a Go value of type string"
    return None


def _decode(
    table: Mapping[str, Any], fields: Mapping[str, tuple[str, str]], struct: str, where: str
) -> tuple[dict[str, Any], list[Ignored]]:
    """The fields of ``table`` as go-toml fills a struct: exact key, else lower case; a
    later key for the same field replaces a scalar and merges into a table."""
    found: dict[str, Any] = {}
    ignored: list[Ignored] = []
    for key, value in table.items():
        name = key if key in fields else key.lower() if key.lower() in fields else None
        if name is None:
            ignored.append(Ignored(where + key, "not a hosts.toml setting: containerd ignores it"))
            continue
        problem = _checked(name, value, struct)
        if problem is not None:
            raise _Problem(problem)
        if isinstance(value, dict) and isinstance(found.get(name), dict):
            found[name] = {**found[name], **value}
        else:
            found[name] = value
    return found, ignored


class _Problem(Exception):
    """A reason containerd gives; turned into a :class:`HostsTomlError` with the path."""


# --- the order of the hosts -----------------------------------------------------------------------


def host_order(text: str) -> list[str]:
    """The ``[host."..."]`` names in the order containerd tries them (``getSortedHosts``):
    one per table header ``[host.X...]``, unless the previous header named the same host.

        >>> host_order('[host."a"]\\n[host."a".header]\\n[host."b"]\\n[host."a".header]\\n')
        ['a', 'b', 'a']
    """
    order: list[str] = []
    last: Optional[str] = None
    for array, parts in table_headers(text):
        if array or len(parts) < 2 or parts[0] != "host" or parts[1] == last:
            continue
        last = parts[1]
        order.append(last)
    return order


# --- one endpoint --------------------------------------------------------------------------------


def _go_clean(path: str) -> str:
    """Go's ``path.Clean`` (POSIX ``normpath`` keeps a leading ``//``; Go does not)."""
    cleaned = posixpath.normpath(path)
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    return cleaned


_HOST_FORBIDDEN = set(' "<>\\^`{|}')


def _parse_url(server: str) -> tuple[str, str, str]:
    """``(scheme, host, path)`` as Go's ``url.Parse`` reads them; raises :class:`_Problem`
    with containerd's ``unable to parse server`` message where Go refuses the URL."""

    def refuse(reason: str) -> _Problem:
        return _Problem(f"unable to parse server {server}: parse {quote(server)}: {reason}")

    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in server):
        raise refuse("net/url: invalid control character in URL")
    try:
        parts = urlsplit(server)
    except ValueError as exc:
        raise refuse(str(exc)) from None
    host = parts.netloc.rpartition("@")[2]
    bracket = host.rfind("]")
    colon = host.rfind(":")
    if colon > bracket:
        port = host[colon + 1 :]
        if port and not port.isdigit():
            raise refuse(f"invalid port {quote(':' + port)} after host")
    bad = next((ch for ch in host if ch in _HOST_FORBIDDEN), None)
    if bad is not None:
        raise refuse(f"invalid character {quote(bad)} in host name")
    return parts.scheme.lower(), host, parts.path


def _absolute(path: str, folder: str, windows: bool) -> Path:
    """containerd's ``makeAbsPath``: an absolute path as it is, else joined to the folder
    and cleaned (``filepath.Join``)."""
    module = ntpath if windows else posixpath
    if module.isabs(path):
        return Path(path)
    return Path(module.normpath(module.join(folder, path)))


def _strings(values: list[Any]) -> list[str]:
    """containerd's ``makeStringSlice``: every element a string, else its message."""
    for value in values:
        if not isinstance(value, str):
            raise _Problem(f"unable to cast {go_value(value)} to string")
    return list(values)


def _endpoint(
    key: str, config: Mapping[str, Any], folder: str, windows: bool, is_server: bool
) -> Endpoint:
    """containerd's ``parseHostConfig`` for one host (or the server, ``is_server``)."""
    scheme = host = path = ""
    override = bool(config.get("override_path", False))
    if key:
        server = key if key.startswith("http") else "https://" + key
        scheme, host, path = _parse_url(server)
        if path:
            path = _go_clean(path)
            if not path.endswith("/v2") and not override:
                path += "/v2"
        elif not override:
            path = "/v2"

    capabilities: tuple[str, ...] = CAPABILITIES
    if config.get("capabilities"):
        wanted = set()
        for name in config["capabilities"]:
            if name.lower() not in CAPABILITIES:
                raise _Problem(f"unknown capability {name}")
            wanted.add(name.lower())
        capabilities = tuple(c for c in CAPABILITIES if c in wanted)

    ca: Optional[tuple[Path, ...]] = None
    if "ca" in config:
        value = config["ca"]
        if isinstance(value, str):
            ca = (_absolute(value, folder, windows),)
        elif isinstance(value, list):
            ca = tuple(_absolute(p, folder, windows) for p in _strings(value))
        else:
            raise _Problem(f'invalid type {go_value(value)} for "ca"')

    client: Optional[tuple[ClientEntry, ...]] = None
    if "client" in config:
        client = _client(config["client"], folder, windows)

    header: list[tuple[str, tuple[str, ...]]] = []
    for name, value in config.get("header", {}).items():
        if isinstance(value, str):
            header.append((name, (value,)))
        elif isinstance(value, list):
            header.append((name, tuple(_strings(value))))
        else:
            raise _Problem(f"invalid type {go_value(value)} for header {quote(name)}")

    dial_timeout: Optional[float] = None
    if config.get("dial_timeout"):
        try:
            dial_timeout = parse_duration(config["dial_timeout"]) / 1e9
        except ValueError as exc:
            raise _Problem(str(exc)) from None

    return Endpoint(
        key=key,
        scheme=scheme,
        host=host,
        path=path,
        capabilities=capabilities,
        ca=ca,
        client=client,
        skip_verify=config.get("skip_verify"),
        override_path=override,
        dial_timeout=dial_timeout,
        header=tuple(header),
        is_server=is_server,
    )


def _client(value: object, folder: str, windows: bool) -> Optional[tuple[ClientEntry, ...]]:
    if isinstance(value, str):
        return (ClientEntry(_absolute(value, folder, windows)),)
    if not isinstance(value, list):
        raise _Problem(f'invalid type {go_value(value)} for "client"')
    entries: list[ClientEntry] = []
    for item in value:
        if isinstance(item, str):
            entries.append(ClientEntry(_absolute(item, folder, windows)))
        elif isinstance(item, list):
            pair = [_absolute(p, folder, windows) for p in _strings(item)]
            if len(pair) != 2:
                raise _Problem(f'invalid pair {go_value(item)} for "client"')
            # Taken as containerd takes it: the empty key of the documented ["x.pem", ""]
            # is joined to the folder like any path, so the key read is the folder itself
            # (and fails). Only the single-path forms read the key from the cert file.
            entries.append(ClientEntry(pair[0], pair[1]))
        else:
            raise _Problem(f'invalid type {go_type(item)} for "client"')
    # An empty list appends nothing: containerd then has no client setting at all.
    return tuple(entries) if entries else None


# --- the file ------------------------------------------------------------------------------------


def parse_hosts_toml(
    data: Union[bytes, str],
    folder: StrPath,
    *,
    path: Optional[StrPath] = None,
    platform: Optional[str] = None,
) -> HostsFile:
    """Decode a ``hosts.toml`` as containerd does; raise
    :class:`~dockercerts.errors.HostsTomlError` where containerd fails to.

    ``folder`` is the registry folder the file is in: relative paths are joined to it.
    ``path`` names the file in messages (default ``folder/hosts.toml``); ``platform``
    (``"windows"`` or another) decides what an absolute path is.

        >>> parse_hosts_toml('capabilities = ["fetch"]', "/r")
        Traceback (most recent call last):
        ...
        dockercerts.errors.HostsTomlError: failed to decode /r/hosts.toml: unknown capability fetch
    """
    base = os.fspath(folder)
    where = Path(path) if path is not None else Path(base) / "hosts.toml"
    windows = platform == "windows"
    try:
        return _parse(data, base, where, windows)
    except _Problem as problem:
        raise HostsTomlError(where, str(problem)) from None


def _parse(data: Union[bytes, str], base: str, where: Path, windows: bool) -> HostsFile:
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise _Problem("toml: invalid UTF-8 (hosts.toml must be UTF-8 text)") from None
    else:
        text = data
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _Problem(f"toml: {exc}") from None
    top, ignored = _decode(document, _FILE_FIELDS, "config.hostsFile", "")
    tables: dict[str, Any] = top.pop("host", {})
    order = host_order(text)

    configs: dict[str, dict[str, Any]] = {}
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise _Problem(
                _mismatch(table, "config.hostsFile", "HostConfigs", "config.hostFileConfig")
            )
        configs[name], more = _decode(table, _FIELDS, "config.hostFileConfig", f"host.{name}.")
        ignored += more
        if name not in order:
            ignored.append(
                Ignored(
                    f"host.{name}",
                    'no [host."..."] table header of its own (dotted keys, or "host" not in '
                    "lower case): containerd decodes it and never uses it",
                )
            )

    found = [_endpoint(name, configs.get(name, {}), base, windows, False) for name in order]
    server = top.pop("server", None)
    found.append(_endpoint(server or "", top, base, windows, True))
    return HostsFile(where, server, tuple(found), tuple(ignored))


# --- what containerd fills in --------------------------------------------------------------------


def is_localhost(host: str) -> bool:
    """containerd's ``IsLocalhost``: ``localhost`` or a loopback IP, with or without port."""
    name = split_port(host)[0].strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def endpoints(found: Sequence[Endpoint], registry: str) -> tuple[Endpoint, ...]:
    """The endpoints containerd tries for ``registry`` (``host[:port]`` as in the image
    reference): ``found`` (a :class:`HostsFile`'s, or the loose files' server), with the
    server filled in when it names none; with nothing found, the registry alone
    (``registry-1.docker.io`` for ``docker.io``), as containerd's ``ConfigureHosts`` does.

        >>> [e.url for e in endpoints((), "docker.io")]
        ['https://registry-1.docker.io/v2']
        >>> [e.url for e in endpoints((), "reg:5000")]
        ['https://reg:5000/v2']
    """
    listed = list(found) if found else [_endpoint("", {}, "", False, True)]
    last = listed[-1]
    if last.host == "":
        scheme = "https"
        host = registry
        if registry == HUB:
            host = HUB_HOST
        elif is_localhost(registry):
            # containerd (2.x, no --plain-http) picks https for no port or 443, else http
            # with an HTTPS-first fallback when TLS is configured.
            port = split_port(registry)[1]
            scheme = "https" if port in (None, "443") else "http"
        listed[-1] = replace(
            last, scheme=scheme, host=host, path="/v2", capabilities=CAPABILITIES, implicit=True
        )
    return tuple(listed)
