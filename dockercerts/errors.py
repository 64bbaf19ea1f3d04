r"""Every exception dockercerts raises, in one place.

Loader errors derive from :class:`CertsDirError`; each one carries the paths involved as
attributes, so callers can act on them without parsing messages. Where Docker has its own
wording (a ``.cert`` without its ``.key`` and the reverse), ``str()`` is exactly Docker's, so
a message seen in a daemon log and one seen here can be searched for together.

The transports raise only :class:`httpx.TransportError`\ s, so code that already handles httpx
failures handles theirs too: :class:`ClientCertificateRejected` when every candidate was
refused in TLS, and :class:`CertsDirTransportError` (also a :class:`CertsDirError`) when the
host's folder cannot be used. The requests adapter raises the same two errors as
``requests.exceptions.SSLError``\ s (``dockercerts.requests.ClientCertificateRejected`` and
``dockercerts.requests.CertsDirSSLError``, there because the core never imports requests):
each pair shares a base defined here, :class:`EveryCertificateRejected` and
:class:`CertsDirUnusable`, which holds their attributes and wording, so one ``except`` serves
both front ends. :class:`OverrideRefused` is the adapter's answer to a request setting
(``verify=``, ``cert=``) that would override what the folder decides.

No message, attribute or ``repr`` ever contains key material or a password.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

import httpx

__all__ = [
    "Attempt",
    "CANamesError",
    "CertsDirError",
    "CertsDirReadError",
    "CertsDirTransportError",
    "CertsDirUnusable",
    "ClientCertificateRejected",
    "EndpointTLSError",
    "EveryCertificateRejected",
    "HostsTomlError",
    "InvalidHostError",
    "KeyPairError",
    "MissingCertificateError",
    "MissingExtraError",
    "MissingKeyError",
    "NoEndpointError",
    "OverrideRefused",
]


class CertsDirError(Exception):
    """Base class: a certs.d host directory (or a name for one) that cannot be used.

    ``paths`` lists every file or directory the error is about, most specific first.
    """

    paths: tuple[Path, ...] = ()


class InvalidHostError(CertsDirError, ValueError):
    """A string that is not a registry ``host[:port]``; raised before any file is touched.

    ``host`` is the rejected input, ``reason`` says what is wrong with it.
    """

    def __init__(self, host: str, reason: str) -> None:
        self.host = host
        self.reason = reason
        super().__init__(
            f"{host!r} is not a registry host ({reason}); expected a name such as "
            "'registry.example.com', 'reg:5000' or '[::1]:5000'"
        )


class NoEndpointError(CertsDirError):
    """A registry's ``hosts.toml`` lists no endpoint with the capability an operation needs
    (containerd: ``no resolve hosts``), so the request is sent nowhere. ``directory`` is
    the folder, ``operation`` what the request is (see :mod:`dockercerts.routing`)."""

    def __init__(self, directory: Path, operation: str) -> None:
        self.directory = directory
        self.operation = operation
        self.paths = (directory,)
        super().__init__(
            f"{directory}: no endpoint in hosts.toml can {operation} (containerd: no "
            f"{operation} hosts); add {operation!r} to an endpoint's capabilities"
        )


class CertsDirReadError(CertsDirError):
    """The host directory, or a file Docker would read in it, cannot be read.

    Permission denied, a path that is not a directory, a dangling symlink, or a directory
    named like a certificate (``x.crt``). ``path`` is the path that failed; ``directory``
    the host directory being loaded.
    """

    def __init__(self, path: Path, directory: Path, problem: str, fix: str) -> None:
        self.path = path
        self.directory = directory
        self.problem = problem
        self.fix = fix
        self.paths = (path, directory) if path != directory else (path,)
        super().__init__(f"cannot read {path}: {problem}. {fix}")


#: The tail of the missing-key message: Docker's since 23.0, and the older wording that
#: containers/image (podman, skopeo, buildah) still prints.
DOCKER_NOTE = "CA certificates must use the extension .crt"
LEGACY_NOTE = "Note that CA certificates should use the extension .crt"


class MissingKeyError(CertsDirError):
    """A ``<name>.cert`` without ``<name>.key`` beside it. ``str()`` is Docker's message
    (``note``: podman's wording, :data:`LEGACY_NOTE`, for ``runtime="podman"``)."""

    def __init__(self, cert: Path, key: Path, note: str = DOCKER_NOTE) -> None:
        self.cert = cert
        self.key = key
        self.paths = (cert, key)
        super().__init__(f"missing key {key.name} for client certificate {cert.name}. {note}")


class MissingCertificateError(CertsDirError):
    """A ``<name>.key`` without ``<name>.cert`` beside it. ``str()`` is Docker's message."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.cert = cert
        self.key = key
        self.paths = (key, cert)
        super().__init__(f"missing client certificate {cert.name} for key {key.name}")


class KeyPairError(CertsDirError):
    """A client pair that cannot be used: no PEM data, a mismatch, an encrypted key, ...

    ``cert`` and ``key`` are the two files, ``problem`` what is wrong, ``fix`` what to do.
    """

    def __init__(self, cert: Path, key: Path, problem: str, fix: str) -> None:
        self.cert = cert
        self.key = key
        self.problem = problem
        self.fix = fix
        self.paths = (cert, key)
        super().__init__(f"client pair {cert} + {key.name}: {problem}. {fix}")


class HostsTomlError(CertsDirError):
    """A ``hosts.toml`` that containerd cannot decode. ``str()`` is containerd's log line:
    ``failed to decode <path>: <reason>``.

    containerd logs it and reads the folder as if there were no ``hosts.toml`` (its
    ``.crt``/``.cert``/``.key`` files); dockercerts does the same, logs it once and keeps it
    in :attr:`dockercerts.containerd.ContainerdHost.hosts_error` for ``inspect``. Only
    :func:`dockercerts.hoststoml.parse_hosts_toml` raises it. ``reason`` is containerd's own
    text where it has one (``unknown capability push2``, ``invalid pair [a] for "client"``);
    a TOML syntax error is worded by Python's TOML parser.
    """

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        self.paths = (path,)
        super().__init__(f"failed to decode {path}: {reason}")


class EndpointTLSError(CertsDirError):
    """A file named by containerd's configuration that containerd refuses, so the whole
    lookup fails (no partial result), as it does in containerd. ``str()`` is containerd's
    message (``unable to read CA cert "/x/ca.crt": open /x/ca.crt: no such file or
    directory``, ``unable to load CA cert "/x/ca.crt"``, ``unable to read CERT file ...``,
    ``failed to load X509 key pair: tls: ...``); ``fix`` says what to do; ``endpoint`` is
    the URL of the endpoint whose settings name the file.
    """

    def __init__(self, message: str, path: Path, *, endpoint: str, fix: str) -> None:
        self.path = path
        self.endpoint = endpoint
        self.fix = fix
        self.paths = (path,)
        super().__init__(message)


Outcome = Literal["accepted", "rejected", "returned", "error"]


@dataclass(frozen=True)
class Attempt:
    """What happened to one candidate during one exchange (one request, all its tries).

    * ``candidate``: the pair's name (``None``: the candidate without a client certificate);
    * ``outcome``: a short description (``"TLS alert unknown_ca"``, ``"HTTP 200"``,
      ``"HTTP 400 The SSL certificate error"``);
    * ``verdict``: ``"accepted"`` (the server's answer for this certificate, remembered as
      the host's winner), ``"rejected"`` (refused at ``layer``; the next one was tried),
      ``"returned"`` (an answer that says nothing about the certificate, given back as is: a
      5xx from the host's known winner) or ``"error"`` (a failure no other certificate can
      help with, such as a timeout: raised);
    * ``layer``: for a rejection, ``"certificate"``, ``"authorization"`` or ``"server"``;
    * ``status``: the HTTP status, when an answer came; ``fresh``: whether a TLS connection
      was opened for this try (``False``: a kept-alive one was reused); ``tls_version``: what
      that connection negotiated; ``elapsed``: seconds the try took (``None`` for an accepted
      2xx or 3xx on a kept-alive connection, the steady state: that record is made once and
      shared by every such request, see :func:`dockercerts.flow.settle`); ``alert``: the TLS
      alert read, if any (after a TLS 1.3 handshake it may be lost to the connection's reset);
      ``endpoint``: with containerd routing, the endpoint the try went to
      (``https://mirror:5000/v2``, as containerd names it), ``None`` otherwise.

    The records of an exchange are ``response.extensions["dockercerts.attempts"]`` (httpx),
    ``response.dockercerts_attempts`` (requests: ``dockercerts.requests.attempts(response)``)
    and :attr:`EveryCertificateRejected.attempts`.
    """

    candidate: Optional[str]
    outcome: str
    verdict: Outcome = "rejected"
    layer: Optional[str] = None
    status: Optional[int] = None
    fresh: Optional[bool] = None
    tls_version: Optional[str] = None
    elapsed: Optional[float] = None
    alert: Optional[str] = None
    endpoint: Optional[str] = None

    # Written by hand (``dataclass`` keeps an ``__init__`` the class defines): one record is
    # made for every request, and the generated frozen ``__init__`` (one
    # ``object.__setattr__`` a field) costs three times as much. Same fields, same defaults;
    # stored straight into the instance's dict, which a frozen class's ``__setattr__``
    # would refuse.
    def __init__(
        self,
        candidate: Optional[str],
        outcome: str,
        verdict: Outcome = "rejected",
        layer: Optional[str] = None,
        status: Optional[int] = None,
        fresh: Optional[bool] = None,
        tls_version: Optional[str] = None,
        elapsed: Optional[float] = None,
        alert: Optional[str] = None,
        endpoint: Optional[str] = None,
    ) -> None:
        fields = self.__dict__
        fields["candidate"] = candidate
        fields["outcome"] = outcome
        fields["verdict"] = verdict
        fields["layer"] = layer
        fields["status"] = status
        fields["fresh"] = fresh
        fields["tls_version"] = tls_version
        fields["elapsed"] = elapsed
        fields["alert"] = alert
        fields["endpoint"] = endpoint

    def describe(self) -> str:
        name = "(no client certificate)" if self.candidate is None else self.candidate
        where = "" if self.endpoint is None else f" at {self.endpoint}"
        return f"{name}{where}: {self.outcome}"


class CertsDirUnusable(CertsDirError):
    """The host's folder cannot be used, raised by a front end; ``str()`` is the folder error's.

    ``error`` is the loader's own exception (for instance a :class:`MissingKeyError`);
    ``paths`` are its paths. The base of :class:`CertsDirTransportError` (httpx) and of the
    requests adapter's ``CertsDirSSLError``: each also derives from its library's own error.
    """

    error: CertsDirError

    def __init__(self, error: CertsDirError, *, request: Any) -> None:
        self.error = error
        self.paths = error.paths
        # The next class in the MRO is the front end's library error (httpx's or requests'),
        # and both take the request as a keyword.
        super().__init__(str(error), request=request)  # type: ignore[call-arg]


class CertsDirTransportError(CertsDirUnusable, httpx.TransportError):
    """The host's folder cannot be used, raised by a transport; ``str()`` is the folder error's.

    An :class:`httpx.TransportError`, as httpx expects of a transport, and a
    :class:`CertsDirError` (``error`` is the loader's own exception, for instance a
    :class:`MissingKeyError`; ``paths`` are its paths).
    """


class EveryCertificateRejected(Exception):
    """Every client certificate of the host was rejected and the last one failed in TLS.

    ``attempts`` lists each candidate tried, in order, and what happened to it; ``directory``
    is the host directory they came from. The base of :class:`ClientCertificateRejected`
    (httpx) and of the requests adapter's ``ClientCertificateRejected``: each also derives
    from its library's own error.
    """

    directory: Path
    attempts: tuple[Attempt, ...]

    def __init__(
        self,
        directory: Path,
        attempts: tuple[Attempt, ...],
        *,
        request: Any,
        note: str = "",
    ) -> None:
        self.directory = directory
        self.attempts = attempts
        lines = "; ".join(a.describe() for a in attempts)
        tail = f" ({note})" if note else ""
        # As in CertsDirUnusable: the front end's library error comes next in the MRO.
        super().__init__(  # type: ignore[call-arg]
            f"the server rejected every client certificate from {directory}: {lines}{tail}",
            request=request,
        )


class ClientCertificateRejected(EveryCertificateRejected, httpx.TransportError):
    """Every client certificate of the host was rejected and the last one failed in TLS.

    ``attempts`` lists each candidate tried, in order, and what happened to it; ``directory``
    is the host directory they came from.
    """


class OverrideRefused(ValueError):
    """A request setting that would override what the host's certs.d folder decides.

    Raised by the requests adapter for ``verify=False``, ``verify=<a CA bundle>`` and
    ``cert=`` (the folder decides the trust and the client certificate, as Docker's does).
    ``setting`` is ``"verify"`` or ``"cert"``; ``directory`` the host directory that decides.
    """

    def __init__(self, setting: str, value: str, directory: Path, fix: str) -> None:
        self.setting = setting
        self.directory = directory
        super().__init__(
            f"{setting}={value} cannot be used with the dockercerts adapter: {directory} "
            f"decides the {'trust' if setting == 'verify' else 'client certificate'}. {fix}"
        )


class MissingExtraError(ImportError):
    """A feature needs an optional dependency that is not installed.

    ``extra`` is the name to install (``pip install 'dockercerts[<extra>]'``), ``feature``
    what needed it.
    """

    def __init__(self, feature: str, extra: str, module: str) -> None:
        self.feature = feature
        self.extra = extra
        super().__init__(
            f"{feature} needs {module}, which is not installed: pip install 'dockercerts[{extra}]'",
            name=module,
        )


class CANamesError(Exception):
    """The CA names a server asks client certificates from could not be read.

    ``host`` and ``port`` name the server; ``reason`` says what went wrong (no answer, a
    handshake that failed before the server's certificate request, an unsupported proxy).
    """

    def __init__(self, host: str, port: int, reason: str) -> None:
        self.host = host
        self.port = port
        self.reason = reason
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        super().__init__(f"cannot read the CA names {where} asks for: {reason}")
