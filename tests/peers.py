"""Real nginx and docker-registry servers on loopback, for the project's own tests.

Not public API. The point is to check dockercerts (and its fake ``MTLSServer``) against the
servers users actually run: the way a peer rejects a client certificate (a TLS alert, an
HTTP 400, a 403, a 495/496) decides whether the transport moves on to the next certificate,
so it is measured here rather than assumed.

Both peers are context managers that start the binary as a child process on
``127.0.0.1:<free port>``, wait until it accepts connections, and on exit stop it and its
workers (SIGTERM, then SIGKILL to the whole process group). Their ``url`` uses ``localhost``
so a server certificate issued for ``localhost`` verifies.

What each peer can tell about the client certificate that arrived:

- nginx: its access log has one JSON record per request with the client subject, issuer,
  SHA-1 fingerprint (nginx's ``$ssl_client_fingerprint`` is SHA-1), serial, verify result and
  TLS protocol: :meth:`NginxPeer.records`.
- docker-registry 2.8 logs nothing about an accepted client certificate (its "response
  completed" record has no TLS fields). A rejected one shows up only as Go's
  ``http: TLS handshake error from <addr>: <reason>`` line: :meth:`RegistryPeer.handshake_errors`.
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
from pathlib import Path
from types import TracebackType
from typing import Callable, Optional, TypeVar, Union

import pytest

__all__ = [
    "NGINX_MODES",
    "NginxPeer",
    "PeerStartError",
    "RegistryPeer",
    "free_port",
    "nginx_binary",
    "port_is_open",
    "registry_binary",
    "require_peer",
]

StrPath = Union[str, "os.PathLike[str]"]

# Set by .ci/run: there a missing peer is a broken CI image, not a reason to skip.
REQUIRE_ENV = "DOCKERCERTS_REQUIRE_PEERS"

_INSTALL_HINT = {
    "nginx": "apt-get install nginx-light",
    "docker-registry": "apt-get install docker-registry",
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


def require_peer(name: str) -> str:
    """Return the binary for ``name`` ("nginx" or "docker-registry"), or skip the test.

    With ``DOCKERCERTS_REQUIRE_PEERS=1`` (CI) the test fails instead of skipping, so a
    machine without the peers cannot produce a green run that tested nothing.
    """
    if name == "nginx":
        binary = nginx_binary()
    elif name in ("docker-registry", "registry"):
        name = "docker-registry"
        binary = registry_binary()
    else:
        raise ValueError(f"unknown peer {name!r}; expected 'nginx' or 'docker-registry'")
    if binary is not None:
        return binary
    reason = f"{name} not installed: {_INSTALL_HINT[name]} (or run .ci/run)"
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


_P = TypeVar("_P", bound="_Peer")

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


class _Peer:
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

    def __enter__(self: _P) -> _P:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.stop()

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
    ``/v2/`` answers 200 ``{}`` with ``Docker-Distribution-API-Version: registry/2.0``;
    ``/v2/_catalog`` answers ``{"repositories":["team/app"]}``.
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
        binary: Optional[str] = None,
        workdir: Optional[StrPath] = None,
        startup_timeout: float = 10.0,
    ) -> None:
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
            # Sent as the acceptable-CA list in the CertificateRequest as well.
            f"        ssl_client_certificate {self.client_ca};",
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
        lines += [
            "        location /v2/ {",
            "            add_header Docker-Distribution-API-Version registry/2.0 always;",
            "            return 200 '{}';",
            "        }",
            "        location = /v2/_catalog {",
            "            add_header Docker-Distribution-API-Version registry/2.0 always;",
            """            return 200 '{"repositories":["team/app"]}';""",
            "        }",
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


class RegistryPeer(_Peer):
    """docker-registry 2.8 (distribution) with ``http.tls.clientcas``: Go's
    RequireAndVerifyClientCert, so a missing or untrusted certificate fails the handshake.

    ``minimum_tls`` is ``"tls1.2"`` or ``"tls1.3"`` (2.8 accepts both).
    """

    name = "registry"

    def __init__(
        self,
        *,
        server_cert: StrPath,
        server_key: StrPath,
        client_ca: StrPath,
        minimum_tls: str = "tls1.2",
        binary: Optional[str] = None,
        workdir: Optional[StrPath] = None,
        startup_timeout: float = 10.0,
    ) -> None:
        if minimum_tls not in _TLS_MIN:
            raise ValueError(f"minimum_tls must be one of {sorted(_TLS_MIN)}")
        super().__init__(binary or registry_binary(), workdir, startup_timeout)
        self.server_cert = Path(server_cert).resolve()
        self.server_key = Path(server_key).resolve()
        self.client_ca = Path(client_ca).resolve()
        self.minimum_tls = minimum_tls

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
        self.config_path.write_text(self.config_text(), encoding="utf-8")

    def config_text(self) -> str:
        # JSON is valid YAML and needs no quoting rules for paths.
        config = {
            "version": 0.1,
            "log": {"level": "info", "formatter": "json"},
            "storage": {
                "filesystem": {"rootdirectory": str(self.workdir / "storage")},
                # The purge timer and the health check touch storage in the background;
                # off, the log holds only what the tests caused.
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {
                "addr": f"127.0.0.1:{self.port}",
                # Set, so the registry does not warn about generating one.
                "secret": secrets.token_hex(16),
                "tls": {
                    "certificate": str(self.server_cert),
                    "key": str(self.server_key),
                    "clientcas": [str(self.client_ca)],
                    "minimumtls": self.minimum_tls,
                },
            },
            "health": {"storagedriver": {"enabled": False}},
        }
        # No redis, no notifications, no auth: the registry starts offline as it is.
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
