"""Real nginx, docker-registry, haproxy and tinyproxy servers on loopback, for the project's
own tests.

Not public API. The point is to check dockercerts (and its fake ``MTLSServer``) against the
servers users actually run: the way a peer rejects a client certificate (a TLS alert, an
HTTP 400, a 403, a 495/496) decides whether the transport moves on to the next certificate,
so it is measured here rather than assumed.

Every peer is a context manager that starts the binary as a child process on
``127.0.0.1:<free port>``, wait until it accepts connections, and on exit stop it and its
workers (SIGTERM, then SIGKILL to the whole process group). Their ``url`` uses ``localhost``
so a server certificate issued for ``localhost`` verifies.

What each peer can tell about the client certificate that arrived:

- nginx: its access log has one JSON record per request with the client subject, issuer,
  SHA-1 fingerprint (nginx's ``$ssl_client_fingerprint`` is SHA-1), serial, verify result,
  TLS protocol and connection serial number: :meth:`NginxPeer.records`.
- docker-registry 2.8 logs nothing about an accepted client certificate (its "response
  completed" record has no TLS fields). A rejected one shows up only as Go's
  ``http: TLS handshake error from <addr>: <reason>`` line: :meth:`RegistryPeer.handshake_errors`.
- haproxy: one JSON record per request (client address, TLS version, ALPN, the client
  certificate's subject, issuer, SHA-1, serial, verify result) and one per refused handshake
  (haproxy's and OpenSSL's reason), plus its ``show info`` counters:
  :meth:`HAProxyPeer.requests`, :meth:`HAProxyPeer.handshake_failures`,
  :meth:`HAProxyPeer.stats`.

tinyproxy (plain HTTP forward proxy, ``url`` is ``http://127.0.0.1:<port>``) reports the
requests it carried, CONNECT targets included: :meth:`TinyproxyPeer.connects`. A token
server for a registry with token auth is in ``tokenserver.py``.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Callable, NoReturn, Optional, TypeVar, Union

import pytest

__all__ = [
    "HAPROXY_TLS_VERSIONS",
    "NGINX_MODES",
    "HAProxyPeer",
    "NginxPeer",
    "PeerStartError",
    "RegistryPeer",
    "Served",
    "TinyproxyPeer",
    "TokenAuth",
    "free_port",
    "haproxy_binary",
    "nginx_binary",
    "port_is_open",
    "registry_binary",
    "require_peer",
    "require_pyopenssl",
    "skopeo_binary",
    "tinyproxy_binary",
]

StrPath = Union[str, "os.PathLike[str]"]

# Set by .ci/run: there a missing peer is a broken CI image, not a reason to skip.
REQUIRE_ENV = "DOCKERCERTS_REQUIRE_PEERS"

_INSTALL_HINT = {
    "nginx": "apt-get install nginx-light",
    "docker-registry": "apt-get install docker-registry",
    "haproxy": "apt-get install haproxy",
    "tinyproxy": "apt-get install tinyproxy",
    "skopeo": "apt-get install skopeo",
}

NGINX_MODES = ("verify", "status", "error_page")

_START_ATTEMPTS = 5
_STOP_TIMEOUT = 5.0


def _which(name: str, *extra_dirs: str) -> Optional[str]:
    found = shutil.which(name)
    if found:
        return found
    # /usr/sbin is often missing from a non-root PATH, and Debian puts nginx there.
    for directory in extra_dirs:
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def nginx_binary() -> Optional[str]:
    """Path of the nginx binary, or None when it is not installed."""
    return _which("nginx", "/usr/sbin", "/usr/local/sbin", "/usr/local/nginx/sbin")


def registry_binary() -> Optional[str]:
    """Path of the docker-registry (distribution 2.x) binary, or None."""
    return _which("docker-registry", "/usr/bin", "/usr/local/bin") or _which("registry")


def haproxy_binary() -> Optional[str]:
    """Path of the haproxy binary (Debian: /usr/sbin/haproxy), or None."""
    return _which("haproxy", "/usr/sbin", "/usr/local/sbin")


def tinyproxy_binary() -> Optional[str]:
    """Path of the tinyproxy binary (Debian: /usr/bin/tinyproxy), or None."""
    return _which("tinyproxy", "/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin")


def skopeo_binary() -> Optional[str]:
    """Path of skopeo (Debian: /usr/bin/skopeo), a Go client of containers/image, or None."""
    return _which("skopeo", "/usr/bin", "/usr/local/bin")


def require_peer(name: str) -> str:
    """Return the binary for ``name`` ("nginx", "docker-registry", "haproxy", "tinyproxy"
    or "skopeo"), or skip the test.

    With ``DOCKERCERTS_REQUIRE_PEERS=1`` (CI) the test fails instead of skipping, so a
    machine without the peers cannot produce a green run that tested nothing.
    """
    if name == "nginx":
        binary = nginx_binary()
    elif name in ("docker-registry", "registry"):
        name = "docker-registry"
        binary = registry_binary()
    elif name == "haproxy":
        binary = haproxy_binary()
    elif name == "tinyproxy":
        binary = tinyproxy_binary()
    elif name == "skopeo":
        binary = skopeo_binary()
    else:
        raise ValueError(
            f"unknown peer {name!r}; expected 'nginx', 'docker-registry', 'haproxy', "
            "'tinyproxy' or 'skopeo'"
        )
    if binary is None:
        _missing(f"{name} not installed: {_INSTALL_HINT[name]} (or run .ci/run)")
    return binary


def require_pyopenssl() -> None:
    """Skip the test without pyOpenSSL (the ``probe`` extra, part of ``test``); fail under
    ``DOCKERCERTS_REQUIRE_PEERS=1``, where the test extra was installed."""
    try:
        import OpenSSL  # noqa: F401
    except ImportError:
        _missing("pyOpenSSL not installed: pip install -e '.[test]'")


def _missing(reason: str) -> NoReturn:
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason}; {REQUIRE_ENV}=1 forbids skipping", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (the caller retries on a bind race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_open(port: int, timeout: float = 0.2) -> bool:
    """True when something accepts TCP connections on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


_S = TypeVar("_S", bound="Served")


class Served:
    """A server the test starts with :meth:`start` and stops with :meth:`stop`; ``with``
    does both, so a test that fails midway still stops it."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self: _S) -> _S:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.stop()


# Peers still running when the interpreter exits (a test run interrupted outside a fixture's
# teardown). They run in their own session, so nothing else would stop them.
_RUNNING: weakref.WeakSet[_Peer] = weakref.WeakSet()


@atexit.register
def _stop_leftovers() -> None:
    for peer in list(_RUNNING):
        peer.stop()


class PeerStartError(RuntimeError):
    """A peer did not come up; the message carries its log."""


def _exited(proc: subprocess.Popen[bytes]) -> bool:
    """True once ``proc`` has exited, without reaping it (see ``_Peer._terminate``)."""
    if proc.returncode is not None:
        return True
    try:
        info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return proc.poll() is not None
    return info is not None


class _Peer(Served):
    """Process handling shared by both peers: temp dir, start with retries, stop."""

    name = "peer"

    def __init__(self, binary: Optional[str], workdir: Optional[StrPath], timeout: float):
        self.binary = binary
        self._given_workdir = Path(workdir) if workdir is not None else None
        self.startup_timeout = timeout
        self.workdir: Path = Path()
        self.port = 0
        self.process: Optional[subprocess.Popen[bytes]] = None

    @property
    def host(self) -> str:
        """``localhost:<port>``: the certs.d directory name for this peer."""
        return f"localhost:{self.port}"

    @property
    def address(self) -> str:
        """``127.0.0.1:<port>``: what another peer's ``upstream=`` takes."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    @property
    def pid(self) -> Optional[int]:
        return self.process.pid if self.process is not None else None

    # Subclasses fill these in.
    def _write_config(self) -> None:
        raise NotImplementedError

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _log_for_error(self) -> str:
        raise NotImplementedError

    def _stdout_path(self) -> Path:
        return self.workdir / "stdout.log"

    def _ready(self) -> bool:
        return port_is_open(self.port)

    def _bind_failed(self) -> bool:
        return "address already in use" in self._log_for_error().lower()

    def start(self) -> None:
        if self.process is not None:
            raise RuntimeError(f"{self.name} already started")
        if self.binary is None:
            raise PeerStartError(f"{self.name} binary not found")
        if self._given_workdir is not None:
            self._given_workdir.mkdir(parents=True, exist_ok=True)
            self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.name}-", dir=self._given_workdir))
        else:
            self.workdir = Path(tempfile.mkdtemp(prefix=f"dockercerts-{self.name}-"))
        try:
            self._start_with_retries()
        except BaseException:
            self.stop()
            raise

    def _start_with_retries(self) -> None:
        last = ""
        for _ in range(_START_ATTEMPTS):
            self.port = free_port()
            self._write_config()
            # Fresh log for each attempt, so a bind error from the previous port is not
            # mistaken for one on this port.
            for path in self._log_paths():
                path.unlink(missing_ok=True)
            env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
            with open(self._stdout_path(), "wb") as out:
                # A new session makes the server and its workers one process group, so
                # stop() can kill them all even if the master dies first.
                self.process = subprocess.Popen(
                    self._command(),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=self.workdir,
                    env=env,
                    start_new_session=True,
                )
            _RUNNING.add(self)
            deadline = time.monotonic() + self.startup_timeout
            while time.monotonic() < deadline:
                if _exited(self.process):
                    break
                if self._ready():
                    return
                time.sleep(0.02)
            last = self._log_for_error()
            bind_race = self._bind_failed()
            self._terminate()
            if not bind_race:
                break
        code = None if self.process is None else self.process.returncode
        raise PeerStartError(
            f"{self.name} did not start on 127.0.0.1:{self.port} within "
            f"{self.startup_timeout:.0f} s (exit status {code}); its log:\n{last}"
        )

    def _log_paths(self) -> list[Path]:
        return [self._stdout_path()]

    def _terminate(self) -> None:
        proc = self.process
        if proc is None:
            return
        if proc.returncode is None:
            # SIGTERM is a fast shutdown for both nginx and the registry; SIGQUIT would let
            # nginx wait for idle keep-alive connections of clients the test left open.
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + _STOP_TIMEOUT
            while not _exited(proc) and time.monotonic() < deadline:
                time.sleep(0.02)
            # The master is not reaped yet (running or a zombie), so its pid, which is the
            # process group id, cannot have been reused: killing the group is safe and
            # takes any worker that outlived the master with it.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=_STOP_TIMEOUT)

    def stop(self) -> None:
        """Stop the server and its workers; remove the work dir unless the caller gave one."""
        self._terminate()
        _RUNNING.discard(self)
        if self._given_workdir is None and self.workdir != Path():
            shutil.rmtree(self.workdir, ignore_errors=True)

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Poll ``predicate`` until true or ``timeout``: servers log after answering."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""


_UPSTREAM = re.compile(r"127\.0\.0\.1:\d{1,5}|localhost:\d{1,5}")


def _check_upstream(upstream: str) -> None:
    """Loopback ``host:port`` only: it goes into a config file verbatim."""
    if not _UPSTREAM.fullmatch(upstream):
        raise ValueError(f"upstream must be 127.0.0.1:<port> or localhost:<port>, not {upstream!r}")


def _nginx_quote(value: str) -> str:
    """A double-quoted nginx string (subjects may hold spaces, commas, quotes)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "${dollar}") + '"'


# One JSON object per request. escape=json makes every value a JSON string even when it
# holds quotes or backslashes (subjects can).
_NGINX_LOG_FIELDS = {
    "status": "$status",
    "method": "$request_method",
    "uri": "$request_uri",
    "remote_addr": "$remote_addr",
    "ssl_protocol": "$ssl_protocol",
    "ssl_client_verify": "$ssl_client_verify",
    "ssl_client_s_dn": "$ssl_client_s_dn",
    "ssl_client_i_dn": "$ssl_client_i_dn",
    "ssl_client_fingerprint": "$ssl_client_fingerprint",
    "ssl_client_serial": "$ssl_client_serial",
    "ssl_server_name": "$ssl_server_name",
    # A header the routing tests set through hosts.toml's [header] table.
    "x_mirror_test": "$http_x_mirror_test",
    # nginx's serial number of the client connection: records sharing it travelled on one
    # kept-alive TLS connection, so the distinct values count the handshakes that carried
    # a request.
    "connection": "$connection",
}


class NginxPeer(_Peer):
    """nginx terminating TLS with client-certificate checks, answering like a registry.

    ``mode``:

    - ``"verify"``: ``ssl_verify_client on``. A missing or untrusted certificate gets
      HTTP 400 ("No required SSL certificate was sent" / "The SSL certificate error").
    - ``"status"``: ``ssl_verify_client optional_no_ca`` plus a rule answering ``status``
      (default 403) unless ``$ssl_client_verify`` is ``SUCCESS`` and, when
      ``allowed_subjects`` is given, ``$ssl_client_s_dn`` is one of them (RFC 2253 form,
      e.g. ``"CN=alice"``). ``optional_no_ca`` rather than ``optional``: with ``optional``
      nginx itself answers 400 to an untrusted certificate before any rule runs, so the
      auth-rule behaviour (a 403 for every bad certificate) needs ``optional_no_ca``.
      ``verify_client`` overrides the directive's value if a test wants ``optional``.
    - ``"error_page"``: ``ssl_verify_client on`` with ``error_page 495 =495`` and
      ``error_page 496 =496``, so nginx's internal codes reach the client: 495 for an
      untrusted certificate, 496 for none.

    ``protocols`` is the ``ssl_protocols`` list (``"TLSv1.2"``, ``"TLSv1.3"``).

    ``advertise``: which CA names the CertificateRequest lists (what Go picks its certificate
    by). ``True``: those of ``client_ca`` (``ssl_client_certificate``). A path: that file's
    (decoys, say), while ``client_ca`` is still trusted (``ssl_trusted_certificate``, which
    nginx never lists). ``False``: none; nginx 1.22 then allows only
    ``ssl_verify_client optional_no_ca`` (``mode="status"``), with ``client_ca`` trusted.
    ``/v2/`` answers 200 ``{}`` with ``Docker-Distribution-API-Version: registry/2.0``;
    ``/v2/_catalog`` answers ``{"repositories":["team/app"]}``.

    ``upstream="127.0.0.1:<port>"`` (e.g. a plain-HTTP :class:`RegistryPeer`'s
    ``address``) replaces those canned answers: ``/v2/`` is proxied there, as a registry
    is usually deployed behind nginx. ``Host``, ``Authorization`` and
    ``X-Forwarded-Proto: https`` are passed so the registry builds upload ``Location`` URLs
    and Bearer challenges for nginx's address, bodies are unlimited and streamed both ways.
    An upstream nobody listens on gives nginx's own 502 page: an outage, on purpose.
    ``prefix="/cache"`` serves that upstream's ``/v2/`` under ``/cache/v2/`` instead (a
    registry behind a path, as containerd's ``override_path`` reaches it).
    """

    name = "nginx"

    def __init__(
        self,
        *,
        server_cert: StrPath,
        server_key: StrPath,
        client_ca: StrPath,
        mode: str = "verify",
        protocols: Sequence[str] = ("TLSv1.2", "TLSv1.3"),
        status: int = 403,
        allowed_subjects: Optional[Iterable[str]] = None,
        verify_client: Optional[str] = None,
        upstream: Optional[str] = None,
        advertise: Union[bool, StrPath] = True,
        prefix: str = "",
        binary: Optional[str] = None,
        workdir: Optional[StrPath] = None,
        startup_timeout: float = 10.0,
    ) -> None:
        if upstream is not None:
            _check_upstream(upstream)
        if prefix and not re.fullmatch(r"(/[a-z0-9]+)+", prefix):
            raise ValueError(f"prefix must look like /name[/name...], not {prefix!r}")
        self.prefix = prefix
        if mode not in NGINX_MODES:
            raise ValueError(f"mode must be one of {NGINX_MODES}, not {mode!r}")
        bad = [p for p in protocols if p not in ("TLSv1.2", "TLSv1.3")]
        if bad or not protocols:
            raise ValueError(f"protocols must be TLSv1.2 and/or TLSv1.3, not {protocols!r}")
        super().__init__(binary or nginx_binary(), workdir, startup_timeout)
        self.server_cert = Path(server_cert).resolve()
        self.server_key = Path(server_key).resolve()
        self.client_ca = Path(client_ca).resolve()
        self.mode = mode
        self.protocols = tuple(protocols)
        self.status = status
        self.allowed_subjects = None if allowed_subjects is None else list(allowed_subjects)
        default_verify = "optional_no_ca" if mode == "status" else "on"
        self.verify_client = verify_client or default_verify
        self.upstream = upstream
        if advertise is False and self.verify_client != "optional_no_ca":
            raise ValueError(
                "advertise=False needs ssl_verify_client optional_no_ca (mode='status'): "
                "nginx 1.22 refuses on/optional without ssl_client_certificate"
            )
        self.advertise: Union[bool, Path] = (
            advertise if isinstance(advertise, bool) else Path(advertise).resolve()
        )

    @property
    def config_path(self) -> Path:
        return self.workdir / "nginx.conf"

    @property
    def access_log_path(self) -> Path:
        return self.workdir / "access.log"

    @property
    def error_log_path(self) -> Path:
        return self.workdir / "error.log"

    def _log_paths(self) -> list[Path]:
        return [self._stdout_path(), self.access_log_path, self.error_log_path, self.pid_path]

    @property
    def pid_path(self) -> Path:
        return self.workdir / "nginx.pid"

    def _ready(self) -> bool:
        # nginx writes its pid file only after it has bound every listen socket, so an open
        # port without it may belong to whoever won a bind race against this nginx.
        pid = _read(self.pid_path).strip()
        return self.process is not None and pid == str(self.process.pid) and super()._ready()

    def _log_for_error(self) -> str:
        return _read(self.error_log_path) + _read(self._stdout_path())

    def _command(self) -> list[str]:
        assert self.binary is not None
        # -e: nginx opens its compiled-in error log before reading the config; point it at
        # the work dir so nothing outside it is touched.
        return [
            self.binary,
            "-p",
            f"{self.workdir}/",
            "-c",
            str(self.config_path),
            "-e",
            str(self.error_log_path),
            "-g",
            "daemon off;",
        ]

    def _write_config(self) -> None:
        self.config_path.write_text(self.config_text(), encoding="utf-8")

    def config_text(self) -> str:
        """The nginx.conf this peer runs with (also handy in failure messages)."""
        w = self.workdir
        log_format = json.dumps(_NGINX_LOG_FIELDS, separators=(",", ":"))
        # As root the master would switch workers to "nobody", who cannot read the 0700
        # work dir; the user directive only means something when the master is root.
        user = "user root;\n" if hasattr(os, "geteuid") and os.geteuid() == 0 else ""
        lines = [
            f"{user}worker_processes 1;",
            f"pid {self.pid_path};",
            f"error_log {w}/error.log info;",
            "events { worker_connections 64; }",
            "http {",
            f"    log_format dockercerts escape=json '{log_format}';",
            f"    access_log {w}/access.log dockercerts;",
            # Every temp path inside the work dir: the compiled-in ones (/var/lib/nginx)
            # may not exist or be writable.
            f"    client_body_temp_path {w}/client_body;",
            f"    proxy_temp_path {w}/proxy;",
            f"    fastcgi_temp_path {w}/fastcgi;",
            f"    uwsgi_temp_path {w}/uwsgi;",
            f"    scgi_temp_path {w}/scgi;",
            "    default_type application/json;",
            "    keepalive_timeout 5s;",
        ]
        allowed = self.allowed_subjects
        lines.append("    map $ssl_client_s_dn $dockercerts_subject_ok {")
        lines.append(f"        default {0 if allowed is not None else 1};")
        for subject in allowed or ():
            lines.append(f"        {_nginx_quote(subject)} 1;")
        lines.append("    }")
        lines += [
            "    server {",
            f"        listen 127.0.0.1:{self.port} ssl;",
            "        server_name localhost;",
            f"        ssl_certificate {self.server_cert};",
            f"        ssl_certificate_key {self.server_key};",
            f"        ssl_protocols {' '.join(self.protocols)};",
        ]
        # ssl_client_certificate is also the acceptable-CA list of the CertificateRequest;
        # ssl_trusted_certificate is trusted without being listed.
        if self.advertise is True:
            lines.append(f"        ssl_client_certificate {self.client_ca};")
        else:
            if self.advertise is not False:
                lines.append(f"        ssl_client_certificate {self.advertise};")
            lines.append(f"        ssl_trusted_certificate {self.client_ca};")
        lines += [
            f"        ssl_verify_client {self.verify_client};",
            "        ssl_verify_depth 4;",
        ]
        if self.mode == "status":
            # Server-level rewrite rules run before any location's return.
            lines += [
                f"        if ($ssl_client_verify != SUCCESS) {{ return {self.status}; }}",
                f"        if ($dockercerts_subject_ok = 0) {{ return {self.status}; }}",
            ]
        elif self.mode == "error_page":
            # Without error_page nginx turns its internal 495/496 into a plain 400.
            lines += [
                "        error_page 495 =495 /_dockercerts/495;",
                "        error_page 496 =496 /_dockercerts/496;",
                "        location = /_dockercerts/495 {",
                "            internal; default_type text/plain;",
                "            return 200 'client certificate error\\n';",
                "        }",
                "        location = /_dockercerts/496 {",
                "            internal; default_type text/plain;",
                "            return 200 'no client certificate\\n';",
                "        }",
            ]
        if self.upstream is not None:
            lines += [
                f"        location {self.prefix}/v2/ {{",
                # No URI part: the request URI goes upstream unchanged (digests, ?_state=);
                # under a prefix, /v2/ replaces the matched part.
                f"            proxy_pass http://{self.upstream}"
                + ("/v2/;" if self.prefix else ";"),
                "            proxy_http_version 1.1;",
                "            proxy_set_header Host $http_host;",
                "            proxy_set_header Authorization $http_authorization;",
                "            proxy_set_header X-Forwarded-Proto https;",
                "            proxy_connect_timeout 2s;",
                # Blob uploads: no size cap, no spooling to disk in either direction.
                "            client_max_body_size 0;",
                "            proxy_request_buffering off;",
                "            proxy_buffering off;",
                "        }",
            ]
        else:
            lines += [
                "        location /v2/ {",
                "            add_header Docker-Distribution-API-Version registry/2.0 always;",
                "            return 200 '{}';",
                "        }",
                "        location = /v2/_catalog {",
                "            add_header Docker-Distribution-API-Version registry/2.0 always;",
                """            return 200 '{"repositories":["team/app"]}';""",
                "        }",
            ]
        lines += [
            "        location / { return 404; }",
            "    }",
            "}",
        ]
        return "\n".join(lines) + "\n"

    def error_log(self) -> str:
        return _read(self.error_log_path)

    def log_lines(self) -> list[str]:
        """Raw access-log lines (one JSON object each)."""
        return [line for line in _read(self.access_log_path).splitlines() if line.strip()]

    def records(self) -> list[dict[str, str]]:
        """Parsed access-log records; an unset variable is ``""`` (nginx logs ``-``)."""
        out = []
        for line in self.log_lines():
            record = json.loads(line)
            out.append({k: ("" if v == "-" else str(v)) for k, v in record.items()})
        return out

    def wait_for_records(self, count: int, timeout: float = 5.0) -> list[dict[str, str]]:
        """Records once at least ``count`` exist: nginx logs a request after answering it,
        so the client can see the response before the line is written."""
        self.wait_for(lambda: len(self.log_lines()) >= count, timeout)
        return self.records()

    def record_for(self, uri: str, timeout: float = 5.0) -> dict[str, str]:
        """The record of the request for ``uri`` (path and query, as sent), waiting for it.

        Give each request a unique query (``/v2/?t=<id>``) and look it up here: counting
        lines races with a previous request whose line is written late.
        """
        found: list[dict[str, str]] = []

        def look() -> bool:
            found[:] = [r for r in self.records() if r["uri"] == uri]
            return bool(found)

        if not self.wait_for(look, timeout):
            log = _read(self.access_log_path)
            raise AssertionError(f"no access-log record for {uri!r}:\n{log}")
        return found[-1]


_TLS_MIN = {"tls1.2", "tls1.3"}

_HANDSHAKE_ERROR = re.compile(r"http: TLS handshake error from (?P<remote>\S+?): (?P<reason>.*)$")


@dataclass(frozen=True)
class TokenAuth:
    """distribution's ``auth.token`` settings (the Docker token flow).

    ``rootcert_pem`` holds the certificate(s) a token's signing certificate (its ``x5c``
    header) must chain to; :class:`RegistryPeer` writes it into its work dir as the
    ``rootcertbundle``. ``tests/tokenserver.py`` makes one: ``TokenServer.auth``.
    """

    realm: str
    service: str
    issuer: str
    rootcert_pem: bytes


class RegistryPeer(_Peer):
    """docker-registry 2.8 (distribution) with ``http.tls.clientcas``: Go's
    RequireAndVerifyClientCert, so a missing or untrusted certificate fails the handshake.

    ``minimum_tls`` is ``"tls1.2"`` or ``"tls1.3"`` (2.8 accepts both).

    Without ``server_cert`` and ``server_key`` the registry serves plain HTTP on
    ``http://localhost:<port>``: the upstream of an :class:`NginxPeer` or
    :class:`HAProxyPeer` that terminates TLS in front of it. Without ``client_ca`` a TLS
    registry asks for no client certificate.

    ``token_auth`` turns on bearer-token auth: every request then needs a JWT from the realm
    with the right ``access`` claims, and the registry answers 401 with a
    ``WWW-Authenticate: Bearer realm=...,service=...[,scope=...][,error=...]`` challenge
    otherwise. distribution allows 60 s of clock skew on ``exp``/``nbf``, so an "expired"
    token must have expired more than a minute ago.
    """

    name = "registry"

    def __init__(
        self,
        *,
        server_cert: Optional[StrPath] = None,
        server_key: Optional[StrPath] = None,
        client_ca: Optional[StrPath] = None,
        minimum_tls: str = "tls1.2",
        token_auth: Optional[TokenAuth] = None,
        binary: Optional[str] = None,
        workdir: Optional[StrPath] = None,
        startup_timeout: float = 10.0,
    ) -> None:
        if minimum_tls not in _TLS_MIN:
            raise ValueError(f"minimum_tls must be one of {sorted(_TLS_MIN)}")
        if (server_cert is None) != (server_key is None):
            raise ValueError("give both server_cert and server_key, or neither (plain HTTP)")
        if client_ca is not None and server_cert is None:
            raise ValueError("client_ca needs TLS: give server_cert and server_key too")
        super().__init__(binary or registry_binary(), workdir, startup_timeout)
        self.server_cert = None if server_cert is None else Path(server_cert).resolve()
        self.server_key = None if server_key is None else Path(server_key).resolve()
        self.client_ca = None if client_ca is None else Path(client_ca).resolve()
        self.minimum_tls = minimum_tls
        self.token_auth = token_auth

    @property
    def tls(self) -> bool:
        return self.server_cert is not None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://localhost:{self.port}"

    @property
    def token_root_path(self) -> Path:
        """The ``rootcertbundle`` written from ``token_auth.rootcert_pem``."""
        return self.workdir / "token-root.pem"

    @property
    def config_path(self) -> Path:
        return self.workdir / "config.yml"

    @property
    def log_path(self) -> Path:
        """stdout and stderr of the registry, interleaved."""
        return self._stdout_path()

    def _command(self) -> list[str]:
        assert self.binary is not None
        return [self.binary, "serve", str(self.config_path)]

    def _log_for_error(self) -> str:
        return _read(self.log_path)

    def _ready(self) -> bool:
        # The registry logs "listening on <addr>, tls" once its listener exists. Waiting
        # for that line instead of probing the port keeps a probe's aborted handshake
        # ("TLS handshake error ...: EOF") out of the log the tests read.
        return f"listening on 127.0.0.1:{self.port}" in _read(self.log_path)

    def _write_config(self) -> None:
        if self.token_auth is not None:
            self.token_root_path.write_bytes(self.token_auth.rootcert_pem)
        self.config_path.write_text(self.config_text(), encoding="utf-8")

    def config_text(self) -> str:
        # JSON is valid YAML and needs no quoting rules for paths.
        http: dict[str, object] = {
            "addr": f"127.0.0.1:{self.port}",
            # Set, so the registry does not warn about generating one.
            "secret": secrets.token_hex(16),
        }
        if self.server_cert is not None:
            tls: dict[str, object] = {
                "certificate": str(self.server_cert),
                "key": str(self.server_key),
                "minimumtls": self.minimum_tls,
            }
            if self.client_ca is not None:
                tls["clientcas"] = [str(self.client_ca)]
            http["tls"] = tls
        config: dict[str, object] = {
            "version": 0.1,
            "log": {"level": "info", "formatter": "json"},
            "storage": {
                "filesystem": {"rootdirectory": str(self.workdir / "storage")},
                # The purge timer and the health check touch storage in the background;
                # off, the log holds only what the tests caused.
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": http,
            "health": {"storagedriver": {"enabled": False}},
        }
        if self.token_auth is not None:
            config["auth"] = {
                "token": {
                    "realm": self.token_auth.realm,
                    "service": self.token_auth.service,
                    "issuer": self.token_auth.issuer,
                    "rootcertbundle": str(self.token_root_path),
                }
            }
        # No redis, no notifications: the registry starts offline as it is.
        return json.dumps(config, indent=2) + "\n"

    def log_text(self) -> str:
        return _read(self.log_path)

    def log_lines(self) -> list[str]:
        return [line for line in self.log_text().splitlines() if line.strip()]

    def log_records(self) -> list[dict[str, object]]:
        """The registry's own (logrus, JSON) records; Go's plain ``log`` lines and the
        combined-format access lines are skipped."""
        out = []
        for line in self.log_lines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
        return out

    def requests(self) -> list[dict[str, object]]:
        """One "response completed" record per answered request (method, uri, status,
        remote address; nothing about the client certificate)."""
        return [r for r in self.log_records() if r.get("msg") == "response completed"]

    def request_for(self, uri: str, timeout: float = 5.0) -> dict[str, object]:
        """The "response completed" record for ``uri`` (path and query), waiting for it;
        see :meth:`NginxPeer.record_for` for why requests are found by a unique URI."""
        found: list[dict[str, object]] = []

        def look() -> bool:
            found[:] = [r for r in self.requests() if r.get("http.request.uri") == uri]
            return bool(found)

        if not self.wait_for(look, timeout):
            raise AssertionError(f"no request record for {uri!r}:\n{self.log_text()}")
        return found[-1]

    def handshake_errors(self) -> list[tuple[str, str]]:
        """``(remote address, reason)`` for each failed handshake, e.g.
        ``tls: client didn't provide a certificate`` or
        ``tls: failed to verify client certificate: x509: certificate signed by unknown
        authority``."""
        out = []
        for line in self.log_lines():
            match = _HANDSHAKE_ERROR.search(line)
            if match:
                out.append((match["remote"], match["reason"]))
        return out


HAPROXY_TLS_VERSIONS = ("1.2", "1.3")

# One JSON object per log line, so a subject with quotes or commas cannot break parsing:
# every string sample goes through haproxy's json converter. A sample with no value is
# logged as "-" (read back as ""). %ci:%cp, the client's address, tells connections apart.
_HAPROXY_REQUEST_FIELDS = {
    "kind": "request",
    "client": "%ci:%cp",
    "method": "%HM",
    "uri": "%[capture.req.uri,json(utf8s)]",
    "http_version": "%HV",
    "status": "%ST",
    "termination": "%ts",
    "backend": "%b",
    "ssl_protocol": "%[ssl_fc_protocol]",
    "alpn": "%[ssl_fc_alpn,json(utf8s)]",
    "sni": "%[ssl_fc_sni,json(utf8s)]",
    "resumed": "%[ssl_fc_is_resumed]",
    "ssl_client_verify": "%[ssl_c_verify]",
    "ssl_client_s_dn": "%[ssl_c_s_dn(,0,rfc2253),json(utf8s)]",
    "ssl_client_i_dn": "%[ssl_c_i_dn(,0,rfc2253),json(utf8s)]",
    "ssl_client_sha1": "%[ssl_c_sha1,hex,lower]",
    "ssl_client_serial": "%[ssl_c_serial,hex,lower]",
}

# Failed handshakes are not requests: haproxy logs them with error-log-format instead.
_HAPROXY_ERROR_FIELDS = {
    "kind": "error",
    "client": "%ci:%cp",
    "error": "%[fc_err]",
    "error_str": "%[fc_err_str,json(utf8s)]",
    "ssl_error": "%[ssl_fc_err_str,json(utf8s)]",
    "ssl_protocol": "%[ssl_fc_protocol]",
    "ssl_client_err": "%[ssl_c_err]",
    "ssl_client_ca_err": "%[ssl_c_ca_err]",
    "ssl_client_s_dn": "%[ssl_c_s_dn(,0,rfc2253),json(utf8s)]",
}

# Longest AF_UNIX path Linux takes is 107 bytes plus the NUL.
_UNIX_PATH_MAX = 107


def _haproxy_log_format(fields: dict[str, str]) -> str:
    """A haproxy log-format argument: a JSON object template in a double-quoted string."""
    body = ",".join(f'"{key}":"{value}"' for key, value in fields.items())
    return '"' + ("{" + body + "}").replace('"', '\\"') + '"'


class HAProxyPeer(_Peer):
    """haproxy 2.6 terminating TLS with ``verify required``: a missing or untrusted client
    certificate fails the handshake with an alert (like docker-registry, unlike nginx).

    ``tls_version`` is ``"1.2"`` (``ssl-max-ver TLSv1.2``), ``"1.3"``
    (``ssl-min-ver TLSv1.3``) or None (both). ``alpn`` is the list offered, e.g.
    ``"h2,http/1.1"`` for HTTP/2 (haproxy speaks h2 to clients and HTTP/1.1 upstream).

    Backend: ``upstream="127.0.0.1:<port>"`` proxies everything to that plain-HTTP server
    (a :class:`RegistryPeer` without TLS; ``X-Forwarded-Proto: https`` is added, ``Host``
    and ``Authorization`` pass untouched); without it haproxy answers ``/v2/...`` itself with
    200 ``{}`` and ``Docker-Distribution-API-Version: registry/2.0``, anything else 404. An
    upstream nobody listens on gives haproxy's 503 page at once (``retries 0``).

    What it saw, from its log (``log stdout format raw``: the JSON lines go to the peer's
    stdout file, because haproxy runs in the foreground with ``-db`` and no syslog):

    - :meth:`requests`: one record per HTTP request (per stream under h2) with the client
      address, TLS version, ALPN, verify result and the client certificate's subject,
      issuer, SHA-1 and serial, all in the TLS session that carried the request.
    - :meth:`handshake_failures`: one record per refused handshake (``error-log-format``)
      with haproxy's reason (``fc_err_str``, e.g. "SSL client certificate not trusted" /
      "SSL handshake failure") and OpenSSL's (e.g. "peer did not return a certificate").
    - :meth:`connections`: the distinct client addresses of :meth:`requests`, i.e. the
      accepted handshakes that carried a request.
    - :meth:`stats`: haproxy's ``show info`` counters from its stats socket.
      ``CumSslConns`` counts every TLS connection accepted, failed handshakes included
      (readiness is checked on the stats socket, so none of them is a probe);
      ``CumConns`` also counts the stats socket's own connections.

    Connections that send nothing are not logged (``dontlognull``).
    """

    name = "haproxy"

    def __init__(
        self,
        *,
        server_cert: StrPath,
        server_key: StrPath,
        client_ca: StrPath,
        tls_version: Optional[str] = None,
        alpn: Optional[str] = None,
        upstream: Optional[str] = None,
        binary: Optional[str] = None,
        workdir: Optional[StrPath] = None,
        startup_timeout: float = 10.0,
    ) -> None:
        if tls_version is not None and tls_version not in HAPROXY_TLS_VERSIONS:
            raise ValueError(f"tls_version must be '1.2', '1.3' or None, not {tls_version!r}")
        if alpn is not None and not re.fullmatch(r"[A-Za-z0-9./-]+(,[A-Za-z0-9./-]+)*", alpn):
            raise ValueError(f"alpn must be a comma-separated protocol list, not {alpn!r}")
        if upstream is not None:
            _check_upstream(upstream)
        super().__init__(binary or haproxy_binary(), workdir, startup_timeout)
        self.server_cert = Path(server_cert).resolve()
        self.server_key = Path(server_key).resolve()
        self.client_ca = Path(client_ca).resolve()
        self.tls_version = tls_version
        self.alpn = alpn
        self.upstream = upstream

    @property
    def config_path(self) -> Path:
        return self.workdir / "haproxy.cfg"

    @property
    def pem_path(self) -> Path:
        """Server certificate chain and key in one file, as haproxy's ``crt`` wants it."""
        return self.workdir / "server.pem"

    @property
    def stats_socket_path(self) -> Path:
        return self.workdir / "haproxy.sock"

    @property
    def log_path(self) -> Path:
        """haproxy's stdout and stderr: its log lines, warnings and alerts."""
        return self._stdout_path()

    def _log_paths(self) -> list[Path]:
        return [self._stdout_path(), self.stats_socket_path]

    def _command(self) -> list[str]:
        assert self.binary is not None
        # -db: foreground, no daemon, no master-worker: the child is haproxy itself. No
        # user/group/chroot in the config, so it stays the user that started it.
        return [self.binary, "-db", "-f", str(self.config_path)]

    def _log_for_error(self) -> str:
        return _read(self.log_path)

    def _ready(self) -> bool:
        # haproxy binds every listener (and exits on any failure) before it serves
        # anything, the stats socket included, so an answer there whose Pid is this
        # process means the TLS port is haproxy's and not a bind-race winner's. No probe of
        # the TLS port itself: CumSslConns then counts only the test's own connections.
        if self.process is None:
            return False
        try:
            info = self.stats(timeout=0.5)
        except OSError:
            return False
        return info.get("Pid") == str(self.process.pid)

    def _write_config(self) -> None:
        if len(str(self.stats_socket_path)) > _UNIX_PATH_MAX:
            raise PeerStartError(
                f"work dir path too long for haproxy's stats socket: {self.stats_socket_path}"
            )
        # Leaf (+ intermediates) then key: the order haproxy reads a combined crt file in.
        pem = self.server_cert.read_bytes().rstrip(b"\n") + b"\n"
        pem += self.server_key.read_bytes()
        fd = os.open(self.pem_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        self.config_path.write_text(self.config_text(), encoding="utf-8")

    def config_text(self) -> str:
        """The haproxy.cfg this peer runs with."""
        bind = [
            f"bind 127.0.0.1:{self.port} ssl crt {self.pem_path}",
            f"ca-file {self.client_ca} verify required",
        ]
        if self.tls_version == "1.2":
            bind.append("ssl-min-ver TLSv1.2 ssl-max-ver TLSv1.2")
        elif self.tls_version == "1.3":
            bind.append("ssl-min-ver TLSv1.3")
        else:
            bind.append("ssl-min-ver TLSv1.2")
        if self.alpn is not None:
            bind.append(f"alpn {self.alpn}")
        lines = [
            "global",
            # Raw lines on stdout: haproxy writes each one as it logs it (no syslog daemon,
            # no UDP listener to drain), and the peer redirects stdout to a file.
            "    log stdout format raw daemon",
            f"    stats socket {self.stats_socket_path} mode 600 level admin",
            "    nbthread 1",
            "defaults",
            "    mode http",
            "    log global",
            "    option dontlognull",
            "    timeout connect 2s",
            "    timeout client 30s",
            "    timeout server 30s",
            "    timeout http-request 10s",
            "    timeout http-keep-alive 5s",
            "frontend dockercerts",
            "    " + " ".join(bind),
            f"    log-format {_haproxy_log_format(_HAPROXY_REQUEST_FIELDS)}",
            f"    error-log-format {_haproxy_log_format(_HAPROXY_ERROR_FIELDS)}",
        ]
        if self.upstream is not None:
            lines += [
                "    http-request set-header X-Forwarded-Proto https",
                "    default_backend upstream",
                "backend upstream",
                # No retry after a refused connect (haproxy waits 1 s between retries): a
                # closed upstream is a 503 at once.
                "    retries 0",
                f"    server upstream {self.upstream}",
            ]
        else:
            lines += [
                "    http-request return status 200 content-type application/json "
                'string "{}" hdr Docker-Distribution-API-Version registry/2.0 '
                "if { path_beg /v2/ }",
                "    http-request return status 404",
            ]
        return "\n".join(lines) + "\n"

    def stats(self, timeout: float = 5.0) -> dict[str, str]:
        """``show info`` from the stats socket as a dict (``CumSslConns``, ``Pid``...)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(self.stats_socket_path))
            sock.sendall(b"show info\n")
            chunks = []
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        out = {}
        for line in b"".join(chunks).decode("utf-8", "replace").splitlines():
            key, sep, value = line.partition(":")
            if sep:
                out[key.strip()] = value.strip()
        return out

    def log_text(self) -> str:
        return _read(self.log_path)

    def records(self) -> list[dict[str, str]]:
        """Every JSON log record (requests and failed handshakes); ``-`` reads as ``""``.
        haproxy's own warnings and alerts share the file and are skipped."""
        out = []
        for line in self.log_text().splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    record = json.loads(line)
                    out.append({k: ("" if v == "-" else str(v)) for k, v in record.items()})
        return out

    def requests(self) -> list[dict[str, str]]:
        return [r for r in self.records() if r.get("kind") == "request"]

    def handshake_failures(self) -> list[dict[str, str]]:
        return [r for r in self.records() if r.get("kind") == "error"]

    def connections(self) -> list[str]:
        """Client addresses (``ip:port``) of connections that carried requests, in order."""
        return list(dict.fromkeys(r["client"] for r in self.requests()))

    def record_for(self, uri: str, timeout: float = 5.0) -> dict[str, str]:
        """The request record for ``uri`` (path and query), waiting for it: haproxy logs a
        request when it ends, after the client has its response."""
        found: list[dict[str, str]] = []

        def look() -> bool:
            found[:] = [r for r in self.requests() if r.get("uri") == uri]
            return bool(found)

        if not self.wait_for(look, timeout):
            raise AssertionError(f"no haproxy record for {uri!r}:\n{self.log_text()}")
        return found[-1]

    def wait_for_handshake_failures(self, count: int, timeout: float = 5.0) -> list[dict[str, str]]:
        """The failed-handshake records once at least ``count`` exist."""
        self.wait_for(lambda: len(self.handshake_failures()) >= count, timeout)
        return self.handshake_failures()


_TINYPROXY_REQUEST = re.compile(
    r"Request \(file descriptor \d+\): (?P<method>[A-Z]+) (?P<target>\S+) HTTP/\d(?:\.\d)?"
)


class TinyproxyPeer(_Peer):
    """tinyproxy as a plain HTTP forward proxy on ``http://127.0.0.1:<port>``, answering
    ``CONNECT`` (HTTPS through the proxy) and absolute-URI requests from 127.0.0.1 only.

    ``connect_ports`` becomes ``ConnectPort`` lines. None (the default) writes none, and
    with no ``ConnectPort`` line tinyproxy allows CONNECT to every port (the stock config's
    443/563 would refuse a peer on a random high port); ``[443]`` shows a refusal (403).

    No ``User``/``Group`` line: as root tinyproxy then warns ("You SHOULD set a UserName")
    and stays root instead of switching to nobody, who could not write the 0700 work dir;
    as anyone else it never switches. Log and PID file stay in the work dir.

    What it saw: :meth:`requests` (``(method, target)`` from its ``LogLevel Info`` log,
    one per request line it read) and :meth:`connects` (the ``host:port`` of each
    ``CONNECT``), so a test can prove a request went through the proxy, or that a
    ``NO_PROXY`` host did not. tinyproxy logs the request line before it dials the target,
    so it is in the log by the time the client has the proxy's answer.
    """

    name = "tinyproxy"

    def __init__(
        self,
        *,
        connect_ports: Optional[Sequence[int]] = None,
        binary: Optional[str] = None,
        workdir: Optional[StrPath] = None,
        startup_timeout: float = 10.0,
    ) -> None:
        ports = None if connect_ports is None else [int(p) for p in connect_ports]
        if ports is not None and any(not 0 <= p <= 65535 for p in ports):
            raise ValueError(f"connect_ports must be TCP ports, not {connect_ports!r}")
        super().__init__(binary or tinyproxy_binary(), workdir, startup_timeout)
        self.connect_ports = ports

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The proxy URL for httpx's ``proxy=`` or ``HTTPS_PROXY``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.workdir / "tinyproxy.conf"

    @property
    def log_path(self) -> Path:
        return self.workdir / "tinyproxy.log"

    @property
    def pid_path(self) -> Path:
        return self.workdir / "tinyproxy.pid"

    def _log_paths(self) -> list[Path]:
        return [self._stdout_path(), self.log_path, self.pid_path]

    def _command(self) -> list[str]:
        assert self.binary is not None
        # -d: stay in the foreground (the child is tinyproxy itself, stop() signals it).
        return [self.binary, "-d", "-c", str(self.config_path)]

    def _log_for_error(self) -> str:
        return _read(self.log_path) + _read(self._stdout_path())

    def _bind_failed(self) -> bool:
        # A taken port shows up on stderr only as this, with exit status 71.
        text = self._log_for_error().lower()
        return "could not create listening sockets" in text or super()._bind_failed()

    def _ready(self) -> bool:
        # Logged after the listening socket exists; waiting for it instead of probing the
        # port keeps a probe's empty connection out of the log.
        return "Starting main loop. Accepting connections." in _read(self.log_path)

    def _write_config(self) -> None:
        self.config_path.write_text(self.config_text(), encoding="utf-8")

    def config_text(self) -> str:
        """The tinyproxy.conf this peer runs with."""
        lines = [
            f"Port {self.port}",
            "Listen 127.0.0.1",
            "Allow 127.0.0.1",
            "Timeout 30",
            "MaxClients 32",
            f'LogFile "{self.log_path}"',
            # Info, not Connect: the readiness line above is logged at Info.
            "LogLevel Info",
            f'PidFile "{self.pid_path}"',
        ]
        lines += [f"ConnectPort {port}" for port in self.connect_ports or ()]
        return "\n".join(lines) + "\n"

    def log_text(self) -> str:
        return _read(self.log_path)

    def requests(self) -> list[tuple[str, str]]:
        """``(method, target)`` per request line tinyproxy read, in order: ``("CONNECT",
        "localhost:8443")``, ``("GET", "http://127.0.0.1:5000/v2/")``."""
        return [
            (m["method"], m["target"])
            for m in (_TINYPROXY_REQUEST.search(line) for line in self.log_text().splitlines())
            if m
        ]

    def connects(self) -> list[str]:
        """The ``host:port`` of every CONNECT request, in order."""
        return [target for method, target in self.requests() if method == "CONNECT"]
