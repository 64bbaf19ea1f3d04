"""The requests adapter (:mod:`dockercerts.requests`) through real handshakes: what is its own.

What every front end does alike, because the flow decides it (order, verdicts, the answer
given back, remembered rejections, cold concurrency, proxies), is proven through the adapter
by ``test_flow_peers.py`` and by the real-peer matrix of ``test_requests_peers.py``. Here:
folders named from requests' URLs, requests' TLS settings, bodies as requests holds them, the
TLS 1.3 silent close as urllib3 shows it, each candidate's own pool, errors and records as a
requests user gets them, and the optional import. Layouts and servers as in
``test_transport.py``, whose helpers these are.
"""

from __future__ import annotations

import io
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import test_transport as shared
from test_transport import (
    BODY,
    TLS_VERSIONS,
    Leaves,
    StubServer,
    chunks,
    client_sockets,
    closed_port,
    host_dir,
    ipv6_loopback,
    no_key_material,
    read_then_reset,
    rejections,
    reset_first_connection,
    reset_second_request,
    subject,
    warnings_logged,
)

import dockercerts
import dockercerts.requests
from dockercerts import (
    CertsDirError,
    CertsDirTransportError,
    EveryCertificateRejected,
    MissingKeyError,
    OverrideRefused,
    Transport,
)
from dockercerts.rejection import TLS13_REFUSAL
from dockercerts.requests import Adapter, CertsDirSSLError, ClientCertificateRejected, attempts
from dockercerts.testing import CA, CertsD
from dockercerts.transport import host_dir_for_url

# The fixtures of test_transport, registered here too.
_transport_env = shared._transport_env
leaves = shared.leaves
wrong_ca = shared.wrong_ca


@pytest.fixture(autouse=True)
def _no_requests_bundle(monkeypatch: pytest.MonkeyPatch) -> None:
    """requests' bundle variables unset (CI images set them): where set, requests lets them
    win over a session's ``verify=False``, which a test here needs to reach the adapter."""
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)


def session(certs_d: CertsD, **options: Any) -> requests.Session:
    return dockercerts.requests.session(root=certs_d.root, **options)


def adapter_of(s: requests.Session) -> Adapter:
    adapter = s.get_adapter("https://")
    assert isinstance(adapter, Adapter)
    return adapter


def summary(response: requests.Response) -> list[tuple[Any, ...]]:
    return [(a.candidate, a.verdict, a.layer, a.fresh) for a in attempts(response)]


# --- an optional dependency ---------------------------------------------------------------------


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


def test_the_rest_of_dockercerts_never_imports_requests() -> None:
    proc = run_python(
        "import sys, dockercerts, dockercerts.cli, dockercerts.testing, dockercerts.pytest_plugin\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('requests', 'urllib3')))"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_without_requests_the_import_says_how_to_install_it() -> None:
    proc = run_python(
        "import sys\n"
        "sys.modules['requests'] = None  # as if it were not installed\n"
        "try:\n"
        "    import dockercerts.requests\n"
        "except ImportError as exc:\n"
        "    print(f'{type(exc).__name__}: {exc}')\n"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == (
        "MissingExtraError: dockercerts.requests needs requests, which is not installed: "
        "pip install 'dockercerts[requests]'"
    )


# --- folders named from requests' URLs (no sockets) -------------------------------------------


@pytest.mark.parametrize(
    ("url", "folders", "used"),
    [
        # requests keeps ":443" as written; the folder is the one httpx's URL would get.
        ("https://localhost:443/v2/", ["localhost:443"], "localhost:443"),
        ("https://localhost/v2/", ["localhost:443"], "localhost:443"),
        ("https://localhost:443/v2/", ["localhost", "localhost:443"], "localhost"),
        ("https://localhost/v2/", ["localhost", "localhost:443"], "localhost"),
        ("https://LocalHost:5000/v2/", ["localhost:5000"], "localhost:5000"),
        ("https://user:pw@localhost:5000/v2/", ["localhost:5000"], "localhost:5000"),
        ("https://127.0.0.1:5000/v2/", ["127.0.0.1:5000"], "127.0.0.1:5000"),
        ("https://[::1]:5000/v2/", ["[::1]:5000"], "[::1]:5000"),
    ],
)
def test_the_folder_of_a_requests_url_is_the_transports(
    url: str, folders: list[str], used: str, certs_d: CertsD, leaves: Leaves
) -> None:
    """Every candidate folder is broken (a .cert without its .key), so the error names the
    one that was read, before any connection is tried."""
    for name in folders:
        certs_d.host(name).cert_only("lonely", leaves.get("right", "lonely"))
    with session(certs_d) as s, pytest.raises(CertsDirSSLError) as err:
        s.get(url)
    http = httpx.Client(transport=Transport(root=certs_d.root))
    with http, pytest.raises(CertsDirTransportError) as twin:
        http.get(url)
    assert err.value.paths == twin.value.paths
    assert err.value.paths[0].parent == certs_d.root / used
    assert host_dir_for_url(url, root=certs_d.root) == certs_d.root / used
    assert isinstance(err.value, CertsDirError)
    assert isinstance(err.value, requests.exceptions.SSLError)
    assert isinstance(err.value.error, MissingKeyError)
    assert str(err.value) == str(twin.value)


def test_an_ipv6_registry(mtls_server: Any, certs_d: CertsD, leaves: Leaves) -> None:
    if not ipv6_loopback():
        pytest.skip("IPv6 loopback (::1) is not available here")
    srv = mtls_server(reject="tls", ipv6=True)
    host_dir(certs_d, srv, leaves.layout("wrong", "right"), name=f"[::1]:{srv.port}")
    with session(certs_d) as s:
        response = s.get(srv.url_v6 + "/v2/")
        assert adapter_of(s).winner(srv.url_v6) == "b-right"
    assert response.status_code == 200
    assert [a.candidate for a in attempts(response)] == ["a-wrong", "b-right"]
    assert [r.client_subject for r in srv.requests] == [subject("b-right")]


# --- requests' own TLS settings ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "value", "fix"),
    [
        ("verify", False, "Put the registry's CA in that folder as a .crt file instead"),
        ("verify", "bundle.pem", "copy it into that folder as a .crt file"),
        ("cert", "client.pem", "as <name>.cert and <name>.key instead"),
        ("cert", ("client.pem", "client.key"), "as <name>.cert and <name>.key instead"),
    ],
)
@pytest.mark.parametrize("where", ["request", "session"])
def test_settings_that_would_override_the_folder_are_refused(
    setting: str,
    value: Any,
    fix: str,
    where: str,
    mtls_server: Any,
    certs_d: CertsD,
    leaves: Leaves,
) -> None:
    srv = mtls_server(reject="tls")
    host_dir(certs_d, srv, leaves.layout("right"))
    with session(certs_d) as s:
        kwargs = {setting: value}
        if where == "session":
            setattr(s, setting, value)
            kwargs = {}
        with pytest.raises(OverrideRefused) as err:
            s.get(srv.url + "/v2/", **kwargs)
    assert err.value.setting == setting
    assert err.value.directory == certs_d.root / srv.host
    assert str(certs_d.root / srv.host) in str(err.value)
    assert fix in str(err.value)
    assert isinstance(err.value, ValueError)
    assert srv.connections == 0


@pytest.fixture
def server_ca_bundle(mtls_server: Any, tmp_path: Path) -> tuple[Any, Path]:
    """An nginx-like server (the handshake needs no client certificate) and a bundle file
    with its CA, which requests alone would trust."""
    srv = mtls_server(reject="http")
    return srv, srv.server_ca.write(tmp_path / "bundle.pem")


@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"])
def test_requests_bundle_variables_give_way_to_the_folder(
    variable: str,
    server_ca_bundle: tuple[Any, Path],
    certs_d: CertsD,
    leaves: Leaves,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    srv, bundle = server_ca_bundle
    monkeypatch.setenv(variable, str(bundle))
    # requests alone: the variable is its trust (the server's 400 page came back).
    assert requests.get(srv.url + "/v2/", timeout=5).status_code == 400
    # The folder holds the pair but not the server's CA: system roots only, as Docker would,
    # so the server is not trusted, whatever the variable says.
    certs_d.host(srv.host).pair("a-right", leaves.get("right", "a-right"))
    with session(certs_d) as s, pytest.raises(requests.exceptions.SSLError) as err:
        s.get(srv.url + "/v2/", timeout=5)
    assert "CERTIFICATE_VERIFY_FAILED" in str(err.value)
    assert not isinstance(err.value, EveryCertificateRejected)
    # With the CA in the folder: the folder's trust.
    certs_d.host(srv.host).ca(srv.server_ca)
    with session(certs_d, refresh=0) as s:
        assert s.get(srv.url + "/v2/", timeout=5).status_code == 200


def test_requests_own_bundle_path_gives_way_to_the_folder(
    mtls_server: Any, certs_d: CertsD, leaves: Leaves
) -> None:
    """``verify=<certifi's bundle>`` is requests' default spelled out: not refused, and not
    used (certifi does not know the test CA)."""
    srv = mtls_server(reject="tls")
    host_dir(certs_d, srv, leaves.layout("right"))
    with session(certs_d) as s:
        response = s.get(srv.url + "/v2/", verify=requests.utils.DEFAULT_CA_BUNDLE_PATH)
    assert response.status_code == 200


def test_requests_default_trust_stays_out_of_the_folders_contexts(
    mtls_server: Any, certs_d: CertsD, leaves: Leaves
) -> None:
    """urllib3 loads the bundle requests names (certifi's for ``verify=True``) into the
    context it is given: with ``trust="replace"`` (Windows' rule) the folder's CA must stay
    the only one trusted."""
    srv = mtls_server(reject="tls")
    host_dir(certs_d, srv, leaves.layout("right"))
    with session(certs_d, trust="replace") as s:
        assert s.get(srv.url + "/v2/").status_code == 200
        states = adapter_of(s)._hosts._states.values()
        [context] = [slot._inner._context for state in states for slot in state.slots]
        subjects = [ca["subject"] for ca in context.get_ca_certs()]
    assert subjects == [((("commonName", srv.server_ca.name),),)]


# --- what a requests user gets back -----------------------------------------------------------


@pytest.mark.parametrize("tls", TLS_VERSIONS)
def test_every_pair_refused_in_tls_raises_an_ssl_error(
    tls: str, mtls_server: Any, certs_d: CertsD, leaves: Leaves
) -> None:
    srv = mtls_server(reject="tls", tls_version=tls)
    pairs = leaves.layout("wrong", "wrong")
    host_dir(certs_d, srv, pairs)
    with session(certs_d) as s, pytest.raises(ClientCertificateRejected) as err:
        s.get(srv.url + "/v2/")
    exc = err.value
    assert isinstance(exc, requests.exceptions.SSLError)
    assert isinstance(exc, EveryCertificateRejected)
    assert exc.directory == certs_d.root / srv.host
    refusal = "TLS alert unknown_ca" if tls == "1.2" else TLS13_REFUSAL
    assert [(a.candidate, a.outcome) for a in exc.attempts] == [
        ("a-wrong", refusal),
        ("b-wrong", refusal),
    ]
    assert f"a-wrong: {refusal}; b-wrong: {refusal}" in str(exc)
    assert exc.request is not None
    no_key_material(str(exc) + repr(exc), *(leaf for _, leaf in pairs))
    assert srv.requests == []


@pytest.mark.parametrize("tls", TLS_VERSIONS)
def test_the_winner_keeps_its_own_pool(
    tls: str, mtls_server: Any, certs_d: CertsD, leaves: Leaves
) -> None:
    srv = mtls_server(reject="tls", tls_version=tls)
    host_dir(certs_d, srv, leaves.layout("wrong", "wrong", "right"))
    with session(certs_d) as s:
        first = s.get(srv.url + "/v2/")
        later = [s.get(srv.url + "/v2/") for _ in range(20)]
        assert adapter_of(s).winner(srv.url) == "c-right"
    assert [(a.candidate, a.verdict) for a in attempts(first)] == [
        ("a-wrong", "rejected"),
        ("b-wrong", "rejected"),
        ("c-right", "accepted"),
    ]
    assert {tuple(summary(r)) for r in later} == {(("c-right", "accepted", None, False),)}
    assert (srv.handshakes, srv.failed_handshakes, srv.connections) == (1, 2, 3)
    assert len({r.connection_id for r in srv.requests}) == 1


def test_the_answer_is_the_adapters_own(mtls_server: Any, certs_d: CertsD, leaves: Leaves) -> None:
    """requests' auth handlers send again through ``response.connection``: the adapter, so
    the flow again; and a response that came some other way has no records."""
    srv = mtls_server(reject="http")
    host_dir(certs_d, srv, leaves.layout("wrong", "right"))
    with session(certs_d) as s:
        response = s.get(srv.url + "/v2/")
        assert response.connection is adapter_of(s)
        again = response.connection.send(response.request)
        assert [a.candidate for a in attempts(again)] == ["b-right"]
    assert attempts(requests.Response()) == ()


def test_an_adapter_is_checked_when_made_and_cannot_be_pickled(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="trust must be"):
        Adapter(root=tmp_path, trust="Merge")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="recheck must be"):
        Adapter(root=tmp_path, recheck=-1)
    with pytest.raises(ValueError, match="max_hosts must be"):
        Adapter(root=tmp_path, max_hosts=0)
    with pytest.raises(ValueError, match="unknown rejection policy"):
        Adapter(root=tmp_path, policy="strict")
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(Adapter(root=tmp_path))


# --- inner=: who makes each candidate's HTTPAdapter ----------------------------------------------


MADE: list[dict[str, Any]] = []  # the pool options of each candidate adapter made below


class Recording(dockercerts.requests.CandidateAdapter):
    """``inner=`` as a subclass of the default."""

    def __init__(self, ssl_context: Any, **pool_options: Any) -> None:
        MADE.append(pool_options)
        super().__init__(ssl_context, **pool_options)


def wrapping(**options: Any) -> dockercerts.requests.CandidateAdapter:
    """``inner=`` as a function that wraps the default."""
    MADE.append({k: v for k, v in options.items() if k != "ssl_context"})
    return dockercerts.requests.CandidateAdapter(**options)


@pytest.mark.parametrize("inner", [Recording, wrapping], ids=["subclass", "function"])
def test_inner_makes_the_candidates_and_a_tls13_refusal_is_still_seen(
    inner: Any, mtls_ca: CA, certs_d: CertsD, leaves: Leaves
) -> None:
    """Whatever ``inner`` is, the library watches the context it hands over: a fresh TLS 1.3
    connection closed before any answer byte still reads as a refusal (it would be a
    ``ConnectionError`` otherwise), and the pool options reach each candidate."""
    MADE.clear()
    with StubServer(mtls_ca.issue_server(), reset_first_connection, "1.3") as stub:
        host_dir(certs_d, stub, [("a", leaves.get("right", "a")), ("b", leaves.get("right", "b"))])
        with session(certs_d, inner=inner, pool_maxsize=3, pool_block=True) as s:
            response = s.get(stub.url + "/v2/")
            again = s.get(stub.url + "/v2/")
        assert stub.connections == 2
    assert summary(response) == [
        ("a", "rejected", "certificate", True),
        ("b", "accepted", None, True),
    ]
    assert summary(again) == [("b", "accepted", None, False)]
    assert len(MADE) == 2  # one per candidate
    for made in MADE:
        assert (made["pool_maxsize"], made["pool_block"]) == (3, True)
        assert set(made) == {"pool_connections", "pool_maxsize", "max_retries", "pool_block"}


def test_an_inner_that_cannot_carry_the_context_is_refused_at_once(tmp_path: Path) -> None:
    """requests' own ``HTTPAdapter`` would drop the candidate's context (and with it the
    folder's trust and pair): refused when the adapter is made, not at the first request."""
    with pytest.raises(TypeError, match=r"inner=HTTPAdapter cannot be called with ssl_context="):
        Adapter(root=tmp_path, inner=requests.adapters.HTTPAdapter)
    with pytest.raises(TypeError, match="CandidateAdapter"):
        dockercerts.requests.session(root=tmp_path, inner=lambda ssl_context: None)
    with pytest.raises(TypeError, match="must be a callable"):
        Adapter(root=tmp_path, inner="CandidateAdapter")  # type: ignore[arg-type]


# --- the TLS 1.3 silent close, as urllib3 shows it --------------------------------------------


def test_reset_on_fresh_tls13_connection_moves_on(
    mtls_ca: CA, certs_d: CertsD, leaves: Leaves, caplog: pytest.LogCaptureFixture
) -> None:
    with StubServer(mtls_ca.issue_server(), reset_first_connection, "1.3") as stub:
        host_dir(certs_d, stub, [("a", leaves.get("right", "a")), ("b", leaves.get("right", "b"))])
        with session(certs_d) as s:
            response = s.get(stub.url + "/v2/")
        assert stub.connections == 2
    assert response.status_code == 200
    assert summary(response) == [
        ("a", "rejected", "certificate", True),
        ("b", "accepted", None, True),
    ]
    [line] = rejections(caplog)
    assert f"a rejected ({TLS13_REFUSAL})" in line


@pytest.mark.parametrize(
    ("script", "tls"),
    [(reset_first_connection, "1.2"), (reset_second_request, "1.2"), (reset_second_request, "1.3")],
    ids=["fresh-tls1.2", "reused-tls1.2", "reused-tls1.3"],
)
def test_a_close_that_says_nothing_about_the_certificate_is_raised(
    script: Any,
    tls: str,
    mtls_ca: CA,
    certs_d: CertsD,
    leaves: Leaves,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """TLS 1.2 judges the certificate inside the handshake, and a kept-alive connection was
    accepted long ago: a close there is an outage, which another pair cannot help."""
    with StubServer(mtls_ca.issue_server(), script, tls) as stub:
        host_dir(certs_d, stub, [("a", leaves.get("right", "a")), ("b", leaves.get("right", "b"))])
        with session(certs_d) as s:
            if script is reset_second_request:
                assert s.get(stub.url + "/v2/").status_code == 200
            with pytest.raises(requests.exceptions.ConnectionError) as err:
                s.get(stub.url + "/v2/")
        assert stub.connections == 1
    assert not isinstance(err.value, EveryCertificateRejected)
    assert rejections(caplog) == []


# --- bodies -----------------------------------------------------------------------------------


class Unseekable:
    """A file-like body that cannot tell where it is: requests sends it chunked."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self._data.read(size)


@pytest.mark.parametrize("tls", TLS_VERSIONS)
@pytest.mark.parametrize("kind", ["bytes", "file"])
def test_bytes_and_files_are_replayed(
    kind: str, tls: str, mtls_server: Any, certs_d: CertsD, leaves: Leaves, tmp_path: Path
) -> None:
    """nginx-like: the whole body went to the refused pair, and again to the next one."""
    srv = mtls_server(reject="http", tls_version=tls)
    host_dir(certs_d, srv, leaves.layout("wrong", "right"))
    path = tmp_path / "body"
    path.write_bytes(b"head" + BODY)
    with session(certs_d) as s, path.open("rb") as handle:
        handle.read(4)  # requests sends from where the file is, and so does every try
        data = BODY if kind == "bytes" else handle
        response = s.put(srv.url + "/upload", data=data)
    assert response.status_code == 200
    assert [(r.client_subject, r.body) for r in srv.requests] == [
        (subject("a-wrong"), BODY),
        (subject("b-right"), BODY),
    ]


@pytest.mark.parametrize("kind", ["generator", "unseekable"])
@pytest.mark.parametrize(
    ("reject", "status", "sent_to"),
    [("tls", 200, "b-right"), ("http", 400, "a-wrong")],
    ids=["refused-before-any-byte", "refused-after-the-body"],
)
def test_a_stream_is_replayed_only_if_nothing_of_it_was_read(
    kind: str,
    reject: str,
    status: int,
    sent_to: str,
    mtls_server: Any,
    certs_d: CertsD,
    leaves: Leaves,
) -> None:
    """In TLS 1.2 a refused handshake comes before any body byte (the stream goes to the
    next pair); nginx reads the whole body before its 400 page (that answer is given back)."""
    srv = mtls_server(reject=reject, tls_version="1.2")
    host_dir(certs_d, srv, leaves.layout("wrong", "right"))
    data = chunks() if kind == "generator" else Unseekable(BODY)
    with session(certs_d) as s:
        response = s.post(srv.url + "/upload", data=data)
    assert response.status_code == status
    assert [(r.client_subject, r.body) for r in srv.requests] == [(subject(sent_to), BODY)]


def test_a_stream_sent_then_closed_raises(
    mtls_ca: CA, certs_d: CertsD, leaves: Leaves, caplog: pytest.LogCaptureFixture
) -> None:
    """The body went out, then the connection died before any answer: a rejection that
    cannot be retried, said so."""
    with StubServer(mtls_ca.issue_server(), read_then_reset) as stub:
        host_dir(certs_d, stub, leaves.layout("wrong", "right"))
        with session(certs_d) as s, pytest.raises(ClientCertificateRejected) as err:
            s.post(stub.url + "/upload", data=chunks())
        assert stub.connections == 1
        assert stub.bodies == [BODY]
    assert "could not be replayed" in str(err.value)
    assert any("could not be replayed" in line for line in warnings_logged(caplog))


# --- changes on disk, plain HTTP, closing -----------------------------------------------------


def test_a_rotation_on_disk_is_seen(mtls_server: Any, certs_d: CertsD, leaves: Leaves) -> None:
    srv = mtls_server(reject="tls")
    directory = host_dir(certs_d, srv, [("a-old", leaves.get("right", "a-old"))])
    with session(certs_d, refresh=0) as s:
        s.get(srv.url + "/v2/")
        directory.pair("b-new", leaves.get("right", "b-new")).remove("a-old.cert")
        directory.remove("a-old.key")
        s.get(srv.url + "/v2/")
        assert adapter_of(s).winner(srv.url) == "b-new"
    assert [r.client_subject for r in srv.requests] == [subject("a-old"), subject("b-new")]


def test_plain_http_reads_no_folder(certs_d: CertsD, leaves: Leaves) -> None:
    port = closed_port()
    certs_d.host(f"localhost:{port}").cert_only("broken", leaves.get("right", "broken"))
    with session(certs_d) as s:
        s.mount("http://", adapter_of(s))
        with pytest.raises(requests.exceptions.ConnectionError) as err:
            s.get(f"http://localhost:{port}/")
    assert not isinstance(err.value, CertsDirError)


def test_close_closes_every_pool(mtls_server: Any, certs_d: CertsD, leaves: Leaves) -> None:
    first, second = mtls_server(reject="http"), mtls_server(reject="tls")
    host_dir(certs_d, first, leaves.layout("wrong", "right"))
    host_dir(certs_d, second, leaves.layout("right", "wrong"))
    s = session(certs_d)
    for _ in range(3):
        s.get(first.url + "/v2/")
        s.get(second.url + "/v2/")
    assert client_sockets(first.port, second.port) >= 2  # the winners' kept-alive connections
    s.close()
    assert client_sockets(first.port, second.port) == 0
    assert adapter_of(s).winner(first.url) is None


class Interrupt(BaseException):
    pass


def test_an_interrupt_gives_the_candidate_back(
    mtls_server: Any, certs_d: CertsD, leaves: Leaves, monkeypatch: pytest.MonkeyPatch
) -> None:
    srv = mtls_server(reject="tls")
    host_dir(certs_d, srv, leaves.layout("right"))
    with session(certs_d) as s:
        s.get(srv.url + "/v2/")

        def interrupted(*args: Any, **kwargs: Any) -> Any:
            raise Interrupt

        with monkeypatch.context() as patch:
            patch.setattr(requests.adapters.HTTPAdapter, "send", interrupted)
            with pytest.raises(Interrupt):
                s.get(srv.url + "/v2/")
        states = adapter_of(s)._hosts._states.values()
        assert [len(slot._users) for state in states for slot in state.slots] == [0]
        assert s.get(srv.url + "/v2/").status_code == 200
