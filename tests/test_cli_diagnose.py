"""The diagnosis is the library's: ``load(...).warnings`` is what ``inspect`` lists.

The CLI tests compare every report they make (see warnings_parity.py); these trees add the
warnings no other CLI test reaches, and the library side of each.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

import dockercerts
from dockercerts.diagnose import explain, refused_folder_warnings
from dockercerts.errors import MissingCertificateError
from dockercerts.testing import CA, CertsD


def inspect_json(run: Any, certs_d: CertsD, host: str) -> dict[str, Any]:
    _code, out, _err = run("inspect", host, "--root", str(certs_d.path), "--json")
    report: dict[str, Any] = json.loads(out)
    return report


def as_reports(found: Any) -> list[dict[str, str]]:
    return [
        {"code": w.code, "path": str(w.path), "message": w.message, "fix": w.fix} for w in found
    ]


def test_an_expired_ca_certificate_is_a_library_warning(
    run: Any, certs_d: CertsD, mtls_ca: CA
) -> None:
    old = mtls_ca.issue_client("old server", expired=True)
    host = certs_d.host("reg:5000").ca(mtls_ca).ca(old, "old.crt")

    certs = dockercerts.load("reg:5000", root=certs_d.path)

    assert [(w.code, w.path) for w in certs.warnings] == [("ca-cert-expired", host / "old.crt")]
    assert [ca.file.name for ca in certs.ca_details] == ["ca.crt", "old.crt"]
    assert inspect_json(run, certs_d, "reg:5000")["warnings"] == as_reports(certs.warnings)


def test_a_refused_folder_still_names_its_expired_ca(
    run: Any, certs_d: CertsD, mtls_ca: CA
) -> None:
    old = mtls_ca.issue_client("old server", expired=True)
    host = certs_d.host("reg:5000").ca(old, "old.crt").ca_as_cert(mtls_ca)

    with pytest.raises(dockercerts.CertsDirError):
        dockercerts.load("reg:5000", root=certs_d.path)
    report = inspect_json(run, certs_d, "reg:5000")

    assert report["error"]["type"] == "MissingKeyError"
    assert report["warnings"] == as_reports(refused_folder_warnings(host.path))
    assert [w["code"] for w in report["warnings"]] == ["ca-cert-expired"]


def test_a_missing_folder_is_said_but_not_logged(
    certs_d: CertsD, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="dockercerts"):
        certs = dockercerts.load("reg:5000", root=certs_d.path)
    assert [w.code for w in certs.warnings] == ["host-directory-missing"]
    assert caplog.records == []
    hub = dockercerts.load("docker.io", root=certs_d.path)
    assert hub.warnings == ()  # Docker reads no folder for Docker Hub


def test_the_fix_of_a_kubernetes_secret_layout_looks_at_the_key(
    certs_d: CertsD, mtls_ca: CA
) -> None:
    leaf = mtls_ca.issue_client("alice")
    host = certs_d.host("reg:5000").ca(leaf, "tls.crt").key_only("tls", leaf)

    with pytest.raises(MissingCertificateError) as caught:
        dockercerts.load("reg:5000", root=certs_d.path)
    _message, fix = explain(caught.value)

    assert fix == (
        "a Kubernetes TLS secret layout (tls.crt + tls.key); Docker reads .crt as a CA "
        "root: if tls.crt is the client certificate (its key matches), rename tls.crt -> "
        "tls.cert"
    )
    assert host.path.name == "reg:5000"
