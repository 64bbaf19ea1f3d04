"""Which roots a candidate trusts, and Docker's TLS settings for every context.

System roots come from OpenSSL's default verify paths, the ones Go reads too, so
``SSL_CERT_FILE`` and ``SSL_CERT_DIR`` are honoured exactly as Docker honours them. When
neither variable is set and the platform's hashed certificate folder holds at least as many
certificates as its bundle file, only the folder is used: OpenSSL looks certificates up in a
folder lazily at verification time, while a bundle file is parsed whole for every context
(about 20 ms). Where the platform has no store at all, certifi's Mozilla bundle is used.
"""

from __future__ import annotations

import logging
import os
import re
import ssl
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Optional, Union

import certifi

from ._anchors import Anchors, as_anchors

__all__ = [
    "DOCKER_CIPHERS",
    "SYSTEMS",
    "Anchors",
    "SystemTrust",
    "Trust",
    "check_system",
    "docker_context",
    "system_trust",
    "truststore_context",
]

log = logging.getLogger("dockercerts")

Trust = Literal["merge", "replace"]

#: Where system roots come from: OpenSSL's paths (the default, what Go reads on Linux), or
#: the platform's own verifier through truststore (macOS Keychain, Windows CryptoAPI; on
#: Linux OpenSSL's paths again), as Go and Docker Desktop verify there.
SYSTEMS = ("openssl", "truststore")

#: Docker's TLS 1.2 suites (docker/go-connections tlsconfig): ECDHE with AES-GCM or
#: ChaCha20-Poly1305. TLS 1.3 suites are not configurable, in Go or here.
DOCKER_CIPHERS = ":".join(
    [
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    ]
)

# Go's x509 treats every certificate in the pool as an anchor, intermediates and
# self-signed leaves included; OpenSSL needs this flag to do the same. Python 3.9 lacks
# the constant, not the flag.
_PARTIAL_CHAIN = getattr(ssl, "VERIFY_X509_PARTIAL_CHAIN", 0x80000)
_HASHED_NAME = re.compile(r"[0-9a-f]{8}\.[0-9]+\Z")


@dataclass(frozen=True)
class SystemTrust:
    """Where the system roots come from: ``cafile`` and/or ``capath``, and why.

    ``source`` is one of ``"environment"`` (``SSL_CERT_FILE``/``SSL_CERT_DIR`` set),
    ``"capath"`` (the platform's hashed folder alone: lazy, cheap), ``"openssl"`` (the
    platform's bundle file, with its folder when it has one) or ``"certifi"``.
    """

    cafile: Optional[str]
    capath: Optional[str]
    source: str

    def load_into(self, context: ssl.SSLContext) -> None:
        """Add these roots to ``context``.

        A location that cannot be loaded (a missing or empty ``SSL_CERT_FILE``) is skipped,
        as OpenSSL's default paths and Go skip it: the other roots still count.
        """
        for where in ({"cafile": self.cafile}, {"capath": self.capath}):
            if not any(where.values()):
                continue
            try:
                context.load_verify_locations(**where)
            except (OSError, ssl.SSLError):
                log.debug("system roots: skipping unusable %s", where)


_cache: dict[tuple[Optional[str], Optional[str]], SystemTrust] = {}
_cache_lock = threading.Lock()


def system_trust(environ: Optional[Mapping[str, str]] = None) -> SystemTrust:
    """Decide where this process's system roots come from (computed once per environment).

    >>> system_trust().source in ("environment", "capath", "openssl", "certifi")
    True
    """
    env = os.environ if environ is None else environ
    defaults = ssl.get_default_verify_paths()
    file_var = env.get(defaults.openssl_cafile_env) or None
    dir_var = env.get(defaults.openssl_capath_env) or None
    key = (file_var, dir_var)
    with _cache_lock:
        cached = _cache.get(key)
    if cached is not None:
        return cached
    found = _decide(file_var, dir_var, defaults)
    with _cache_lock:
        _cache[key] = found
    return found


def _decide(
    file_var: Optional[str], dir_var: Optional[str], defaults: ssl.DefaultVerifyPaths
) -> SystemTrust:
    default_file = defaults.openssl_cafile if os.path.isfile(defaults.openssl_cafile) else None
    default_dir = defaults.openssl_capath if os.path.isdir(defaults.openssl_capath) else None
    # Variables that only restate the platform's own store (common in containers and CI)
    # change nothing, so they must not cost the parse of the whole bundle either.
    if file_var and default_file and _same_file(file_var, default_file):
        file_var = None
    if dir_var and default_dir and _same_file(dir_var, default_dir):
        dir_var = None
    if file_var or dir_var:
        # What OpenSSL (and Go) do: each variable replaces its own default, not the other.
        return SystemTrust(file_var or default_file, dir_var or default_dir, "environment")
    in_file = _count_certificates(default_file) if default_file else 0
    in_dir = _count_hashed(default_dir) if default_dir else 0
    if in_dir and in_dir >= in_file:
        return SystemTrust(None, default_dir, "capath")
    if in_file or in_dir:
        return SystemTrust(default_file if in_file else None, default_dir, "openssl")
    return SystemTrust(certifi.where(), None, "certifi")


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _count_certificates(path: str) -> int:
    try:
        with open(path, "rb") as handle:
            return handle.read().count(b"-----BEGIN CERTIFICATE-----")
    except OSError:
        return 0


def _count_hashed(path: str) -> int:
    try:
        return sum(1 for name in os.listdir(path) if _HASHED_NAME.match(name))
    except OSError:
        return 0


def docker_context(
    *,
    system: bool,
    anchors: Union[Sequence[bytes], Anchors] = (),
    environ: Optional[Mapping[str, str]] = None,
) -> ssl.SSLContext:
    """A client context with Docker's settings, trusting the system roots and/or ``anchors``.

    TLS 1.2 minimum with Docker's suites, no maximum; certificate and host name checks on.
    ``anchors`` are DER certificates (from the host directory's ``.crt`` files), or an
    :class:`Anchors` prepared once for many contexts: preparing is the expensive part for
    large bundles (see :mod:`dockercerts._anchors`), so the loader does it once per folder.

        >>> ctx = docker_context(system=True)
        >>> ctx.minimum_version, ctx.check_hostname, ctx.verify_mode
        (<TLSVersion.TLSv1_2: 771>, True, <VerifyMode.CERT_REQUIRED: 2>)
    """
    prepared = as_anchors(anchors) if anchors else None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(DOCKER_CIPHERS)
    context.verify_flags |= _PARTIAL_CHAIN
    if prepared is not None:
        # Before the system folder: OpenSSL searches hashed folders in the order they were
        # added and stops at the first that knows a subject, so the folder's own CAs come
        # first, as they do when loaded eagerly (cached certificates are searched first).
        prepared.load_lazy(context)
    if system:
        system_trust(environ).load_into(context)
    if prepared is not None:
        prepared.load_eager(context)
    keylog = (os.environ if environ is None else environ).get("SSLKEYLOGFILE")
    if keylog:
        # As httpx and browsers do: lets Wireshark decrypt a failing mTLS exchange.
        context.keylog_filename = keylog
    return context


def check_system(system: object) -> str:
    """``system`` if it is one of :data:`SYSTEMS` and usable here; else a clear error.

    ``"truststore"`` needs the ``truststore`` package (Python >= 3.10), an opt-in extra:
    ``pip install 'dockercerts[truststore]'``.
    """
    if system not in SYSTEMS:
        raise ValueError(f"system must be 'openssl' or 'truststore', not {system!r}")
    if system == "truststore":
        try:
            import truststore  # noqa: F401
        except ImportError:
            raise ImportError(
                "system='truststore' needs the truststore package (Python >= 3.10): "
                "pip install 'dockercerts[truststore]'"
            ) from None
    return str(system)


def truststore_context(anchors: Sequence[bytes] = ()) -> ssl.SSLContext:
    """A client context that verifies with the platform's verifier (truststore) plus
    ``anchors`` (DER), with Docker's TLS settings. Never injected into ``ssl`` globally.

    truststore adds the anchors to the platform's roots on macOS, tries the platform's
    store and then the anchors alone on Windows, and uses OpenSSL's default paths plus the
    anchors on Linux (the only platform dockercerts' tests run on).
    """
    import truststore

    context: ssl.SSLContext = truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(DOCKER_CIPHERS)
    context.verify_flags |= _PARTIAL_CHAIN
    if anchors:
        # Eagerly, as cadata: truststore hands the platform verifier the context's loaded
        # certificates, which a lazily searched hashed folder would not list.
        context.load_verify_locations(cadata=b"".join(anchors))
    keylog = os.environ.get("SSLKEYLOGFILE")
    if keylog:
        context.keylog_filename = keylog
    return context
