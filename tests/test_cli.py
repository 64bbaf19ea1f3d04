"""The ``dockercerts`` command end to end: inspect, probe, demo, errors, colour, JSON schema.

Most tests call ``main([...])`` in-process and read capsys; a few run the real console script
and ``python -m dockercerts`` in a subprocess (one under a pseudo-terminal, for colour). Probe
runs against ``mtls_server`` in both rejection modes and both TLS versions, and against real
nginx and docker-registry when they are installed (``peers`` marker).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any, Optional

import httpx
import pytest

import dockercerts
from dockercerts import cli
from dockercerts.cli import CLIError, classify, demo, use_colour
from dockercerts.pytest_plugin import CAFactory, ServerFactory
from dockercerts.rejection import TLS13_REFUSAL
from dockercerts.testing import CA, CertsD, Leaf, MTLSServer

DOCS = Path(__file__).resolve().parent.parent / "docs" / "cli.md"
ESC = "\x1b["


@pytest.fixture(scope="module")
def stranger(mtls_ca_factory: CAFactory) -> CA:
    """A CA the servers do not accept client certificates from."""
    return mtls_ca_factory(name="stranger CA")


@pytest.fixture(scope="module")
def right(mtls_ca: CA) -> Leaf:
    return mtls_ca.issue_client("right")


@pytest.fixture(scope="module")
def wrong(stranger: CA) -> Leaf:
    return stranger.issue_client("wrong")


def console_script() -> str:
    """The installed ``dockercerts`` script of this interpreter's environment."""
    name = "dockercerts.exe" if os.name == "nt" else "dockercerts"
    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = Path(folder) / name
        if candidate.exists():
            return str(candidate)
    found = shutil.which("dockercerts")
    assert found, "the dockercerts console script is not installed: pip install -e ."
    return found


def env_without_colour_vars() -> dict[str, str]:
    env = dict(os.environ)
    for var in ("NO_COLOR", "FORCE_COLOR", "TERM"):
        env.pop(var, None)
    env["TERM"] = "xterm"
    return env


def no_traceback(text: str) -> None:
    assert "Traceback" not in text


# --------------------------------------------------------------------------- classify


@pytest.mark.parametrize(
    ("argument", "kind", "host"),
    [
        ("reg:5000", "host", "reg:5000"),
        ("reg.example.com", "host", "reg.example.com"),
        ("localhost", "host", "localhost"),
        ("[::1]:5000", "host", "[::1]:5000"),
        ("10.0.0.7:5000", "host", "10.0.0.7:5000"),
        ("https://reg:5000/v2/", "url", "reg:5000"),
        ("https://Reg.Example.com/v2/", "url", "Reg.Example.com"),
        ("reg:5000/team/app:1.0", "image", "reg:5000"),
        ("reg:5000/app@sha256:" + "a" * 64, "image", "reg:5000"),
        ("ubuntu:22.04", "image", "docker.io"),
        ("team/app", "image", "docker.io"),
        ("index.docker.io/library/ubuntu", "image", "docker.io"),
        ("localhost/app", "image", "localhost"),
    ],
)
def test_classify(argument: str, kind: str, host: str) -> None:
    assert classify(argument) == (kind, host)


@pytest.mark.parametrize(
    "argument",
    ["bad host!", "", "   ", "reg:5000/", "ftp://reg/", "reg:99999/app", "reg/App", "a b/c"],
)
def test_classify_rejects_what_is_neither(argument: str) -> None:
    with pytest.raises((CLIError, dockercerts.InvalidHostError)):
        classify(argument)


# --------------------------------------------------------------------------- inspect


def test_inspect_clean_directory(run: Any, certs_d: CertsD, mtls_ca: CA) -> None:
    host = certs_d.host("reg.test:5000").ca(mtls_ca)
    host.pair("a-first", mtls_ca.issue_client("first"))
    host.pair("B-capital", mtls_ca.issue_client("capital", key_type="rsa2048"))
    host.file("README.txt", b"notes")

    code, out, err = run("inspect", "reg.test:5000", "--root", str(certs_d.path))

    assert (code, err) == (0, "")
    assert f"directory  {host.path}\n" in out
    # Docker's order is by bytes: upper case before lower case, .cert/.key before .crt.
    files = re.findall(r"^  (\S+)\s+(CA root|client cert|client key|ignored)", out, re.M)
    assert files == [
        ("B-capital.cert", "client cert"),
        ("B-capital.key", "client key"),
        ("README.txt", "ignored"),
        ("a-first.cert", "client cert"),
        ("a-first.key", "client key"),
        ("ca.crt", "CA root"),
    ]
    assert re.search(r"ca\.crt\s+CN=dockercerts test CA\s+root\s+expires \d{4}-", out)
    pairs = re.findall(
        r"^  (\d)\s+(\S+)\s+(CN=\w+)\s+CN=dockercerts test CA\s+(RSA 2048|EC \w+)", out, re.M
    )
    assert pairs == [
        ("1", "B-capital", "CN=capital", "RSA 2048"),
        ("2", "a-first", "CN=first", "EC secp256r1"),
    ]
    assert "leaf only" in out
    assert "Result: OK" in out
    assert "Warnings" not in out
    assert "Near misses" not in out


def test_inspect_warnings_exit_1_with_fixes(run: Any, certs_d: CertsD, mtls_ca: CA) -> None:
    certs_d.host("reg:5000").ca(mtls_ca).pair("old", mtls_ca.issue_client("old", expired=True))
    certs_d.host("reg:5000").file("ca.pem", mtls_ca.cert_pem)

    code, out, err = run("inspect", "reg:5000", "--root", str(certs_d.path))

    assert code == 1
    # The library logs each warning too; the report is the only place it should appear.
    assert err == ""
    assert "EXPIRED" in out
    assert "[client-cert-expired]" in out
    assert "fix: Renew it" in out
    assert "[ignored-name]" in out
    assert "fix: rename it to ca.crt" in out
    assert "Result: 2 warnings (exit 1)" in out


def test_inspect_ca_saved_as_cert(run: Any, certs_d: CertsD, mtls_ca: CA) -> None:
    certs_d.host("reg:5000").ca_as_cert(mtls_ca)

    code, out, _ = run("inspect", "reg:5000", "--root", str(certs_d.path))

    assert code == 2
    assert "Docker would refuse this directory" in out
    # Docker's own wording, verbatim, so it can be searched next to a daemon log line.
    assert (
        "missing key ca.key for client certificate ca.cert. "
        "CA certificates must use the extension .crt"
    ) in out
    assert (
        "fix: ca.cert holds a CA certificate (CN=dockercerts test CA): rename ca.cert -> ca.crt"
        in out
    )
    assert "Result: Docker would fail (exit 2)" in out


def test_inspect_client_cert_without_key(run: Any, certs_d: CertsD, mtls_ca: CA) -> None:
    certs_d.host("reg:5000").cert_only("alice", mtls_ca.issue_client("alice"))
    code, out, _ = run("inspect", "reg:5000", "--root", str(certs_d.path))
    assert code == 2
    assert "missing key alice.key for client certificate alice.cert" in out
    assert "put its private key beside it as alice.key" in out
    assert "rename" not in out


def test_inspect_kubernetes_secret_layout(run: Any, certs_d: CertsD, mtls_ca: CA) -> None:
    leaf = mtls_ca.issue_client("k8s")
    certs_d.host("reg:5000").kubernetes(
        {"ca.crt": mtls_ca.cert_pem, "tls.crt": leaf.cert_pem, "tls.key": leaf.key_pem()}
    )

    code, out, _ = run("inspect", "reg:5000", "--root", str(certs_d.path))

    assert code == 2
    assert "missing client certificate tls.cert for key tls.key" in out
    assert "Kubernetes TLS secret layout" in out
    assert "(its key matches), rename tls.crt -> tls.cert" in out
    # The mount's symlinks are shown, so a copy that lost its targets is easy to spot.
    assert re.search(r"tls\.crt\s+CA root\s+-> \.\.data/tls\.crt", out)
    assert re.search(r"\.\.data\s+ignored\s+directory -> \.\.", out)


def test_inspect_orphan_key_whose_crt_is_another_certificate(
    run: Any, certs_d: CertsD, mtls_ca: CA
) -> None:
    host = certs_d.host("reg:5000").key_only("tls", mtls_ca.issue_client("one"))
    host.file("tls.crt", mtls_ca.issue_client("two").cert_pem)
    code, out, _ = run("inspect", "reg:5000", "--root", str(certs_d.path))
    assert code == 2
    assert "tls.crt is not the certificate of tls.key" in out


def test_inspect_orphan_key_alone(run: Any, certs_d: CertsD, mtls_ca: CA) -> None:
    certs_d.host("reg:5000").key_only("client", mtls_ca.issue_client("c"))
    code, out, _ = run("inspect", "reg:5000", "--root", str(certs_d.path))
    assert code == 2
    assert "missing client certificate client.cert for key client.key" in out
    assert "fix: add the client certificate as client.cert, or remove client.key" in out


def test_inspect_dangling_symlink(run: Any, certs_d: CertsD) -> None:
    certs_d.host("reg:5000").symlink("ca.crt", "..data/ca.crt")
    code, out, _ = run("inspect", "reg:5000", "--root", str(certs_d.path))
    assert code == 2
    assert "dangling symbolic link" in out
    assert re.search(r"ca\.crt\s+CA root\s+dangling-symlink -> \.\.data/ca\.crt", out)


def test_inspect_leaf_without_its_intermediate(run: Any, certs_d: CertsD, mtls_ca: CA) -> None:
    issuing = mtls_ca.intermediate(name="issuing CA")
    host = certs_d.host("reg:5000").ca(mtls_ca).ca(issuing, "issuing.crt")
    host.pair("bob", issuing.issue_client("bob", include_chain=False))

    code, out, _ = run("inspect", "reg:5000", "--root", str(certs_d.path))
    assert code == 1
    assert "[leaf-without-intermediate]" in out
    assert "append that intermediate to bob.cert" in out

    # With the chain in the .cert, the warning goes away.
    host.pair("bob", issuing.issue_client("bob"))
    code, out, _ = run("inspect", "reg:5000", "--root", str(certs_d.path))
    assert code == 0, out
    assert "leaf + 1 intermediate" in out


def test_inspect_near_misses_when_the_folder_is_missing(run: Any, certs_d: CertsD) -> None:
    for name in ("reg", "reg5000", "Reg:5000", "reg_5000_", "reg:6000", "other:5000"):
        certs_d.host(name)

    code, out, _ = run("inspect", "reg:5000", "--root", str(certs_d.path), "--json")

    assert code == 1
    report = json.loads(out)
    assert report["directory_exists"] is False
    assert [w["code"] for w in report["warnings"]] == ["host-directory-missing"]
    reasons = {m["name"]: m["reason"] for m in report["near_misses"]}
    # Two DNS names on one port are different registries as far as anyone can tell offline.
    assert set(reasons) == {"Reg:5000", "reg", "reg5000", "reg_5000_", "reg:6000"}
    assert "only in case" in reasons["Reg:5000"]
    assert "without the port" in reasons["reg"]
    assert "Windows-style" in reasons["reg5000"]
    assert "containerd" in reasons["reg_5000_"]
    assert "another port (6000)" in reasons["reg:6000"]
    fixes = {m["name"]: m["fix"] for m in report["near_misses"]}
    assert fixes["reg5000"] == "rename reg5000 -> reg:5000"


def test_inspect_ip_versus_name_only_when_the_folder_is_missing(run: Any, certs_d: CertsD) -> None:
    certs_d.host("127.0.0.1:5000")
    code, out, _ = run("inspect", "localhost:5000", "--root", str(certs_d.path))
    assert code == 1
    assert "127.0.0.1:5000: same port, 127.0.0.1 instead of localhost" in out

    # Once the folder Docker reads exists, another name on the port is just another registry.
    certs_d.host("localhost:5000")
    code, out, _ = run("inspect", "localhost:5000", "--root", str(certs_d.path))
    assert code == 0
    assert "Near misses" not in out


def test_inspect_windows_rules(run: Any, certs_d: CertsD, mtls_ca: CA) -> None:
    certs_d.host("reg5000").ca(mtls_ca)
    certs_d.host("reg:5000")

    code, out, _ = run(
        "inspect", "reg:5000", "--root", str(certs_d.path), "--platform", "windows", "--json"
    )

    report = json.loads(out)
    assert code == 0
    assert Path(report["directory"]).name == "reg5000"
    assert report["trust"] == "replace"
    assert report["uses_system_roots"] is False  # a .crt is present: only it is trusted
    assert [(m["name"], m["fix"]) for m in report["near_misses"]] == [
        ("reg:5000", "rename reg:5000 -> reg5000")
    ]


def test_inspect_trust_flag(run: Any, certs_d: CertsD, mtls_ca: CA) -> None:
    certs_d.host("reg:5000").ca(mtls_ca)
    _, out, _ = run("inspect", "reg:5000", "--root", str(certs_d.path), "--trust", "replace")
    assert "trust: only the .crt files" in out


@pytest.mark.parametrize(
    "argument", ["reg:5000", "https://reg:5000/v2/_catalog", "reg:5000/team/app:1.0"]
)
def test_inspect_hosts_urls_and_references_agree(
    run: Any, certs_d: CertsD, mtls_ca: CA, argument: str
) -> None:
    host = certs_d.host("reg:5000").ca(mtls_ca)
    code, out, _ = run("inspect", argument, "--root", str(certs_d.path), "--json")
    report = json.loads(out)
    assert code == 0
    assert report["directory"] == str(host.path)
    assert report["argument"] == argument


def test_inspect_notes(run: Any, certs_d: CertsD) -> None:
    _, out, _ = run("inspect", "reg:5000", "--root", str(certs_d.path))
    assert "note: read as a registry host, as 'docker login reg:5000' does" in out

    code, out, _ = run("inspect", "ubuntu:22.04", "--root", str(certs_d.path))
    assert code == 0  # Docker Hub reads no folder: a missing one is no warning
    assert "(image reference -> docker.io)" in out
    assert "Docker reads no certs.d folder for Docker Hub" in out

    # The transport reads `reg` for port 443 when it exists: inspect says so for URLs.
    certs_d.host("reg")
    _, out, _ = run("inspect", "https://reg:443/v2/", "--root", str(certs_d.path))
    assert f"dockercerts.Transport, given this URL, reads {certs_d.path / 'reg'}" in out


# --------------------------------------------------------------------------- JSON schema

# What each JSON object holds: key -> the type (or types) its value must have.
Shape = dict[str, Any]

INSPECT_KEYS: Shape = {
    "schema": int,
    "command": str,
    "runtime": str,
    "argument": str,
    "argument_kind": str,
    "host": str,
    "platform": str,
    "trust": str,
    "uses_system_roots": (bool, type(None)),
    "root": str,
    "root_exists": bool,
    "root_state": str,
    "directory": str,
    "directory_exists": bool,
    "notes": list,
    "near_misses": list,
    "files": list,
    "ca_certificates": list,
    "pairs": list,
    "error": (dict, type(None)),
    "warnings": list,
    "status": str,
    "exit_code": int,
}
NEAR_MISS_KEYS: Shape = {"name": str, "path": str, "reason": str, "fix": str}
FILE_KEYS: Shape = {"name": str, "path": str, "role": str, "kind": str, "link": (str, type(None))}
CA_KEYS: Shape = {
    "file": str,
    "subject": str,
    "issuer": str,
    "not_before": str,
    "not_after": str,
    "validity": str,
    "is_ca": bool,
    "self_signed": bool,
    "fingerprint": str,
}
PAIR_KEYS: Shape = {
    "name": str,
    "cert": str,
    "key": str,
    "subject": str,
    "issuer": str,
    "key_type": str,
    "not_before": (str, type(None)),
    "not_after": (str, type(None)),
    "validity": str,
    "chain_length": int,
    "fingerprint": str,
}
ERROR_KEYS: Shape = {"type": str, "message": str, "fix": str, "paths": list}
WARNING_KEYS: Shape = {"code": str, "path": str, "message": str, "fix": str}
PROBE_KEYS: Shape = {
    "schema": int,
    "command": str,
    "runtime": str,
    "url": str,
    "platform": str,
    "trust": str,
    "policy": str,
    "root": str,
    "directory": str,
    "directory_exists": bool,
    "ca_files": list,
    "error": (dict, type(None)),
    "attempts": list,
    "winner": (int, type(None)),
    "transport": str,
    "ca_names": (dict, type(None)),
    "go": (dict, type(None)),
    "exit_code": int,
}
CA_NAMES_KEYS: Shape = {
    "read": bool,
    "requested": (bool, type(None)),
    "names": list,
    "tls_version": (str, type(None)),
    "error": (str, type(None)),
    "install": (str, type(None)),
}
GO_KEYS: Shape = {
    "sends": (str, type(None)),
    "index": (int, type(None)),
    "reason": str,
    "accepted": (bool, type(None)),
    "detail": (str, type(None)),
    "summary": str,
}
ATTEMPT_KEYS: Shape = {
    "index": int,
    "endpoint": (str, type(None)),
    "candidate": (str, type(None)),
    "subject": (str, type(None)),
    "outcome": str,
    "detail": str,
    "layer": (str, type(None)),
    "status": (int, type(None)),
    "title": (str, type(None)),
    "alert": (str, type(None)),
    "tls_version": (str, type(None)),
    "elapsed_ms": float,
    "hint": (str, type(None)),
    "issuers": list,
    "issuer_listed": (bool, type(None)),
}
SCHEMAS: dict[str, Shape] = {
    "inspect": INSPECT_KEYS,
    "near_misses[]": NEAR_MISS_KEYS,
    "files[]": FILE_KEYS,
    "ca_certificates[]": CA_KEYS,
    "pairs[]": PAIR_KEYS,
    "error": ERROR_KEYS,
    "warnings[]": WARNING_KEYS,
    "probe": PROBE_KEYS,
    "attempts[]": ATTEMPT_KEYS,
    "ca_names": CA_NAMES_KEYS,
    "go": GO_KEYS,
}
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\Z")


def check_shape(obj: Any, keys: Shape) -> None:
    assert isinstance(obj, dict)
    assert set(obj) == set(keys), f"keys differ: {set(obj) ^ set(keys)}"
    for key, kind in keys.items():
        assert isinstance(obj[key], kind), f"{key}: {obj[key]!r} is not {kind}"
        if key in ("not_before", "not_after") and obj[key] is not None:
            assert ISO.match(obj[key]), obj[key]


def test_inspect_json_schema(run: Any, certs_d: CertsD, mtls_ca: CA) -> None:
    host = certs_d.host("reg:5000").ca(mtls_ca).pair("a", mtls_ca.issue_client("a"))
    host.pair("b", mtls_ca.issue_client("b", expired=True))
    certs_d.host("reg")

    code, out, _ = run("inspect", "reg:5000", "--root", str(certs_d.path), "--json")

    report = json.loads(out)
    check_shape(report, INSPECT_KEYS)
    assert (report["schema"], report["command"], report["argument_kind"]) == (1, "inspect", "host")
    assert (report["status"], report["exit_code"], code) == ("warnings", 1, 1)
    assert report["error"] is None
    for miss in report["near_misses"]:
        check_shape(miss, NEAR_MISS_KEYS)
    assert [f["role"] for f in report["files"]] == [
        "client-cert", "client-key", "client-cert", "client-key", "ca",
    ]  # fmt: skip
    for entry in report["files"]:
        check_shape(entry, FILE_KEYS)
    [ca] = report["ca_certificates"]
    check_shape(ca, CA_KEYS)
    assert ca["fingerprint"] == mtls_ca.fingerprint
    assert [p["name"] for p in report["pairs"]] == ["a", "b"]
    for pair in report["pairs"]:
        check_shape(pair, PAIR_KEYS)
    assert [p["validity"] for p in report["pairs"]] == ["valid", "expired"]
    for warning in report["warnings"]:
        check_shape(warning, WARNING_KEYS)
    assert [w["code"] for w in report["warnings"]] == ["client-cert-expired"]


def test_inspect_json_error(run: Any, certs_d: CertsD, mtls_ca: CA) -> None:
    host = certs_d.host("reg:5000").ca_as_cert(mtls_ca)
    code, out, _ = run("inspect", "reg:5000", "--root", str(certs_d.path), "--json")
    report = json.loads(out)
    check_shape(report, INSPECT_KEYS)
    assert (code, report["status"], report["pairs"]) == (2, "error", [])
    check_shape(report["error"], ERROR_KEYS)
    assert report["error"]["type"] == "MissingKeyError"
    assert report["error"]["paths"] == [str(host / "ca.cert"), str(host / "ca.key")]
    assert "rename ca.cert -> ca.crt" in report["error"]["fix"]


def test_every_json_key_is_documented() -> None:
    docs = DOCS.read_text(encoding="utf-8")
    for section, keys in SCHEMAS.items():
        for key in keys:
            assert f"| `{key}` |" in docs, f"{section}.{key} is not documented in {DOCS.name}"
    assert '"schema": 1' in docs


# --------------------------------------------------------------------------- probe


def tree(certs_d: CertsD, server: MTLSServer, *pairs: tuple[str, Leaf]) -> CertsD:
    host = certs_d.host(server.host).ca(server.server_ca)
    for name, leaf in pairs:
        host.pair(name, leaf)
    return certs_d


@pytest.mark.parametrize("tls", ["1.2", "1.3"])
@pytest.mark.parametrize(
    ("reject", "detail"),
    [("tls", None), ("http", "HTTP 400 The SSL certificate error")],
)
def test_probe_steps_from_the_wrong_certificate_to_the_right_one(
    run: Any,
    certs_d: CertsD,
    mtls_server: ServerFactory,
    wrong: Leaf,
    right: Leaf,
    reject: str,
    detail: Optional[str],
    tls: str,
) -> None:
    server = mtls_server(reject=reject, tls_version=tls)
    if detail is None:  # refused in TLS: the transport's own words for the version
        detail = "TLS alert unknown_ca" if tls == "1.2" else TLS13_REFUSAL
    tree(certs_d, server, ("a-wrong", wrong), ("b-right", right))

    code, out, err = run("probe", server.url, "--root", str(certs_d.path))

    assert (code, err) == (0, "")
    rows = re.findall(
        r"^  (\d)\s+(\S+)\s+(CN=\w+)\s+(\w+)\s+(.+?)\s+(TLSv1\.\d|-)\s+\d+ ms$", out, re.M
    )
    assert [row[:5] for row in rows] == [
        ("1", "a-wrong", "CN=wrong", "rejected", detail),
        ("2", "b-right", "CN=right", "accepted", "HTTP 200 OK"),
    ]
    assert rows[1][5] == f"TLSv{tls}"
    assert "The transport settles on b-right (2nd of 2). (exit 0)" in out
    # A URL without a path gets /v2/; the right certificate reached the server.
    assert [r.path for r in server.requests if r.status == 200] == ["/v2/"]
    assert server.requests[-1].client_subject == "CN=right"


def test_probe_json_schema(
    run: Any, certs_d: CertsD, mtls_server: ServerFactory, wrong: Leaf, right: Leaf
) -> None:
    server = mtls_server(reject="tls", tls_version="1.3")
    tree(certs_d, server, ("a-wrong", wrong), ("b-right", right))

    code, out, _ = run("probe", server.url + "/v2/_catalog", "--root", str(certs_d.path), "--json")

    report = json.loads(out)
    check_shape(report, PROBE_KEYS)
    assert (code, report["exit_code"], report["winner"], report["schema"]) == (0, 0, 2, 1)
    assert report["url"] == server.url + "/v2/_catalog"
    assert report["directory"] == str(certs_d.path / server.host)
    for attempt in report["attempts"]:
        check_shape(attempt, ATTEMPT_KEYS)
    check_shape(report["ca_names"], CA_NAMES_KEYS)
    check_shape(report["go"], GO_KEYS)
    first, second = report["attempts"]
    assert (first["outcome"], first["alert"], first["status"]) == ("rejected", "unknown_ca", None)
    # The server lists the right pair's CA: Go sends that pair, as the transport settles on.
    assert report["ca_names"]["names"] == [right.issuer.subject]
    assert [a["issuer_listed"] for a in report["attempts"]] == [False, True]
    assert [a["issuers"] for a in report["attempts"]] == [
        [wrong.issuer.subject],
        [right.issuer.subject],
    ]
    assert (report["go"]["sends"], report["go"]["index"], report["go"]["accepted"]) == (
        "b-right",
        2,
        True,
    )
    assert first["hint"] == "the registry does not trust the CA that issued this certificate"
    assert (second["outcome"], second["status"], second["tls_version"]) == (
        "accepted",
        200,
        "TLSv1.3",
    )


def test_probe_every_certificate_rejected_in_tls(
    run: Any, certs_d: CertsD, mtls_server: ServerFactory, wrong: Leaf
) -> None:
    server = mtls_server(reject="tls")
    tree(certs_d, server, ("a-wrong", wrong))
    code, out, _ = run("probe", server.url, "--root", str(certs_d.path))
    assert code == 2
    assert "raises ClientCertificateRejected: every candidate was rejected" in out


def test_probe_every_certificate_rejected_in_http(
    run: Any, certs_d: CertsD, mtls_server: ServerFactory, wrong: Leaf
) -> None:
    server = mtls_server(reject="status", status=403)
    tree(certs_d, server, ("a-wrong", wrong))
    code, out, _ = run("probe", server.url, "--root", str(certs_d.path), "--json")
    report = json.loads(out)
    assert (code, report["winner"]) == (2, None)
    assert report["attempts"][0]["detail"] == "HTTP 403 Forbidden"
    assert report["attempts"][0]["layer"] == "authorization"
    assert report["transport"].startswith("returns the answer of candidate 1 (HTTP 403 Forbidden)")


def test_probe_without_a_client_certificate(
    run: Any, certs_d: CertsD, mtls_server: ServerFactory
) -> None:
    server = mtls_server(reject="http")
    certs_d.host(server.host).ca(server.server_ca)
    code, out, _ = run("probe", server.host, "--root", str(certs_d.path), "--json")
    report = json.loads(out)
    assert code == 2
    [attempt] = report["attempts"]
    assert attempt["candidate"] is None
    assert attempt["detail"] == "HTTP 400 No required SSL certificate was sent"
    assert attempt["hint"] == "nginx wants a client certificate and got none"


def test_probe_token_challenge_is_not_a_rejection(
    run: Any, certs_d: CertsD, mtls_server: ServerFactory, right: Leaf
) -> None:
    server = mtls_server(reject="tls", auth_challenge=True)
    tree(certs_d, server, ("client", right))
    code, out, _ = run("probe", server.url, "--root", str(certs_d.path))
    assert code == 0
    assert "accepted  HTTP 401 Unauthorized (token auth challenge" in out


def test_probe_untrusted_server_is_an_error_not_a_rejection(
    run: Any, certs_d: CertsD, mtls_server: ServerFactory, wrong: Leaf, right: Leaf
) -> None:
    server = mtls_server(reject="tls")
    # No ca.crt: the server's certificate cannot be verified; no client certificate helps.
    certs_d.host(server.host).pair("a", wrong).pair("b", right)
    code, out, _ = run("probe", server.url, "--root", str(certs_d.path), "--json")
    report = json.loads(out)
    assert code == 2
    assert [a["outcome"] for a in report["attempts"]] == ["error", "error"]
    assert "CERTIFICATE_VERIFY_FAILED" in report["attempts"][0]["detail"]
    assert "put its CA in the host directory as ca.crt" in report["attempts"][0]["hint"]
    assert report["transport"].startswith("raises the error of candidate 1")
    assert server.requests == []


def test_probe_nothing_listening(run: Any, certs_d: CertsD) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, out, _ = run("probe", f"https://127.0.0.1:{port}/", "--root", str(certs_d.path))
    assert code == 2
    assert "Connection refused" in out
    assert f"1: nothing listens on 127.0.0.1:{port}" in out


def test_probe_broken_directory(run: Any, certs_d: CertsD, mtls_ca: CA) -> None:
    certs_d.host("localhost:5999").ca_as_cert(mtls_ca)
    code, out, _ = run("probe", "https://localhost:5999/v2/", "--root", str(certs_d.path))
    assert code == 2
    assert "missing key ca.key for client certificate ca.cert" in out
    assert "rename ca.cert -> ca.crt" in out
    assert "does not connect" in out


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        ("http://reg:5000/v2/", "probe needs an https:// URL"),
        ("bad host!", "is neither an https:// URL nor a registry host"),
        ("https://bad host/", "not a registry host"),
    ],
)
def test_probe_argument_errors(run: Any, argument: str, message: str) -> None:
    code, out, err = run("probe", argument)
    assert (code, out) == (2, "")
    assert len(err.splitlines()) == 1
    assert err.startswith("dockercerts: error: ")
    assert message in err
    no_traceback(err)


def test_probe_timeout_must_be_positive(run: Any) -> None:
    code, _, err = run("probe", "reg:5000", "--timeout", "0")
    assert code == 2
    assert "--timeout must be a positive number" in err


# --------------------------------------------------------------------------- demo


def test_demo(run: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    started = time.monotonic()

    code, out, err = run("demo")

    assert (code, err) == (0, "")
    assert time.monotonic() - started < 10
    rejected = out.index("client certificate a-old-laptop rejected (")
    accepted = out.index("using client certificate b-ci-runner")
    assert rejected < accepted
    assert "new TLS connections per request: 2, then 0, then 0." in out
    assert out.count("kept b-ci-runner from an earlier request, connection reused") == 2
    assert "Result: OK" in out  # inspect of the tree
    assert "The transport settles on b-ci-runner (2nd of 2)." in out  # probe of it
    assert out.rstrip().endswith(".")
    # Everything is gone: the temporary tree and the server.
    assert list(tmp_path.iterdir()) == []
    port = int(re.search(r"https://localhost:(\d+)", out).group(1))  # type: ignore[union-attr]
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


def test_demo_keep(run: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    code, out, _ = run("demo", "--keep")
    assert code == 0
    [kept] = tmp_path.iterdir()
    assert f"kept {kept}" in out
    [host] = (kept / "certs.d").iterdir()
    assert sorted(p.name for p in host.iterdir()) == [
        "a-old-laptop.cert", "a-old-laptop.key", "b-ci-runner.cert", "b-ci-runner.key", "ca.crt",
    ]  # fmt: skip


def test_demo_cleans_up_when_interrupted(
    run: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    servers: list[MTLSServer] = []

    class Recording(MTLSServer):
        def start(self) -> MTLSServer:
            servers.append(self)
            return super().start()

    def interrupt(*args: Any) -> bool:
        raise KeyboardInterrupt

    monkeypatch.setattr("dockercerts.testing.MTLSServer", Recording)
    monkeypatch.setattr(demo, "_demo_requests", interrupt)

    code, _, err = run("demo")

    assert code == 130
    assert err == "dockercerts: interrupted\n"
    assert list(tmp_path.iterdir()) == []
    [server] = servers
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", server.port), timeout=1):
        pass


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("argument", ["bad host!", "reg:99999/app", "ftp://reg/"])
def test_invalid_argument_is_one_line(run: Any, argument: str) -> None:
    code, out, err = run("inspect", argument)
    assert (code, out) == (2, "")
    assert len(err.splitlines()) == 1, err
    assert err.startswith("dockercerts: error: ")
    no_traceback(err)


@pytest.mark.parametrize("position", ["before", "after"])
def test_debug_shows_the_traceback(run: Any, position: str) -> None:
    argv = ["inspect", "bad host!"]
    argv = ["--debug", *argv] if position == "before" else [*argv, "--debug"]
    code, _, err = run(*argv)
    assert code == 2
    assert "Traceback (most recent call last)" in err
    assert err.splitlines()[-1].startswith("dockercerts: error: 'bad host!'")


def test_unexpected_errors_are_one_line_too(run: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("something broke")

    monkeypatch.setattr(cli, "inspect_report", boom)
    code, _, err = run("inspect", "reg:5000")
    assert code == 2
    assert err == (
        "dockercerts: error: unexpected RuntimeError: something broke "
        "(fix: run again with --debug and report the traceback)\n"
    )
    code, _, err = run("--debug", "inspect", "reg:5000")
    assert "Traceback" in err
    assert "RuntimeError: something broke" in err


def test_no_command_prints_usage(run: Any) -> None:
    code, out, err = run()
    assert (code, out) == (2, "")
    assert "usage: dockercerts" in err
    assert "inspect" in err
    assert "demo" in err


def test_usage_error(run: Any) -> None:
    code, _, err = run("inspect", "reg:5000", "--platform", "beos")
    assert code == 2
    assert "invalid choice: 'beos'" in err


def test_version(run: Any) -> None:
    code, out, _ = run("--version")
    assert code == 0
    assert out.startswith(f"dockercerts {dockercerts.__version__} (Python ")


def test_logging_state_is_restored(run: Any, certs_d: CertsD) -> None:
    logger = logging.getLogger("dockercerts")
    before = (list(logger.handlers), logger.level)
    run("--debug", "inspect", "reg:5000", "--root", str(certs_d.path))
    run("inspect", "bad host!")
    assert (list(logger.handlers), logger.level) == before


# --------------------------------------------------------------------------- colour


class FakeTTY:
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("mode", "env", "expected"),
    [
        ("auto", {}, True),
        ("auto", {"NO_COLOR": "1"}, False),
        ("auto", {"NO_COLOR": ""}, True),  # no-color.org: only a non-empty value counts
        ("auto", {"TERM": "dumb"}, False),
        ("never", {}, False),
        ("always", {"NO_COLOR": "1"}, True),  # an explicit flag wins over the environment
    ],
)
def test_use_colour(mode: str, env: dict[str, str], expected: bool) -> None:
    assert use_colour(FakeTTY(), mode, env) is expected  # type: ignore[arg-type]


def test_no_colour_when_not_a_tty(
    run: Any, certs_d: CertsD, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    certs_d.host("reg:5000")
    _, out, _ = run("inspect", "reg:5000", "--root", str(certs_d.path))
    assert ESC not in out
    _, out, _ = run("inspect", "reg:5000", "--root", str(certs_d.path), "--color", "always")
    assert f"{ESC}1mdockercerts inspect reg:5000{ESC}0m" in out


def run_in_pty(argv: list[str], env: dict[str, str]) -> str:
    """Run ``argv`` with stdout on a pseudo-terminal, as in an interactive shell."""
    pty = pytest.importorskip("pty")
    master, slave = pty.openpty()
    with subprocess.Popen(argv, stdout=slave, stderr=subprocess.PIPE, env=env) as proc:
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed its side
                break
            if not data:
                break
            chunks.append(data)
        os.close(master)
        assert proc.wait(timeout=30) in (0, 1)
    return b"".join(chunks).decode()


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_colour_on_a_terminal_unless_no_color(certs_d: CertsD, mtls_ca: CA) -> None:
    host = certs_d.host("reg:5000").ca(mtls_ca)
    host.pair("a-old", mtls_ca.issue_client("old", expired=True))
    # Yellow and narrower than the red EXPIRED cell above it: padding must not count escapes.
    host.pair("b-new", mtls_ca.issue_client("new", not_yet_valid=True))
    argv = [console_script(), "inspect", "reg:5000", "--root", str(certs_d.path)]
    env = env_without_colour_vars()

    coloured = run_in_pty(argv, env)
    assert f"{ESC}31mEXPIRED" in coloured
    assert f"{ESC}33mfrom " in coloured
    plain = run_in_pty(argv, {**env, "NO_COLOR": "1"})
    assert ESC not in plain
    assert "EXPIRED" in plain
    # Colour codes are added after padding: the columns line up either way.
    strip = re.compile(r"\x1b\[[0-9;]*m")
    assert strip.sub("", coloured) == plain


# --------------------------------------------------------------------------- subprocesses


def test_console_script_and_module_agree(certs_d: CertsD, mtls_ca: CA) -> None:
    certs_d.host("reg:5000").ca_as_cert(mtls_ca)
    argv = ["inspect", "reg:5000", "--root", str(certs_d.path), "--json"]
    env = env_without_colour_vars()
    script = subprocess.run(
        [console_script(), *argv], capture_output=True, text=True, env=env, timeout=60
    )
    module = subprocess.run(
        [sys.executable, "-m", "dockercerts", *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert script.returncode == module.returncode == 2
    assert script.stderr == module.stderr == ""
    assert json.loads(script.stdout) == json.loads(module.stdout)
    assert json.loads(script.stdout)["error"]["type"] == "MissingKeyError"


def test_console_script_error_has_no_traceback() -> None:
    proc = subprocess.run(
        [console_script(), "inspect", "bad host!"], capture_output=True, text=True, timeout=60
    )
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr.count("\n") == 1
    no_traceback(proc.stderr)


def test_module_version() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "dockercerts", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0
    assert proc.stdout.startswith(f"dockercerts {dockercerts.__version__} ")


def test_console_script_probe(
    certs_d: CertsD, mtls_server: ServerFactory, wrong: Leaf, right: Leaf
) -> None:
    server = mtls_server(reject="http", tls_version="1.3")
    tree(certs_d, server, ("a-wrong", wrong), ("b-right", right))
    proc = subprocess.run(
        [console_script(), "probe", server.url, "--root", str(certs_d.path)],
        capture_output=True,
        text=True,
        env=env_without_colour_vars(),
        timeout=60,
    )
    assert (proc.returncode, proc.stderr) == (0, "")
    assert "settles on b-right (2nd of 2)" in proc.stdout


def test_console_script_demo() -> None:
    started = time.monotonic()
    proc = subprocess.run(
        [console_script(), "demo"],
        capture_output=True,
        text=True,
        env=env_without_colour_vars(),
        timeout=60,
    )
    assert (proc.returncode, proc.stderr) == (0, ""), proc.stderr
    assert time.monotonic() - started < 15
    out = proc.stdout
    assert out.index("a-old-laptop rejected") < out.index("using client certificate b-ci-runner")
    assert ESC not in out
    removed = re.search(r"removed (\S+)\.$", out.rstrip())
    assert removed is not None
    assert not Path(removed.group(1)).exists()


# --------------------------------------------------------------------------- real peers


@pytest.fixture(scope="module")
def peer_files(tmp_path_factory: pytest.TempPathFactory, mtls_ca: CA) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("peer-pki")
    cert, key = mtls_ca.issue_server().write(folder / "server.pem", folder / "server.key")
    return {"server_cert": cert, "server_key": key, "client_ca": mtls_ca.write(folder / "ca.pem")}


def peer_tree(root: Path, host: str, mtls_ca: CA, wrong: Leaf, right: Leaf) -> None:
    CertsD(root).host(host).ca(mtls_ca).pair("a-wrong", wrong).pair("b-right", right)


@pytest.fixture
def peers_module() -> Any:
    """tests/peers.py (real nginx and docker-registry); it decides whether to skip."""
    return pytest.importorskip("peers")


@pytest.mark.peers
@pytest.mark.parametrize("tls", ["TLSv1.2", "TLSv1.3"])
def test_probe_real_nginx(
    run: Any,
    tmp_path: Path,
    peers_module: Any,
    peer_files: dict[str, Path],
    mtls_ca: CA,
    wrong: Leaf,
    right: Leaf,
    tls: str,
) -> None:
    binary = peers_module.require_peer("nginx")
    with peers_module.NginxPeer(
        mode="verify", protocols=[tls], binary=binary, **peer_files
    ) as nginx:
        peer_tree(tmp_path, nginx.host, mtls_ca, wrong, right)
        code, out, _ = run("probe", nginx.url, "--root", str(tmp_path), "--json")
    report = json.loads(out)
    assert code == 0, out
    first, second = report["attempts"]
    assert (first["outcome"], first["detail"]) == (
        "rejected",
        "HTTP 400 The SSL certificate error",
    )
    assert (second["outcome"], second["status"], second["tls_version"]) == ("accepted", 200, tls)
    assert report["winner"] == 2


@pytest.mark.peers
@pytest.mark.parametrize("minimum", ["tls1.2", "tls1.3"])
def test_probe_real_docker_registry(
    run: Any,
    tmp_path: Path,
    peers_module: Any,
    peer_files: dict[str, Path],
    mtls_ca: CA,
    wrong: Leaf,
    right: Leaf,
    minimum: str,
) -> None:
    binary = peers_module.require_peer("docker-registry")
    with peers_module.RegistryPeer(minimum_tls=minimum, binary=binary, **peer_files) as registry:
        peer_tree(tmp_path, registry.host, mtls_ca, wrong, right)
        code, out, _ = run("probe", registry.url, "--root", str(tmp_path), "--json")
    report = json.loads(out)
    assert code == 0, out
    first, second = report["attempts"]
    assert (first["outcome"], first["layer"]) == ("rejected", "certificate")
    # Go negotiates TLS 1.3 whatever the minimum: the refusal comes after the handshake.
    assert (first["detail"], first["tls_version"]) == (TLS13_REFUSAL, "TLSv1.3")
    assert (second["outcome"], second["status"]) == ("accepted", 200)
    assert report["winner"] == 2


# --------------------------------------------------------------------------- probe == transport

CHALLENGE = [("WWW-Authenticate", 'Bearer realm="https://auth.test/token"')]
REJECTION_MATRIX = {
    "tls": {"reject": "tls"},
    "nginx-400": {"reject": "http"},
    **{f"status-{s}": {"reject": "status", "status": s} for s in (401, 403, 495, 496, 500, 502)},
    "token-challenge": {"reject": "status", "status": 401, "status_headers": CHALLENGE},
    "outage-for-all": {"reject": "status", "status": 502, "accept": lambda info: False},
}


@pytest.mark.parametrize("tls", ["1.2", "1.3"])
@pytest.mark.parametrize("server_kind", sorted(REJECTION_MATRIX))
def test_probe_reports_what_the_transport_does(
    run: Any,
    tmp_path: Path,
    mtls_server: ServerFactory,
    stranger: CA,
    wrong: Leaf,
    right: Leaf,
    server_kind: str,
    tls: str,
) -> None:
    """Over the whole rejection matrix, every policy and both orders: the probe's verdicts,
    winner and last line are what a fresh Transport does with the same request."""
    options = dict(REJECTION_MATRIX[server_kind])
    if options["reject"] == "status":
        options["handshake_cas"] = [stranger]  # the wrong pair gets the status, not an alert
    server = mtls_server(tls_version=tls, **options)
    for order in (("a-wrong", "b-right"), ("a-right", "b-wrong")):
        certs_d = CertsD(tmp_path / "-".join(order))
        host = certs_d.host(server.host).ca(server.server_ca)
        for name in order:
            host.pair(name, right if name.endswith("right") else wrong)
        for policy in ("docker", "docker-legacy", "tls-only"):
            case = f"{server_kind} TLS {tls} {order} {policy}"
            code, out, _ = run(
                "probe", server.url, "--root", str(certs_d.path), "--json", "--policy", policy
            )
            report = json.loads(out)
            transport = dockercerts.Transport(root=certs_d.path, policy=policy)
            with httpx.Client(transport=transport, timeout=5) as http:
                try:
                    response = http.get(server.url + "/v2/")
                except dockercerts.ClientCertificateRejected as exc:
                    attempts, did = exc.attempts, "raises ClientCertificateRejected"
                else:
                    attempts = response.extensions["dockercerts.attempts"]
                    did = f"HTTP {response.status_code}"
                winner = transport.winner(server.url)
            # Every verdict the transport reached, the probe reports the same way.
            probed = report["attempts"][: len(attempts)]
            assert [(a["candidate"], a["outcome"], a["layer"], a["status"]) for a in probed] == [
                (
                    a.candidate,
                    "accepted" if a.verdict in ("accepted", "returned") else a.verdict,
                    a.layer,
                    a.status,
                )
                for a in attempts
            ], case
            # The same end: the winner settled on, or the answer or error given back.
            if report["winner"] is not None:
                chosen = report["attempts"][report["winner"] - 1]
                assert (winner, did) == (chosen["candidate"], f"HTTP {chosen['status']}"), case
                assert code == 0
            elif did.startswith("raises"):
                assert report["transport"].startswith(did), case
            else:
                assert winner is None, case
                assert report["transport"].startswith("returns the answer of candidate"), case
                assert f"({did} " in report["transport"], case
