"""``dockercerts inspect|probe --runtime podman|containerd``: roots and folders tried, which
won, near misses, endpoints with their TLS, what was ignored; text and ``--json`` alike."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from peers import free_port, require_pyopenssl
from test_cli_hostile import run_unprivileged, shared_root  # noqa: F401 (a fixture)

from dockercerts._layouts import Layout
from dockercerts._nearmisses import runtime_near_misses
from dockercerts.cli import main
from dockercerts.rejection import TLS13_REFUSAL
from dockercerts.testing import CA, CertsD, Leaf


@pytest.fixture(scope="session")
def alice(mtls_ca: CA) -> Leaf:
    return mtls_ca.issue_client("alice")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def report(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code, out, _ = run(capsys, *argv, "--json")
    return code, json.loads(out)


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(0o600)


HUB_TOML = b"""\
server = "https://registry-1.docker.io"
client = "client.pem"
[host."https://mirror.internal"]
  capabilities = ["pull", "resolve"]
  ca = "mirror-ca.crt"
  mirorr = true
[host."https://lab.internal:5000"]
  skip_verify = true
"""


def hub_tree(root: Path, mtls_ca: CA, alice: Leaf) -> Path:
    folder = root / "docker.io"
    write(folder / "mirror-ca.crt", mtls_ca.cert_pem)
    write(folder / "client.pem", alice.cert_pem + alice.key_pem())
    write(folder / "hosts.toml", HUB_TOML)
    write(folder / "notes.txt", b"x")
    return folder


def test_inspect_containerd_docker_io_shows_endpoints_tls_and_ignored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mtls_ca: CA, alice: Leaf
) -> None:
    folder = hub_tree(tmp_path, mtls_ca, alice)
    code, data = report(
        capsys, "inspect", "--runtime", "containerd", "docker.io", "--root", str(tmp_path)
    )
    assert code == 1
    assert data["runtime"] == "containerd"
    assert data["status"] == "warnings"
    assert data["directory"] == str(folder)
    assert data["source"] == "hosts.toml"
    assert [e["url"] for e in data["endpoints"]] == [
        "https://mirror.internal/v2",
        "https://lab.internal:5000/v2",
        "https://registry-1.docker.io/v2",
    ]
    mirror, lab, server = data["endpoints"]
    assert mirror["ca_files"] == [str(folder / "mirror-ca.crt")]
    assert mirror["pairs"] == []
    assert mirror["capabilities"] == ["pull", "resolve"]
    assert lab["skip_verify"] is True
    assert [p["subject"] for p in server["pairs"]] == ["CN=alice"]
    assert server["this_host"]
    assert [i["key"] for i in data["ignored"]] == ["host.https://mirror.internal.mirorr"]
    assert {f["name"]: f["role"] for f in data["files"]} == {
        "client.pem": "client-cert",
        "hosts.toml": "hosts.toml",
        "mirror-ca.crt": "ca",
        "notes.txt": "ignored",
    }
    assert [w["code"] for w in data["warnings"]] == ["skip-verify"]
    # The top-level client does not reach the [host] tables: a near miss.
    assert any("top-level client" in m["reason"] for m in data["near_misses"])

    code, text, _ = run(
        capsys, "inspect", "--runtime", "containerd", "docker.io", "--root", str(tmp_path)
    )
    assert code == 1
    assert "skip_verify = true: the server is NOT verified" in text
    assert "<- requests to this host use it" in text
    assert "mirorr: not a hosts.toml setting" in text
    read_line = next(line for line in text.splitlines() if line.endswith("<- read"))
    assert read_line.split()[:2] == [str(folder), "found"]


def test_inspect_containerd_folders_tried_across_rootless_roots(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROOTLESSKIT_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    one = CertsD(tmp_path / "cfg/containerd/certs.d")
    two = CertsD(tmp_path / "cfg/docker/certs.d")
    one.host("reg:5000")
    two.host("reg_5000_").file("ca.crt", b"")
    two.host("reg:443")
    code, data = report(capsys, "inspect", "--runtime", "containerd", "reg:5000")
    assert [r["path"] for r in data["roots"]] == [str(one.root), str(two.root)]
    assert [(Path(e["path"]).name, e["state"], e["chosen"]) for e in data["looked"]] == [
        ("reg_5000_", "missing", False),
        ("reg:5000", "directory", True),
    ]
    (shadowed,) = data["near_misses"]
    assert shadowed["path"] == str(two.root / "reg_5000_")
    assert "never read" in shadowed["reason"]
    assert "ca.crt" in shadowed["reason"]
    assert data["source"] == "files"
    assert code == 0

    code, data = report(capsys, "inspect", "--runtime", "containerd", "reg")
    assert data["directory"] is None
    assert data["warnings"][0]["code"] == "host-directory-missing"
    assert [m["name"] for m in data["near_misses"]] == ["reg:443"]
    assert "nerdctl adds :443" in data["near_misses"][0]["reason"]


def test_inspect_containerd_broken_and_failing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mtls_ca: CA, alice: Leaf
) -> None:
    folder = CertsD(tmp_path).host("reg:5000").ca(mtls_ca).pair("alice", alice)
    write(folder.path / "hosts.toml", b"server = [")
    code, data = report(
        capsys, "inspect", "--runtime", "containerd", "reg:5000", "--root", str(tmp_path)
    )
    assert code == 1
    assert data["source"] == "files"
    assert data["hosts_error"].startswith(f"failed to decode {folder.path / 'hosts.toml'}: toml:")
    assert [w["code"] for w in data["warnings"]] == ["hosts-toml-unusable"]
    assert [p["name"] for p in data["endpoints"][0]["pairs"]] == ["alice.cert"]

    write(folder.path / "hosts.toml", b'ca = "gone.crt"\n')
    code, data = report(
        capsys, "inspect", "--runtime", "containerd", "reg:5000", "--root", str(tmp_path)
    )
    assert code == 2
    assert data["status"] == "error"
    assert data["error"]["type"] == "EndpointTLSError"
    assert data["error"]["message"].startswith(f'unable to read CA cert "{folder.path}/gone.crt"')
    assert data["error"]["endpoint"] == "https://reg:5000/v2"
    code, text, _ = run(
        capsys, "inspect", "--runtime", "containerd", "reg:5000", "--root", str(tmp_path)
    )
    assert "containerd would fail" in text
    assert code == 2


def test_inspect_podman_wording_cert_dir_and_usage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mtls_ca: CA, alice: Leaf
) -> None:
    folder = CertsD(tmp_path).host("reg:5000").cert_only("client", alice)
    code, data = report(
        capsys, "inspect", "--runtime", "podman", "reg:5000", "--root", str(tmp_path)
    )
    assert code == 2
    assert data["error"]["message"] == (
        "missing key client.key for client certificate client.cert. Note that CA certificates "
        "should use the extension .crt"
    )
    folder.remove("client.cert").ca(mtls_ca).pair("alice", alice)
    code, data = report(
        capsys, "inspect", "--runtime", "podman", "anything:1", "--cert-dir", str(folder.path)
    )
    assert code == 0
    assert data["cert_dir"] == str(folder.path)
    assert [p["name"] for p in data["pairs"]] == ["alice"]
    assert data["looked"][0]["chosen"] is True
    code, _, err = run(capsys, "inspect", "reg:5000", "--cert-dir", str(folder.path))
    assert code == 2
    assert "--cert-dir is podman's option" in err


def test_podman_near_miss_shadowed_by_home(tmp_path: Path, mtls_ca: CA) -> None:
    """A CA under a later root that podman never sees: the home folder exists."""
    home, etc = CertsD(tmp_path / "home"), CertsD(tmp_path / "etc-docker")
    home.host("reg:5000")
    etc.host("reg:5000").ca(mtls_ca)
    chosen = Layout("podman", (home.root, tmp_path / "etc-containers", etc.root), "linux")
    (miss,) = runtime_near_misses(chosen, "reg:5000", chosen.lookup(("reg:5000",)))
    assert miss.path == etc.root / "reg:5000"
    assert "ca.crt" in miss.reason
    assert "merges nothing" in miss.reason


def test_docker_json_says_its_runtime(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, data = report(capsys, "inspect", "reg:5000", "--root", str(tmp_path))
    assert data["runtime"] == "docker"


def test_probe_with_runtime_containerd(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mtls_server: Any, alice: Leaf
) -> None:
    srv = mtls_server(reject="tls", tls_version="1.3")
    folder = tmp_path / f"localhost_{srv.port}_"
    write(folder / "a.pem", alice.cert_pem + alice.key_pem())
    write(folder / "ca.crt", srv.server_ca.cert_pem)
    write(
        folder / "hosts.toml", f'server = "{srv.url}"\nca = "ca.crt"\nclient = ["a.pem"]\n'.encode()
    )
    code, data = report(
        capsys, "probe", srv.url, "--runtime", "containerd", "--root", str(tmp_path)
    )
    assert code == 0
    assert data["runtime"] == "containerd"
    assert data["directory"] == str(folder)
    assert data["winner"] == 1
    assert data["attempts"][0]["candidate"] == "a.pem"


def test_probe_go_column_asks_with_the_endpoints_own_trust(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mtls_server: Any, alice: Leaf
) -> None:
    """The server lists only a decoy CA, so Go sends no certificate; the probe's request
    without one is made with the endpoint's own trust, as the flow reads the folder (here a
    ``ca`` that is no ``.crt``, which Docker's rules would skip: the server would then be
    untrusted and the answer an error, not the server's refusal)."""
    require_pyopenssl()
    srv = mtls_server(reject="tls", tls_version="1.3", send_ca_names=[CA(name="decoy CA")])
    folder = tmp_path / f"localhost_{srv.port}_"
    write(folder / "a.pem", alice.cert_pem + alice.key_pem())
    write(folder / "registry-ca.pem", srv.server_ca.cert_pem)
    toml = f'server = "{srv.url}"\nca = "registry-ca.pem"\nclient = ["a.pem"]\n'
    write(folder / "hosts.toml", toml.encode())
    code, data = report(
        capsys, "probe", srv.url, "--runtime", "containerd", "--root", str(tmp_path)
    )
    assert code == 0
    assert data["winner"] == 1  # dockercerts sends the pair, which the server accepts
    go = data["go"]
    assert (go["sends"], go["accepted"]) == (None, False), go
    # The server's refusal of "none", which only a request that trusts it can see.
    assert go["detail"] in (TLS13_REFUSAL, "TLS alert certificate_required"), go
    assert [r.client_subject for r in srv.requests] == ["CN=alice"]  # the probe's one GET


def test_podman_denied_home_folder_is_skipped_for_real(
    shared_root: Path,  # noqa: F811 (the fixture imported above)
    mtls_ca: CA,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Permission denied on a place's stat, as an unprivileged user: podman skips it,
    containerd stops there."""
    home = shared_root / "home"
    CertsD(home / ".config/containers/certs.d").host("reg.dockercerts.invalid:5000").ca(mtls_ca)
    os.chmod(home / ".config", 0o000)
    monkeypatch.setenv("HOME", str(home))
    done = run_unprivileged(
        "inspect", "--runtime", "podman", "reg.dockercerts.invalid:5000", "--json"
    )
    data = json.loads(done.stdout)
    assert data["looked"][0]["state"] == "denied", done.stderr
    assert data["directory"] is None
    denied = run_unprivileged(
        "inspect",
        "--runtime",
        "containerd",
        "reg.dockercerts.invalid:5000",
        "--root",
        str(home / ".config/containers/certs.d"),
        "--json",
    )
    data = json.loads(denied.stdout)
    assert data["looked"][0]["state"] == "denied"
    assert data["looked"][0]["chosen"]
    assert denied.returncode == 2
    assert "permission denied" in data["error"]["message"]


def test_runtime_json_keys_are_documented(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mtls_ca: CA, alice: Leaf
) -> None:
    docs = (Path(__file__).resolve().parent.parent / "docs" / "cli.md").read_text("utf-8")
    section = docs[docs.index("### inspect --runtime", docs.index("## JSON output")) :]
    hub_tree(tmp_path, mtls_ca, alice)
    keys: set[str] = set()
    for runtime in ("podman", "containerd"):
        _, data = report(
            capsys, "inspect", "--runtime", runtime, "docker.io", "--root", str(tmp_path)
        )
        keys |= set(data)
        for endpoint in data.get("endpoints", []):
            for key in endpoint:
                assert f"`{key}`" in section, f"endpoints[].{key} is not documented"
    for key in keys:
        assert f"`{key}`" in section, f"{key} is not documented in docs/cli.md"


def test_probe_containerd_shows_the_walk(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mtls_server: Any, alice: Leaf
) -> None:
    """A pull with a mirror that is down: the mirror's attempt, then the server's, each
    with its endpoint, in text and --json; the subject only for the URL's own endpoint."""
    srv = mtls_server(reject="tls", tls_version="1.3")
    dead = f"https://localhost:{free_port()}"
    folder = tmp_path / f"localhost_{srv.port}_"
    write(folder / "a.pem", alice.cert_pem + alice.key_pem())
    write(folder / "ca.crt", srv.server_ca.cert_pem)
    write(
        folder / "hosts.toml",
        f'server = "{srv.url}"\nca = "ca.crt"\nclient = ["a.pem"]\n'
        f'[host."{dead}"]\ncapabilities = ["pull"]\nca = "ca.crt"\nclient = ["a.pem"]\n'.encode(),
    )
    blob = f"{srv.url}/v2/team/app/blobs/sha256:{'a' * 64}"
    argv = ("probe", blob, "--runtime", "containerd", "--root", str(tmp_path))
    code, data = report(capsys, *argv)
    assert code == 0
    assert [(a["endpoint"], a["candidate"], a["outcome"]) for a in data["attempts"]] == [
        (dead + "/v2", "a.pem", "error"),
        (srv.url + "/v2", "a.pem", "accepted"),
    ]
    assert [a["subject"] for a in data["attempts"]] == [None, "CN=alice"]
    assert data["winner"] == 2
    assert f"at {srv.url}/v2" in data["transport"]
    code, out, _ = run(capsys, *argv)
    assert code == 0
    assert "endpoint" in out
    lines = out.splitlines()
    assert any(dead + "/v2" in line and "error" in line for line in lines)
    assert any(srv.url + "/v2" in line and "accepted" in line for line in lines)
    # The /v2/ ping is a push: the server only, the mirror not tried.
    _, ping = report(capsys, "probe", srv.url, "--runtime", "containerd", "--root", str(tmp_path))
    assert [a["endpoint"] for a in ping["attempts"]] == [srv.url + "/v2"]


def test_probe_without_routing_has_no_endpoint_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mtls_server: Any, alice: Leaf
) -> None:
    srv = mtls_server(reject="tls")
    CertsD(tmp_path).host(srv.host).ca(srv.server_ca).pair("alice", alice)
    code, out, _ = run(capsys, "probe", srv.url, "--root", str(tmp_path))
    assert code == 0
    assert "endpoint" not in out.splitlines()[2]
    _, data = report(capsys, "probe", srv.url, "--root", str(tmp_path))
    assert [a["endpoint"] for a in data["attempts"]] == [None]
