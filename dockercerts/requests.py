"""A requests adapter that sends each HTTPS request with the host's certs.d candidates.

The requests front end of :mod:`dockercerts.flow`, as :class:`~dockercerts.Transport` is the
httpx one: the same folder per ``host[:port]``, the same candidates in Docker's order, the
same verdicts, replay rules, answer ranking and per-host memory (:mod:`dockercerts._hosts`),
so a registry client built on requests (oras-py, python-dxf, scripts) behaves exactly as one
built on httpx::

    import dockercerts.requests

    session = dockercerts.requests.session()           # or, on a session of your own:
    session.mount("https://", dockercerts.requests.Adapter())
    session.get("https://registry.example.com:5000/v2/")

Each candidate has its own urllib3 pools (:class:`CandidateAdapter`, an ``HTTPAdapter`` whose
pools carry the candidate's ``ssl`` context, watched by :mod:`dockercerts._watch`; ``inner=``
makes them), so the host's winner keeps its connections alive between requests. What this
module adds to the flow is requests' side of it: sending, reading, closing, and where the
outcome goes.

* **The records** of an exchange are ``response.dockercerts_attempts`` (:func:`attempts`),
  requests' equivalent of httpx's ``response.extensions["dockercerts.attempts"]``.
* **Errors** are requests' own: :class:`ClientCertificateRejected` when every candidate was
  refused in TLS and :class:`CertsDirSSLError` when the host's folder cannot be used, both
  ``requests.exceptions.SSLError``\\ s (a registry client that retries on connection errors
  does not retry these); the errors of a try (a timeout, a refused connection) are what
  requests raises.
* **requests' TLS settings do not apply**: the folder decides the trust and the client
  certificate. ``verify=True`` (the default), requests' own bundle and the one named by
  ``REQUESTS_CA_BUNDLE`` or ``CURL_CA_BUNDLE`` are requests' defaults, which the folder
  replaces, as Docker never reads them; ``verify=False``, another ``verify=`` path and
  ``cert=`` are refused with :class:`~dockercerts.errors.OverrideRefused`, which says what
  to put in the folder instead.
* **Proxies** are requests' own: ``HTTPS_PROXY``/``NO_PROXY`` from the environment (when the
  session's ``trust_env`` is on) and ``proxies=``, applied per request by requests. The
  candidates' TLS runs through the CONNECT tunnel as without a proxy.
* ``http://`` requests (when the adapter is mounted for them) are plain requests.
* **containerd routing** (``runtime="containerd"``) is the transports': each try goes to the
  endpoint the flow aims it at (:func:`~dockercerts.routing.rewrite`), through the proxies
  of the endpoint's own URL, as requests re-chooses them for a redirect's new URL
  (:func:`dockercerts._prepared.endpoint_proxies`): the environment's proxy unless
  ``NO_PROXY`` (or ``proxies={"no_proxy": ...}``) names the endpoint, and only when the
  environment is trusted; explicit ``proxies=`` entries win everywhere. requests does not
  tell an adapter whether its session trusts the environment: the adapter's ``trust_env``
  (default ``True``, as requests') says it, and :func:`session` keeps the two equal; on a
  session of your own with ``trust_env = False``, give the adapter ``trust_env=False``.
  Requests to the registry itself (and every request unrouted) keep requests' choice as it
  is. ``response.url`` is the endpoint's URL.

Needs requests: ``pip install 'dockercerts[requests]'``. The rest of dockercerts never
imports it.
"""

from __future__ import annotations

import inspect
import os
import ssl
import time
from pathlib import Path
from typing import Any, Callable, Optional, Union

from .errors import (
    Attempt,
    CertsDirError,
    CertsDirUnusable,
    EveryCertificateRejected,
    MissingExtraError,
    OverrideRefused,
)

try:
    import requests
    from requests.adapters import DEFAULT_POOLBLOCK, DEFAULT_POOLSIZE, DEFAULT_RETRIES, HTTPAdapter
    from requests.models import PreparedRequest, Response
    from requests.utils import DEFAULT_CA_BUNDLE_PATH, select_proxy
except ImportError:  # exercised in a test, by hiding requests
    raise MissingExtraError("dockercerts.requests", "requests", "requests") from None

import httpx

from . import canames
from ._drive import run
from ._hosts import Hosts, HostState
from ._options import OPTIONS_DOC, options
from ._prepared import Body, EndpointProxies, Home
from ._slots import Slot
from ._watch import sends, watched
from .flow import Close, Decision, Exchange, Learn, Read, Send, Sent, Step, settle, steady
from .loader import Candidate
from .locate import StrPath
from .rejection import DOCKER, RejectionPolicy
from .scan import Password
from .trust import Trust

__all__ = [
    "ATTEMPTS",
    "Adapter",
    "CandidateAdapter",
    "CertsDirSSLError",
    "ClientCertificateRejected",
    "attempts",
    "session",
]

#: The response attribute holding the exchange's :class:`~dockercerts.errors.Attempt` records.
ATTEMPTS = "dockercerts_attempts"


class ClientCertificateRejected(EveryCertificateRejected, requests.exceptions.SSLError):
    """Every client certificate of the host was rejected and the last one failed in TLS.

    ``attempts`` lists each candidate tried, in order, and what happened to it; ``directory``
    is the host directory they came from. The requests twin of
    :class:`dockercerts.ClientCertificateRejected` (both are
    :class:`~dockercerts.errors.EveryCertificateRejected`).
    """


class CertsDirSSLError(CertsDirUnusable, requests.exceptions.SSLError):
    """The host's folder cannot be used; ``str()`` is the folder error's.

    ``error`` is the loader's own exception (for instance a
    :class:`~dockercerts.MissingKeyError`), ``paths`` its paths. The requests twin of
    :class:`dockercerts.CertsDirTransportError` (both are
    :class:`~dockercerts.errors.CertsDirUnusable`, hence :class:`~dockercerts.CertsDirError`).
    """


def attempts(response: Response) -> tuple[Attempt, ...]:
    """The :class:`~dockercerts.errors.Attempt` records of the exchange that gave ``response``
    (``()`` for a response that did not come through an :class:`Adapter`).

        >>> session = dockercerts.requests.session()  # doctest: +SKIP
        >>> r = session.get("https://registry.example.com:5000/v2/")  # doctest: +SKIP
        >>> [(a.candidate, a.verdict) for a in dockercerts.requests.attempts(r)]  # doctest: +SKIP
        [('a-old', 'rejected'), ('b-new', 'accepted')]
    """
    found: tuple[Attempt, ...] = getattr(response, ATTEMPTS, ())
    return found


class CandidateAdapter(HTTPAdapter):
    """One candidate's pools: urllib3 connections made with ``ssl_context`` only; what
    :class:`Adapter`'s ``inner=`` makes by default. ``pool_options`` are ``HTTPAdapter``'s.

    requests would put its own trust into the pools (``cert_verify`` sets certifi's bundle or
    ``verify=``'s path, which urllib3 loads into the context it is given) and key them by
    ``verify``/``cert``; here the context is part of every pool, proxied ones too, and
    nothing else about TLS is.
    """

    def __init__(self, ssl_context: ssl.SSLContext, **pool_options: Any) -> None:
        self._context = ssl_context
        super().__init__(**pool_options)

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = DEFAULT_POOLBLOCK, **kwargs: Any
    ) -> None:
        super().init_poolmanager(connections, maxsize, block, ssl_context=self._context, **kwargs)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        return super().proxy_manager_for(proxy, ssl_context=self._context, **proxy_kwargs)

    def build_connection_pool_key_attributes(
        self, request: PreparedRequest, verify: Any, cert: Any = None
    ) -> tuple[Any, Any]:
        host_params, _ = super().build_connection_pool_key_attributes(request, True, None)
        return host_params, {}

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        return None


def _checked_inner(inner: Callable[..., HTTPAdapter]) -> Callable[..., HTTPAdapter]:
    """``inner``, refused now if it cannot be called as :meth:`Adapter._make` calls it (a
    plain ``HTTPAdapter`` class, which would leave the context out, is refused here)."""
    if not callable(inner):
        raise TypeError(f"inner= must be a callable that makes an HTTPAdapter, not {inner!r}")
    try:
        signature = inspect.signature(inner)
    except (TypeError, ValueError):  # no signature to read (a C callable): its own call checks
        return inner
    try:
        signature.bind(
            ssl_context=None, pool_connections=1, pool_maxsize=1, max_retries=0, pool_block=False
        )
    except TypeError as exc:
        name = getattr(inner, "__name__", type(inner).__name__)
        raise TypeError(
            f"inner={name} cannot be called with ssl_context= and the pool options "
            f"({exc}): subclass or wrap dockercerts.requests.CandidateAdapter"
        ) from None
    return inner


def _wait_timeout(timeout: Any) -> Optional[float]:
    """How long a request waits for another one's search: its connect timeout."""
    if isinstance(timeout, tuple):
        timeout = timeout[0]
    connect = getattr(timeout, "connect_timeout", timeout)  # urllib3's Timeout
    return connect if isinstance(connect, (int, float)) else None


class Adapter(HTTPAdapter):
    """A requests adapter that sends each HTTPS request with the host's certs.d candidates.

    Mount it for ``https://`` (:func:`session` does): every request uses the host directory of
    its ``host[:port]`` under ``root`` (default: Docker's, :func:`~dockercerts.certs_root`),
    named as :func:`dockercerts.docker_host_names` names it (a URL written with ``:443``
    reads the same folders as one without). Candidates are tried in Docker's order; when the
    server rejects one (see :mod:`dockercerts.flow`) the same request is sent with the next.
    The one that works is remembered and tried first next time, over its own keep-alive
    pool.

        >>> import requests, dockercerts.requests
        >>> session = requests.Session()
        >>> session.mount("https://", dockercerts.requests.Adapter(root="./certs.d"))
        >>> session.get("https://registry.example.com:5000/v2/")  # doctest: +SKIP

    The options before ``pool_connections`` are :class:`~dockercerts.Transport`'s:
    """

    __doc__ = (
        (__doc__ or "")
        + OPTIONS_DOC
        + """ ``order="ca-names"`` (needs ``dockercerts[probe]``) tries the pairs the
    server's CA names list first, as the transports do (:mod:`dockercerts.canames`: the names
    are read through the proxy requests uses for the URL, routed the endpoint's).
    ``pool_connections``, ``pool_maxsize``, ``max_retries`` and ``pool_block`` are
    ``HTTPAdapter``'s, for each candidate's pools. A request waiting for another one's search
    of a cold host waits at most its connect timeout. ``trust_env`` is the session's
    (:func:`session` sets it): whether a routed request's endpoints take the environment's
    proxies (see the module).

    ``inner`` makes each candidate's ``HTTPAdapter`` (default :class:`CandidateAdapter`),
    called with keyword arguments only: ``ssl_context``, the candidate's context already
    watched for TLS 1.3 refusals (so that a rejection after the handshake is seen), and the
    four pool options above. A subclass of :class:`CandidateAdapter`, a ``functools.partial``
    of one or a function that wraps one all fit; other callables are refused at once::

        >>> class Logged(dockercerts.requests.CandidateAdapter):
        ...     def send(self, request, *args, **kwargs):
        ...         print("sending", request.url)
        ...         return super().send(request, *args, **kwargs)
        >>> adapter = dockercerts.requests.Adapter(inner=Logged)
"""
    )

    def __init__(
        self,
        *,
        root: Optional[StrPath] = None,
        platform: Optional[str] = None,
        trust: Optional[Trust] = None,
        password: Optional[Password] = None,
        policy: Union[RejectionPolicy, str] = DOCKER,
        refresh: float = 1.0,
        recheck: float = 60.0,
        max_hosts: int = 256,
        order: str = "docker",
        runtime: str = "docker",
        cert_dir: Optional[StrPath] = None,
        system: str = "openssl",
        pool_connections: int = DEFAULT_POOLSIZE,
        pool_maxsize: int = DEFAULT_POOLSIZE,
        max_retries: Any = DEFAULT_RETRIES,
        pool_block: bool = DEFAULT_POOLBLOCK,
        inner: Optional[Callable[..., HTTPAdapter]] = None,
        trust_env: bool = True,
    ) -> None:
        if not isinstance(trust_env, bool):
            raise TypeError(f"trust_env must be True or False, not {trust_env!r}")
        self._inner = CandidateAdapter if inner is None else _checked_inner(inner)
        #: Whether the session trusts the environment (its ``trust_env``): routed, the
        #: environment's proxies for an endpoint other than the request's own URL.
        self.trust_env = trust_env
        self._options = options(
            root,
            platform,
            trust,
            password,
            policy,
            refresh,
            recheck,
            order=order,
            runtime=runtime,
            cert_dir=cert_dir,
            system=system,
        )
        self._hosts: Hosts[HTTPAdapter] = Hosts(self._options, self._make_for, max_hosts)
        # requests' URL's "scheme://netloc" -> the origin the host state is looked up by.
        self._origins: dict[str, httpx.URL] = {}
        self._max_origins = 4 * max_hosts
        self._ends = EndpointProxies(4 * max_hosts)  # routed: each endpoint's proxies
        self._pools = (pool_connections, pool_maxsize, pool_block)
        super().__init__(pool_connections, pool_maxsize, max_retries, pool_block)

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError(
            "a dockercerts Adapter cannot be pickled (it holds open pools and ssl contexts): "
            "make a new one where it is needed"
        )

    def _make(self, candidate: Candidate) -> HTTPAdapter:
        """One candidate's adapter, made by ``inner`` with its context watched (:mod:`._watch`)."""
        connections, maxsize, block = self._pools
        return self._inner(
            ssl_context=watched(candidate.context),
            pool_connections=connections,
            pool_maxsize=maxsize,
            max_retries=self.max_retries,
            pool_block=block,
        )

    def _make_for(self, url: httpx.URL) -> Callable[[Candidate], HTTPAdapter]:
        # requests picks the proxy per request (proxies=): every candidate has all of them.
        return self._make

    def winner(self, url: str) -> Optional[str]:
        """The name of the pair that last worked for ``url``'s host (``None``: none yet).

        Forgotten when the adapter is closed.
        """
        return self._hosts.winner(httpx.URL(url))

    def send(
        self,
        request: PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: Any = True,
        cert: Any = None,
        proxies: Any = None,
    ) -> Response:
        """Send ``request`` (as requests' ``Session.send`` asks) with the host's candidates."""
        url = request.url or ""
        if url[:8].lower() != "https://":
            return super().send(request, stream, timeout, verify, cert, proxies)
        state = self._host(url, request)
        if verify is not True or cert is not None:
            _refuse_overrides(verify, cert, state.directory)
        if state.closable:  # retired transports nobody uses any more
            for done in state.drain():
                done.close()
        body = Body.of(request)
        # Routing (containerd) only when the host's folder routes: the flow then aims each
        # try (Send.target), from the request's own URL and headers, put back at the end.
        # Each endpoint's proxies are chosen where the request is aimed at it (Home.aim).
        home = None if state.routes is None else Home(request, proxies, self.trust_env, self._ends)

        def handle(step: Step) -> Any:
            if isinstance(step, Send):
                via = proxies if home is None else home.aim(request, step.target)
                return self._send(step.slot, request, body, timeout, via)
            if isinstance(step, Read):
                response: Response = step.response
                try:
                    content = response.content  # nginx's page is small and never compressed
                finally:  # an interrupt too: the connection is given back
                    response.close()
                return content, response
            if isinstance(step, Close):
                step.response.close()
                return None
            if isinstance(step, Learn):  # the server the next try goes to
                via = proxies if home is None else home.aim(request, step.target)
                return self._learn(request.url or url, timeout, via)
            return step.turn.wait(step.timeout)

        try:
            method = request.method or "GET"
            lane = steady(state, method, None if home is None else home.path)
            first, begin = None, None
            if lane is not None:  # the steady state: the winner, without an exchange
                slot, begin, _ = lane
                sent: Sent[Response] = handle(Send(slot, begin))
                records = settle(lane, sent)
                if records is not None:
                    assert sent.response is not None  # settle accepts answers only
                    return self._answer(sent.response, records)
                first = (slot, sent)
            exchange: Exchange[Response] = Exchange(
                state,
                self._options.policy,
                method=method,
                replayable=body.replayable,
                wait_timeout=None if timeout is None else _wait_timeout(timeout),
                path=None if home is None else home.path,
                begin=begin,
            )
            decision = run(exchange, handle, Response.close, first)
        finally:
            body.restore()
            if home is not None:
                home.restore(request)
        return self._deliver(decision, request)

    def _origin(self, url: str) -> httpx.URL:
        """``https://host[:port]/`` of requests' ``url``, as the host states know it."""
        netloc = url[8:].partition("/")[0]
        origin = self._origins.get(netloc)
        if origin is None:
            # Credentials in the URL say nothing about the host: not kept here.
            origin = httpx.URL("https://" + netloc.rpartition("@")[2] + "/")
            if len(self._origins) >= self._max_origins:
                self._origins.clear()
            self._origins[netloc] = origin
        return origin

    def _host(self, url: str, request: PreparedRequest) -> HostState[HTTPAdapter]:
        try:
            return self._hosts.get(self._origin(url))
        except httpx.InvalidURL as exc:
            raise requests.exceptions.InvalidURL(str(exc), request=request) from exc
        except CertsDirError as exc:
            raise CertsDirSSLError(exc, request=request) from exc

    def _learn(self, url: str, timeout: Any, proxies: Any) -> tuple[bytes, ...]:
        """The CA names ``url``'s server lists (blocking), for ``order="ca-names"``: through
        the proxy ``proxies`` (the endpoint's, routed) give ``url``, within its connect
        timeout."""
        proxy = select_proxy(url, proxies)
        if proxy is not None and "://" not in proxy:
            proxy = "http://" + proxy  # as requests reads a proxy without a scheme
        via = None if proxy is None else httpx.Proxy(proxy)
        return canames.learn(self._origin(url), via, _wait_timeout(timeout))

    @sends
    def _send(
        self,
        slot: Slot[HTTPAdapter],
        request: PreparedRequest,
        body: Body,
        timeout: Any,
        proxies: Any,
    ) -> Any:
        sent: Sent[Response] = Sent()
        start = time.perf_counter()
        try:
            inner = slot.acquire()
        except CertsDirError as exc:  # a pair broken since the load: the flow raises it
            sent.failed(exc, start)
            return sent
        try:
            body.rewind()
            # Streamed: the flow reads what it judges; Session.send reads the rest.
            response = inner.send(request, True, timeout, True, None, proxies)
        except BaseException as exc:
            if not isinstance(exc, Exception):
                raise  # KeyboardInterrupt and the like: no verdict, slot given back (below)
            sent.failed(exc, start)
            return sent
        finally:
            # Given back as soon as the answer's head is in: a retired candidate's pools can
            # then be closed under an open response, which urllib3 allows (the response's
            # connection is closed when it is released to a closed pool).
            released = slot.release()
            if released is not None:
                released.close()
        sent.answered(response, response.status_code, response.headers, start)
        return sent

    def _answer(self, response: Response, records: tuple[Attempt, ...]) -> Response:
        setattr(response, ATTEMPTS, records)
        # requests' auth handlers send again through ``response.connection``: through the
        # flow, not through the candidate that answered.
        response.connection = self
        return response

    def _deliver(self, decision: Decision[Response], request: PreparedRequest) -> Response:
        """Give back the decided response, or raise what the flow decided, as requests
        expects of an adapter. The one place errors are mapped."""
        if decision.response is not None:
            return self._answer(decision.response, decision.attempts)
        error = decision.error
        if decision.rejected:
            raise ClientCertificateRejected(
                decision.directory, decision.attempts, request=request, note=decision.note
            ) from error
        assert error is not None
        if isinstance(error, CertsDirError):
            raise CertsDirSSLError(error, request=request) from error
        raise error

    def close(self) -> None:
        """Close every candidate's pools (and the plain ones); forget every host."""
        for done in self._hosts.retire_all():
            done.close()
        self._origins.clear()
        self._ends.known.clear()
        super().close()


# requests' own defaults for ``verify``, which the folder replaces (Docker reads none of them).
_REQUESTS_BUNDLE_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


def _refuse_overrides(verify: Any, cert: Any, directory: Path) -> None:
    if verify is not True and not (
        isinstance(verify, str)
        and verify
        in (DEFAULT_CA_BUNDLE_PATH, *(os.environ.get(v) for v in _REQUESTS_BUNDLE_VARIABLES))
    ):
        if verify is False:
            fix = "Put the registry's CA in that folder as a .crt file instead"
        else:
            fix = "To trust that bundle for this registry, copy it into that folder as a .crt file"
        raise OverrideRefused("verify", repr(verify), directory, fix)
    if cert is not None:
        raise OverrideRefused(
            "cert",
            repr(cert),
            directory,
            "Put the pair in that folder as <name>.cert and <name>.key instead",
        )


def session(**adapter_options: Any) -> requests.Session:
    """A ``requests.Session`` whose ``https://`` requests go through
    ``Adapter(**adapter_options)`` (``inner=`` too: see :class:`Adapter`). Its ``trust_env``
    is the adapter's (``trust_env=False`` turns the environment off for both).

        >>> import dockercerts.requests
        >>> with dockercerts.requests.session(root="./certs.d") as s:  # doctest: +SKIP
        ...     s.get("https://registry.example.com:5000/v2/").raise_for_status()
    """
    made = requests.Session()
    adapter = Adapter(**{"trust_env": made.trust_env, **adapter_options})
    made.trust_env = adapter.trust_env
    made.mount("https://", adapter)
    return made
