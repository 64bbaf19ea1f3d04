"""``dockercerts probe``: one request per candidate through the transport's flow.

And beside it, which pair Docker (Go) would send, from the CA names the server asks for.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from http import HTTPStatus
from typing import Callable, Optional
from urllib.parse import urlsplit, urlunsplit

import httpx

from .. import canames
from .._layouts import layout as _layout
from ..canames import ServerCANames
from ..diagnose import (
    is_dir,
)
from ..errors import (
    Attempt,
    CANamesError,
    CertsDirError,
    CertsDirTransportError,
    InvalidHostError,
    MissingExtraError,
)
from ..flow import Decision
from ..gochoice import go_sends, issuer_listed, name_text
from ..loader import HostCerts, unwrap
from ..locate import (
    check_host,
    current_platform,
    registry_host,
)
from ..proxies import ProxyRules
from ..rejection import TLS13_REFUSAL
from ..transport import Transport
from .args import SCHEMA, CLIError, Report, redact, resolve_root, shorten, trust_rule
from .render import Cell, Style, ordinal, plural, refusal, table
from .reports import error_report

_SSL_LOCATION = re.compile(r" \(_ssl\.c:\d+\)")  # OpenSSL's source line: noise for users


def _probe_url(argument: str) -> httpx.URL:
    """The URL to probe: https only, ``/v2/`` for no path, and never a user or password
    (probe tests client certificates; credentials would be sent as Basic auth)."""
    text = argument.strip()
    shown = shorten(redact(argument))
    if "://" not in text:
        try:
            check_host(text)
        except InvalidHostError:
            raise CLIError(
                f"{shown!r} is neither an https:// URL nor a registry host",
                "write https://reg.example.com:5000/v2/ or reg.example.com:5000",
            ) from None
        text = f"https://{text}"
    try:
        parts = urlsplit(text)
    except ValueError as exc:  # an unclosed [ of an IPv6 literal, say
        raise CLIError(f"{shown!r} is not a valid URL: {exc}", "check the URL") from None
    if parts.scheme != "https":
        raise CLIError(
            f"{shown!r}: probe needs an https:// URL (client certificates travel over TLS)",
            f"write https://{redact(text).split('://', 1)[1]}",
        )
    if "@" in parts.netloc:
        text = urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
    registry_host(text)  # the same host check as everywhere else
    try:
        url = httpx.URL(text)
    except httpx.InvalidURL as exc:
        raise CLIError(f"{shown!r} is not a valid URL: {exc}", "check the URL") from None
    if url.path in ("", "/"):
        url = url.copy_with(path="/v2/")
    return url


def _at_url(endpoint: Optional[str], url: httpx.URL) -> bool:
    """Whether an attempt went to ``url``'s own host (always, unrouted)."""
    if endpoint is None:
        return True
    at = httpx.URL(endpoint)
    return at.host == url.host and (at.port or 443) == (url.port or 443)


# What a rejection usually means, for the reader of a probe; keyed by alert or verdict.
_REJECTION_HINTS = {
    "unknown_ca": "the registry does not trust the CA that issued this certificate",
    "bad_certificate": "the registry refused this certificate (untrusted CA, or none sent)",
    "certificate_expired": "the registry says this certificate has expired",
    "certificate_required": "the registry wants a client certificate and got none",
    "HTTP 400 No required SSL certificate was sent": (
        "nginx wants a client certificate and got none"
    ),
    "HTTP 400 The SSL certificate error": (
        "nginx could not verify this certificate (another CA, expired, or a missing intermediate)"
    ),
    TLS13_REFUSAL: (
        "the registry refused this certificate once the TLS 1.3 handshake was done "
        "(untrusted CA, expired, or none sent)"
    ),
}


def error_hint(exc: BaseException, url: httpx.URL, timeout: float) -> str:
    text = " ".join(str(e) for e in _chain(exc))
    if "CERTIFICATE_VERIFY_FAILED" in text:
        # Only an untrusted issuer is fixed by a ca.crt; say what else OpenSSL found.
        if "Hostname mismatch" in text or "IP address mismatch" in text:
            return (
                f"the registry's server certificate is not valid for the name {url.host}: "
                "connect with a name the certificate lists, or have it reissued with "
                f"{url.host} among its subject alternative names"
            )
        if "certificate has expired" in text:
            return "the registry's server certificate has expired: it must be renewed"
        if "certificate is not yet valid" in text:
            return "the registry's server certificate is not valid yet: check this machine's clock"
        return (
            "the registry's server certificate is not trusted: put its CA in the host "
            "directory as ca.crt"
        )
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, httpx.ConnectError) and (
        "refused" in text.lower() or "Errno 111" in text or "Errno 61" in text
    ):
        return f"nothing listens on {url.host}:{url.port or 443}"
    return _NOT_A_REJECTION


_NOT_A_REJECTION = "not a client-certificate rejection: another certificate cannot help"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: Optional[BaseException] = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _http(status: int) -> str:
    try:
        return f"HTTP {status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"HTTP {status}"


def _probe_attempt(index: int, attempt: Attempt, subject: Optional[str]) -> Report:
    """One attempt record of the flow, as the probe shows it."""
    outcome = {"accepted": "accepted", "returned": "accepted", "error": "error"}.get(
        attempt.verdict, "rejected"
    )
    detail = attempt.outcome
    title = None
    if attempt.status is not None and not detail.startswith("HTTP 400 "):
        detail = _http(attempt.status)
        if attempt.status == 401 and outcome == "accepted" and "challenge" in attempt.outcome:
            detail += " (token auth challenge: says nothing about the certificate)"
    elif attempt.status == 400:
        title = detail[len("HTTP ") :]
    return {
        "index": index,
        "endpoint": attempt.endpoint,
        "candidate": attempt.candidate,
        "subject": subject,
        "outcome": outcome,
        "detail": _SSL_LOCATION.sub("", detail),
        "layer": attempt.layer,
        "status": attempt.status,
        "title": title,
        "alert": attempt.alert,
        "tls_version": attempt.tls_version,
        "elapsed_ms": round((attempt.elapsed or 0.0) * 1000, 1),
        "hint": _REJECTION_HINTS.get(attempt.alert or "") or _REJECTION_HINTS.get(detail)
        if outcome == "rejected"
        else None,
    }


def _what_the_transport_does(
    decision: Optional[Decision[httpx.Response]], attempts: list[Report]
) -> tuple[Optional[int], str]:
    """The attempt the transport would settle on, and what it does, in words, from the
    flow's own decision (nothing is judged here)."""
    if decision is None or decision.chosen is None:
        return None, "does not connect: Docker would refuse the directory"
    chosen = attempts[decision.chosen]
    label = chosen["candidate"] or "no client certificate"
    if chosen["endpoint"] is not None:  # routed (containerd): which endpoint answered
        label += f" at {chosen['endpoint']}"
    if decision.rejected:
        return None, "raises ClientCertificateRejected: every candidate was rejected"
    if decision.error is not None:
        return None, (
            f"raises the error of candidate {chosen['index']}: it is not a "
            "client-certificate rejection, so no other certificate is tried"
        )
    if chosen["outcome"] == "accepted":
        return chosen["index"], (
            f"settles on {label} ({ordinal(chosen['index'])} of {len(attempts)})"
        )
    return None, (
        f"returns the answer of candidate {chosen['index']} ({chosen['detail']}): every "
        "candidate was rejected, and this answer says the most"
    )


def probe_report(
    argument: str,
    *,
    root: Optional[str] = None,
    platform: Optional[str] = None,
    trust: Optional[str] = None,
    policy: str = "docker",
    timeout: float = 5.0,
    runtime: str = "docker",
    cert_dir: Optional[str] = None,
) -> Report:
    """Send one GET with every candidate in order through the transport's own flow (every
    candidate tried, nothing remembered) and report each verdict; the ``--json`` dict."""
    plat = platform or current_platform()
    url = _probe_url(argument)
    base = resolve_root(root, plat)
    # Without --root, podman and containerd search their own roots.
    where = base if root is not None or runtime == "docker" else None
    folders = _layout(runtime, root=where, cert_dir=cert_dir, platform=plat)
    host_names = folders.names(url)
    directory = folders.pick(host_names, folders.paths(host_names))
    rule = trust_rule(trust, plat) if runtime == "docker" else trust_rule(trust or "merge", plat)
    attempts: list[Report] = []
    error: Optional[Report] = None
    certs: Optional[HostCerts] = None
    decision: Optional[Decision[httpx.Response]] = None
    # refresh=0: read the folder now, as Docker does for each pull.
    make_transport = functools.partial(
        Transport,
        root=where,
        platform=plat,
        trust=rule,
        policy=policy,
        refresh=0,
        runtime=runtime,
        cert_dir=cert_dir,
    )
    try:
        certs = unwrap(folders.read(directory, host_names, rule, None))
    except CertsDirError as exc:
        error = error_report(exc)
    if certs is not None:
        subjects = {p.name: p.subject for p in certs.pairs}
        chains = {p.name: p.chain_issuers for p in certs.pairs}
        # No redirect is followed: a probe reaches only this host (through the environment's
        # proxy, if any, as the transport does).
        with make_transport() as t:
            try:
                decision = _decide(t, url, timeout)
            except CertsDirTransportError as exc:  # changed on disk since load_dir
                error = error_report(exc.error)
        for index, attempt in enumerate(decision.attempts if decision else (), 1):
            # Routed (containerd), the walk may try other endpoints' pairs: the folder's
            # facts (subject, chain) are those of the endpoint at the URL's host only.
            own = _at_url(attempt.endpoint, url)
            name = attempt.candidate or ""
            record = _probe_attempt(index, attempt, subjects.get(name) if own else None)
            if decision is not None and decision.chosen == index - 1 and decision.error:
                there = url if own else httpx.URL(attempt.endpoint or str(url))
                record["hint"] = error_hint(decision.error, there, timeout)
            elif record["outcome"] == "error":
                record["hint"] = (
                    "not a client-certificate rejection: another certificate cannot help"
                )
            chain = chains.get(name, ()) if own else ()
            record["issuers"] = [name_text(der) for der in chain]
            record["issuer_listed"] = None  # known once the server's CA names are
            attempts.append(record)
    winner, transport = _what_the_transport_does(decision, attempts)
    names: Optional[Report] = None
    go: Optional[Report] = None
    if certs is not None and attempts:
        names, found = _server_ca_names(url, timeout)
        if found is not None:

            def no_certificate() -> Optional[Report]:
                return _without_certificate(make_transport(client_certificates=False), url, timeout)

            here = [a for a in attempts if _at_url(a["endpoint"], url)]
            go = _what_go_does(found, certs, here, no_certificate) if here else None
    return {
        "schema": SCHEMA,
        "command": "probe",
        "runtime": runtime,
        "url": str(url),
        "platform": plat,
        "trust": rule,
        "policy": policy,
        "root": str(folders.roots[0]),
        "directory": str(directory),
        "directory_exists": is_dir(directory),
        "ca_files": [str(p) for p in certs.ca_files] if certs else [],
        "error": error,
        "attempts": attempts,
        "winner": winner,
        "transport": transport,
        "ca_names": names,
        "go": go,
        "exit_code": 0 if winner is not None else 2,
    }


_PROBE_EXTRA = "pip install 'dockercerts[probe]'"


def _server_ca_names(url: httpx.URL, timeout: float) -> tuple[Report, Optional[ServerCANames]]:
    """The CA names the server's CertificateRequest lists, read as the transport would
    (through the environment's proxy, if any), for the report; or why they could not be."""
    report: Report = {
        "read": False,
        "requested": None,
        "names": [],
        "tls_version": None,
        "error": None,
        "install": None,
    }
    proxy = ProxyRules.make(None, trust_env=True).for_url(url)
    try:
        found = canames.read_ca_names(url.host, url.port or 443, timeout=timeout, proxy=proxy)
    except MissingExtraError:
        report.update(error="pyOpenSSL is not installed", install=_PROBE_EXTRA)
        return report, None
    except CANamesError as exc:
        report["error"] = _SSL_LOCATION.sub("", exc.reason)
        return report, None
    report.update(
        read=True,
        requested=found.requested,
        names=list(found.texts),
        tls_version=found.tls_version,
    )
    return report, found


def _what_go_does(
    found: ServerCANames,
    certs: HostCerts,
    attempts: list[Report],
    no_certificate: Callable[[], Optional[Report]],
) -> Report:
    """Which pair Docker (Go) sends, and what the server made of it, beside the attempts
    (each gets ``issuer_listed``).

    Go's choice is :func:`~dockercerts.gochoice.go_sends`. Whether it is accepted is the
    verdict the flow gave that pair; when Go sends nothing to a server that asks for a
    certificate, the verdict of ``no_certificate()``: one more request without one."""
    chains = {p.name: p.chain_issuers for p in certs.pairs}
    listed = frozenset(found.names)
    for attempt in attempts:
        chain = chains.get(attempt["candidate"] or "")
        if found.requested and listed and chain is not None:
            attempt["issuer_listed"] = issuer_listed(chain, listed)
    pairs = [chains[a["candidate"]] for a in attempts if a["candidate"] is not None]
    chosen = go_sends(pairs, found.names if found.requested else None)
    answer: Optional[Report]
    if chosen is not None:
        answer = attempts[chosen]
        why = (
            "the first pair with an issuer the server lists"
            if listed
            else "the server lists no CA names, so the first pair"
        )
    else:
        if not found.requested:
            why = "the server asks for no client certificate"
        elif not pairs:
            why = "the folder has no client pair"
        else:
            why = "no pair's issuer is among the CA names the server lists"
        # The first attempt sent no certificate either, unless the folder has pairs and
        # the server asked for one (then Go's "none" differs from every attempt).
        answer = no_certificate() if found.requested and pairs else attempts[0]
    accepted = None if answer is None else answer["outcome"] == "accepted"
    detail = None if answer is None else answer["detail"]
    if chosen is not None:
        label = f"{attempts[chosen]['candidate']} ({ordinal(attempts[chosen]['index'])})"
    else:
        label = "no certificate"
    verdict = {True: "accepted", False: "rejected", None: "outcome unknown"}[accepted]
    if accepted is False and detail:
        verdict += f", {detail}"
    return {
        "sends": None if chosen is None else attempts[chosen]["candidate"],
        "index": None if chosen is None else attempts[chosen]["index"],
        "reason": why,
        "accepted": accepted,
        "detail": detail,
        "summary": f"Docker (Go) sends {label}: {why} ({verdict})",
    }


def _decide(transport: Transport, url: httpx.URL, timeout: float) -> Decision[httpx.Response]:
    """One GET of ``url`` with every candidate tried and nothing remembered, the flow's
    :class:`~dockercerts.flow.Decision` (its answer closed); raises only
    :class:`~dockercerts.CertsDirTransportError`."""
    request = httpx.Request("GET", url, extensions={"timeout": httpx.Timeout(timeout).as_dict()})
    decision = transport.decide(request, every_candidate=True)
    if decision.response is not None:
        decision.response.close()
    return decision


def _without_certificate(transport: Transport, url: httpx.URL, timeout: float) -> Optional[Report]:
    """One request with the folder's trust and no client certificate (``transport`` is made
    with ``client_certificates=False``), judged by the flow: what the server answers Docker
    when Go finds no pair to send. Routed (containerd), the attempt at the URL's own host."""
    with transport:
        try:
            decision = _decide(transport, url, timeout)
        except CertsDirTransportError:  # changed since it was loaded: no answer, not a wrong one
            return None
    own = next((a for a in decision.attempts if _at_url(a.endpoint, url)), None)
    return None if own is None else _probe_attempt(1, own, None)


def render_probe(report: Report, style: Style) -> list[str]:
    lines = [style("bold", f"dockercerts probe {report['url']}")]
    if report["directory_exists"]:
        url = httpx.URL(report["url"])
        here = [a for a in report["attempts"] if _at_url(a["endpoint"], url)]
        state = f"({plural(len(here), 'candidate')}, {plural(len(report['ca_files']), 'CA file')})"
        if here and here[0]["candidate"] is None:
            state = f"(no client pair, {plural(len(report['ca_files']), 'CA file')})"
        elif report["attempts"] and not here:  # routed: the walk ended at an earlier endpoint
            state = "(not tried: an earlier endpoint answered)"
    else:
        state = "(missing: system roots, no client certificate)"
    lines += table([["directory", f"{report['directory']}  {state}"]], style)
    lines += refusal(report, style)
    if report["attempts"]:
        lines.append("")
        # Routed (containerd): the endpoint each attempt went to, in the walk's order.
        routed = any(attempt["endpoint"] is not None for attempt in report["attempts"])
        where: list[Cell] = ["endpoint"] if routed else []
        rows: list[list[Cell]] = [
            ["#", *where, "candidate", "subject", "result", "detail", "TLS", "time"]
        ]
        colours = {"accepted": "green", "rejected": "red", "error": "yellow"}
        for attempt in report["attempts"]:
            detail = attempt["detail"]
            if attempt["title"] and attempt["title"] not in detail:
                detail += f" ({attempt['title']})"
            endpoint: list[Cell] = [attempt["endpoint"] or "-"] if routed else []
            rows.append(
                [
                    str(attempt["index"]),
                    *endpoint,
                    attempt["candidate"] or "(none)",
                    attempt["subject"] or "-",
                    (colours[attempt["outcome"]], attempt["outcome"]),
                    detail,
                    attempt["tls_version"] or "-",
                    f"{attempt['elapsed_ms']:.0f} ms",
                ]
            )
        lines += table(rows, style)
        for attempt in report["attempts"]:
            if attempt["hint"]:
                lines.append(f"  {attempt['index']}: {attempt['hint']}")
    lines += _render_ca_names(report.get("ca_names"), report["attempts"], style)
    lines.append("")
    go = report.get("go")
    if go is not None:
        colour = {True: "green", False: "red", None: "yellow"}[go["accepted"]]
        lines.append(style(colour, go["summary"]) + ".")
    verdict = style("green" if report["winner"] is not None else "red", report["transport"])
    lines.append(f"The transport {verdict}. (exit {report['exit_code']})")
    return lines


def _render_ca_names(names: Optional[Report], attempts: list[Report], style: Style) -> list[str]:
    """What the server asks for and which pairs it lists, or one line saying why not."""
    if names is None:
        return []
    if not names["read"]:
        if names["install"]:
            return [
                "",
                f"CA names the server asks for: not shown, {names['error']} "
                f"({names['install']} shows them, and what Docker would send)",
            ]
        return ["", f"CA names the server asks for: not read ({names['error']})"]
    version = f" ({names['tls_version']})" if names["tls_version"] else ""
    lines = ["", style("bold", f"CA names the server asks for{version}")]
    if not names["requested"]:
        return [*lines, "  none: the server asks for no client certificate"]
    if not names["names"]:
        return [*lines, "  an empty list: any CA (Go sends the first pair)"]
    lines += [f"  {text}" for text in names["names"]]
    rows: list[list[Cell]] = [["#", "candidate", "issued by", "listed"]]
    for attempt in attempts:
        if attempt.get("issuer_listed") is None:
            continue
        listed = attempt["issuer_listed"]
        rows.append(
            [
                str(attempt["index"]),
                attempt["candidate"],
                ", ".join(attempt["issuers"]),
                ("green", "yes") if listed else ("yellow", "no"),
            ]
        )
    if len(rows) > 1:
        lines += ["", "  The pairs' chains, as Go matches them against those names:"]
        lines += table(rows, style)
    return lines
