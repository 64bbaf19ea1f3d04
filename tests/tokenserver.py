"""A Docker token server on loopback, for a :class:`peers.RegistryPeer` with token auth.

Not public API. Real registries behind real auth answer with Bearer challenges, scoped
tokens, ``insufficient_scope`` and ``invalid_token``; the transport must not mistake those
401s for a refused client certificate. This server issues the tokens such a registry
(distribution 2.8, ``auth.token``) accepts, with exactly the access a test chooses.

Protocol (Docker token spec): ``GET /token?service=<svc>&scope=repository:<name>:pull,push``
(``scope`` may repeat, or hold several space-separated scopes) answers
``{"token": ..., "access_token": ..., "expires_in": ..., "issued_at": ...}``.

Tokens are JWTs signed ES256 with a P-256 key made at start-up, the signing certificate
(self-signed) in the ``x5c`` header. distribution 2.8 takes the ``x5c`` leaf as the key when
it verifies against ``rootcertbundle``; the self-signed certificate is that bundle, so no
``kid`` (libtrust key ID) is needed. Verified by a real push and pull in
``tests/test_peers_more.py``.

Example::

    with TokenServer(grant={"repository:team/app": ["pull"]}) as tokens, RegistryPeer(
        token_auth=tokens.auth
    ) as registry:
        token = tokens.fetch("repository:team/app:pull,push")  # pull only
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import secrets
import ssl
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional, Union
from urllib.parse import parse_qs, urlsplit

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID
from peers import Served, TokenAuth

__all__ = ["Access", "Grant", "Scope", "TokenRequest", "TokenServer"]


@dataclass(frozen=True)
class Scope:
    """One requested scope: ``repository:team/app:pull,push`` ->
    ``Scope("repository", "team/app", ("pull", "push"))``."""

    type: str
    name: str
    actions: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Scope:
        # The name may hold a colon (``registry.test:5000/app``): the type ends at the first
        # colon, the actions start after the last.
        kind, sep1, rest = text.partition(":")
        name, sep2, actions = rest.rpartition(":")
        if not (sep1 and sep2 and kind and name):
            raise ValueError(f"not a scope: {text!r}")
        return cls(kind, name, tuple(a for a in actions.split(",") if a))

    @property
    def resource(self) -> str:
        """``type:name``, a grant-table key that matches whatever actions were asked for."""
        return f"{self.type}:{self.name}"

    def __str__(self) -> str:
        return f"{self.resource}:{','.join(self.actions)}"


@dataclass(frozen=True)
class Access:
    """One entry of the token's ``access`` claim."""

    type: str
    name: str
    actions: tuple[str, ...]

    def claim(self) -> dict[str, Any]:
        return {"type": self.type, "name": self.name, "actions": list(self.actions)}


@dataclass(frozen=True)
class TokenRequest:
    """What the token endpoint was asked, and what it gave."""

    service: str
    scopes: tuple[Scope, ...]
    account: Optional[str]
    granted: tuple[Access, ...]
    lifetime: int


# A table keyed by the scope as requested ("repository:team/app:pull,push") or by its
# resource ("repository:team/app"), giving the actions allowed (granted: the requested ones
# among them); or a callable given (scope, account) returning the actions to grant as they
# are. None grants everything requested.
Grant = Union[
    Mapping[str, Iterable[str]],
    Callable[[Scope, Optional[str]], Iterable[str]],
    None,
]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _json_bytes(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


class TokenServer(Served):
    """Threaded HTTP (or, with ``tls``, HTTPS) token endpoint on ``127.0.0.1:<free port>``.

    ``grant``: see :data:`Grant`; settable between requests. ``lifetime``: seconds a token
    lives; negative makes tokens that are born expired (distribution allows 60 s of skew, so
    use less than -60 for ``error="invalid_token"``). ``users``: when given, basic auth with
    one of these ``user -> password`` pairs is required (401 otherwise); the user name is the
    token's ``sub`` either way. ``tls``: a server-side :class:`ssl.SSLContext` to serve
    HTTPS (``url`` then uses ``localhost``, for the certificate's name).

    Every answered request is kept in :attr:`requests`.
    """

    def __init__(
        self,
        *,
        service: str = "dockercerts-test-registry",
        issuer: str = "dockercerts-test-token-issuer",
        grant: Grant = None,
        lifetime: int = 300,
        users: Optional[Mapping[str, str]] = None,
        tls: Optional[ssl.SSLContext] = None,
    ) -> None:
        self.service = service
        self.issuer = issuer
        self.grant: Grant = grant
        self.lifetime = lifetime
        self.users = None if users is None else dict(users)
        self.tls = tls
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dockercerts token signer")])
        now = _dt.datetime.now(_dt.timezone.utc)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _dt.timedelta(hours=1))
            .not_valid_after(now + _dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.cert_pem: bytes = self.certificate.public_bytes(serialization.Encoding.PEM)
        """The signing certificate: the registry's ``rootcertbundle``."""
        self.requests: list[TokenRequest] = []
        self._lock = threading.Lock()
        self._server: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    # --- lifecycle ----------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("token server not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = "localhost" if self.tls is not None else "127.0.0.1"
        return f"{'https' if self.tls is not None else 'http'}://{host}:{self.port}"

    @property
    def realm(self) -> str:
        return f"{self.url}/token"

    @property
    def auth(self) -> TokenAuth:
        """The registry's ``auth.token`` settings for this server (after :meth:`start`)."""
        return TokenAuth(
            realm=self.realm,
            service=self.service,
            issuer=self.issuer,
            rootcert_pem=self.cert_pem,
        )

    def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("token server already started")
        server = _Server(("127.0.0.1", 0), _Handler)
        server.owner = self
        # The socket is listening once the constructor returns: no readiness wait needed.
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="dockercerts-token-server",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._thread = None
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    # --- tokens -------------------------------------------------------------------------

    def granted(self, scope: Scope, account: Optional[str]) -> tuple[str, ...]:
        """The actions ``grant`` gives for ``scope``."""
        grant = self.grant
        if grant is None:
            return scope.actions
        if callable(grant):
            return tuple(grant(scope, account))
        allowed = grant.get(str(scope), grant.get(scope.resource))
        if allowed is None:
            return ()
        allowed = set(allowed)
        return tuple(a for a in scope.actions if a in allowed)

    def issue(
        self,
        access: Sequence[Access] = (),
        *,
        lifetime: Optional[int] = None,
        account: Optional[str] = None,
        audience: Optional[str] = None,
        issuer: Optional[str] = None,
    ) -> str:
        """A signed token with exactly ``access``, without going through HTTP.

        ``audience`` and ``issuer`` default to the server's: override them to make a token
        the registry refuses for another reason than scope or time.
        """
        now = int(time.time())
        life = self.lifetime if lifetime is None else lifetime
        # A born-expired token must not be "not yet valid" too: nbf stays before exp.
        not_before = min(now, now + life) - 1
        claims = {
            "iss": self.issuer if issuer is None else issuer,
            "sub": account or "",
            "aud": self.service if audience is None else audience,
            "exp": now + life,
            "nbf": not_before,
            "iat": not_before,
            "jti": secrets.token_hex(16),
            "access": [a.claim() for a in access],
        }
        der = self.certificate.public_bytes(serialization.Encoding.DER)
        header = {
            "typ": "JWT",
            "alg": "ES256",
            # x5c is standard base64 (RFC 7515, 4.1.6), unlike the rest of a JWS.
            "x5c": [base64.b64encode(der).decode("ascii")],
        }
        signing_input = f"{_b64url(_json_bytes(header))}.{_b64url(_json_bytes(claims))}"
        der_signature = self._key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der_signature)
        # JWS ES256 wants r || s, 32 bytes each, not the DER sequence.
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return f"{signing_input}.{_b64url(signature)}"

    def token_for(
        self, *scopes: str, lifetime: Optional[int] = None, account: Optional[str] = None
    ) -> str:
        """A token for ``scopes`` as the endpoint would grant them (``grant`` applies)."""
        access = self._access([Scope.parse(s) for s in scopes], account)
        return self.issue(access, lifetime=lifetime, account=account)

    def fetch(
        self,
        *scopes: str,
        auth: Optional[tuple[str, str]] = None,
        verify: Union[bool, ssl.SSLContext] = True,
    ) -> str:
        """Get a token over HTTP(S), as a client would; raises on a non-200 answer.
        ``verify``: a context trusting the ``tls`` server's certificate, for HTTPS."""
        params = [("service", self.service)] + [("scope", s) for s in scopes]
        response = httpx.get(self.realm, params=params, auth=auth, verify=verify, timeout=5.0)
        response.raise_for_status()
        token: str = response.json()["token"]
        return token

    def _access(self, scopes: Sequence[Scope], account: Optional[str]) -> list[Access]:
        out = []
        for scope in scopes:
            actions = self.granted(scope, account)
            if actions:
                out.append(Access(scope.type, scope.name, actions))
        return out

    def _answer(self, query: str, authorization: Optional[str]) -> tuple[int, dict[str, Any]]:
        """(status, JSON body) for ``GET /token?<query>``."""
        account = None
        if authorization and authorization.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(authorization[6:].strip()).decode("utf-8")
            except ValueError:
                decoded = ""
            user, sep, password = decoded.partition(":")
            if sep:
                account = user
                if self.users is not None and self.users.get(user) != password:
                    return 401, {"details": "bad credentials"}
        if self.users is not None and account is None:
            return 401, {"details": "credentials required"}
        params = parse_qs(query, keep_blank_values=True)
        service = params.get("service", [""])[0]
        if service != self.service:
            return 400, {"details": f"unknown service {service!r}"}
        try:
            scopes = [Scope.parse(s) for value in params.get("scope", []) for s in value.split()]
        except ValueError as exc:
            return 400, {"details": str(exc)}
        lifetime = self.lifetime
        access = self._access(scopes, account)
        token = self.issue(access, lifetime=lifetime, account=account)
        with self._lock:
            self.requests.append(
                TokenRequest(service, tuple(scopes), account, tuple(access), lifetime)
            )
        issued = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
        return 200, {
            "token": token,
            "access_token": token,
            "expires_in": lifetime,
            "issued_at": issued.isoformat().replace("+00:00", "Z"),
        }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: TokenServer

    def finish_request(self, request: Any, client_address: Any) -> None:
        # Runs in the request's own thread: a slow TLS handshake blocks only that thread,
        # not the accept loop.
        if self.owner.tls is not None:
            request = self.owner.tls.wrap_socket(request, server_side=True)
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-request is not the test's failure; stay quiet.
        pass


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path != "/token":
            self._send(404, {"details": "not found"})
            return
        status, body = self.server.owner._answer(url.query, self.headers.get("Authorization"))
        extra = {"WWW-Authenticate": 'Basic realm="dockercerts"'} if status == 401 else {}
        self._send(status, body, extra)

    def _send(
        self, status: int, body: dict[str, Any], extra: Optional[dict[str, str]] = None
    ) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        # The test reads TokenServer.requests, not stderr.
        pass
