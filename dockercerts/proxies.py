"""Which proxy a request goes through: httpx's rules, applied per host by the transports.

httpx reads ``HTTPS_PROXY``, ``HTTP_PROXY``, ``ALL_PROXY`` and ``NO_PROXY`` (lower case too)
only for its own default transport, so a client given ``transport=`` uses no proxy at all.
Docker's daemon honours these variables for registry traffic, and a user of the transports
expects what a plain ``httpx.Client`` does; this module restates httpx's rules (checked
against httpx itself by the tests) so each host can be given its proxy:

* ``HTTPS_PROXY`` for ``https://`` URLs (``HTTP_PROXY`` for ``http://``), else ``ALL_PROXY``;
  a value without a scheme means ``http://``;
* ``NO_PROXY``: comma-separated; ``*`` turns every proxy off; ``example.com`` matches it and
  its subdomains, ``.example.com`` subdomains only; IP addresses and ``localhost`` match
  themselves; an entry with ``://`` is a URL pattern (``https://reg:5000``);
* an explicit ``proxy=`` replaces the environment's proxy URL, and ``NO_PROXY`` still applies
  unless ``trust_env=False``: the two do not cancel each other, as they do in httpx.

Pure string rules over a mapping; no sockets.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Optional, Union
from urllib.request import getproxies

import httpx

__all__ = ["ProxyRules", "environment_proxies"]

ProxyArg = Union[str, httpx.URL, httpx.Proxy]


def environment_proxies(environ: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    """``{"http": ..., "https": ..., "all": ..., "no": ...}`` from the environment, as
    :func:`urllib.request.getproxies` reads them (lower case first; on macOS and Windows the
    system settings when no variable is set). ``environ`` replaces ``os.environ``."""
    if environ is None:
        found = getproxies()
    else:
        found = {}
        for name, value in environ.items():
            lower = name.lower()
            if value and lower.endswith("_proxy"):
                found.setdefault(lower[: -len("_proxy")], "")
        for scheme in list(found):
            # Lower case wins, as in urllib.
            found[scheme] = environ.get(f"{scheme}_proxy") or environ.get(
                f"{scheme.upper()}_PROXY", ""
            )
    return {k: v for k, v in found.items() if k in ("http", "https", "all", "no") and v}


@dataclass(frozen=True)
class _Pattern:
    scheme: str  # "" matches any
    host: Optional[re.Pattern[str]]  # None matches any
    port: Optional[int]

    def matches(self, url: httpx.URL) -> bool:
        if self.scheme and self.scheme != url.scheme:
            return False
        if self.host is not None and not self.host.match(url.host):
            return False
        return self.port is None or self.port == url.port


def _pattern(text: str) -> _Pattern:
    url = httpx.URL(text)
    host = url.host
    if not host or host == "*":
        regex = None
    elif host.startswith("*."):
        regex = re.compile(rf"^.+\.{re.escape(host[2:])}$")
    elif host.startswith("*"):
        regex = re.compile(rf"^(.+\.)?{re.escape(host[1:])}$")
    else:
        regex = re.compile(rf"^{re.escape(host)}$")
    return _Pattern("" if url.scheme == "all" else url.scheme, regex, url.port)


def _no_proxy_pattern(entry: str) -> _Pattern:
    if "://" in entry:
        return _pattern(entry)
    if _ip_version(entry) == 4 or entry.lower() == "localhost":
        return _pattern(f"all://{entry}")
    if _ip_version(entry) == 6:
        return _pattern(f"all://[{entry}]")
    return _pattern(f"all://*{entry}")


def _ip_version(entry: str) -> Optional[int]:
    # As httpx: "10.0.0.0/8" counts as an IPv4 entry (and then matches its first address).
    try:
        return ipaddress.ip_address(entry.split("/")[0]).version
    except ValueError:
        return None


def _proxy(value: ProxyArg) -> httpx.Proxy:
    if isinstance(value, httpx.Proxy):
        return value
    text = str(value)
    return httpx.Proxy(text if "://" in text else f"http://{text}")


@dataclass(frozen=True)
class ProxyRules:
    """The proxy for each URL, fixed when a transport is made.

    >>> rules = ProxyRules.make(None, trust_env=True,
    ...                         environ={"HTTPS_PROXY": "proxy:3128", "NO_PROXY": "reg"})
    >>> rules.for_url(httpx.URL("https://other:5000/v2/")).url
    URL('http://proxy:3128')
    >>> rules.for_url(httpx.URL("https://reg:5000/v2/")) is None
    True
    """

    proxies: tuple[tuple[str, httpx.Proxy], ...]  # (scheme or "all", proxy)
    direct: tuple[_Pattern, ...]  # NO_PROXY
    everything_direct: bool = False

    @classmethod
    def make(
        cls,
        proxy: Optional[ProxyArg],
        *,
        trust_env: bool,
        environ: Optional[Mapping[str, str]] = None,
    ) -> ProxyRules:
        """The rules for a transport's ``proxy=`` and ``trust_env=`` (checked now)."""
        if not isinstance(trust_env, bool):
            raise TypeError(f"trust_env must be True or False, not {trust_env!r}")
        env = environment_proxies(environ) if trust_env else {}
        entries = [e.strip() for e in env.get("no", "").split(",") if e.strip()]
        direct = tuple(_no_proxy_pattern(e) for e in entries if e != "*")
        if proxy is not None:
            proxies: tuple[tuple[str, httpx.Proxy], ...] = (("all", _proxy(proxy)),)
        else:
            proxies = tuple((s, _proxy(env[s])) for s in ("https", "http", "all") if s in env)
        return cls(proxies, direct, everything_direct="*" in entries)

    def for_url(self, url: httpx.URL) -> Optional[httpx.Proxy]:
        """The proxy for ``url``, or ``None`` to connect directly."""
        if not self.proxies or self.everything_direct:
            return None
        if any(pattern.matches(url) for pattern in self.direct):
            return None
        for scheme, proxy in self.proxies:
            if scheme in (url.scheme, "all"):
                return proxy
        return None
