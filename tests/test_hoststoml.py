"""hosts.toml parsed as containerd parses it.

Test data: the examples of containerd's ``docs/hosts.md``, written out by hand, and one file
per field form and per error, each checked against ``parseHostsFile`` / ``parseHostConfig``
/ ``getSortedHosts`` in ``core/remotes/docker/config/hosts.go`` (see docs/runtimes.md).
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dockercerts._gowords import go_value, parse_duration
from dockercerts.errors import HostsTomlError
from dockercerts.hoststoml import (
    CAPABILITIES,
    ClientEntry,
    Endpoint,
    endpoints,
    host_order,
    parse_hosts_toml,
    table_headers,
)

FOLDER = "/etc/containerd/certs.d/docker.io"
ALL = CAPABILITIES


def parse(text: str, folder: str = FOLDER, **kw: object) -> list[Endpoint]:
    return list(parse_hosts_toml(text, folder, **kw).endpoints)  # type: ignore[arg-type]


def error(text: str, folder: str = FOLDER) -> str:
    with pytest.raises(HostsTomlError) as caught:
        parse_hosts_toml(text, folder)
    assert caught.value.path == Path(folder) / "hosts.toml"
    prefix = f"failed to decode {folder}/hosts.toml: "
    assert str(caught.value).startswith(prefix)
    return caught.value.reason


# --- docs/hosts.md, example by example ----------------------------------------------------------

SIMPLE_DOCKER = """\
server = "https://docker.io"

[host."https://registry-1.docker.io"]
  capabilities = ["pull", "resolve"]
"""

LOCAL_MIRROR = """\
server = "https://registry-1.docker.io"    # Exclude this to not use upstream

[host."https://public-mirror.example.com"]
  capabilities = ["pull"]                  # Requires less trust, won't resolve tag to digest
[host."https://docker-mirror.internal"]
  capabilities = ["pull", "resolve"]
  ca = "docker-mirror.crt"                 # Or absolute path /etc/containerd/certs.d/...
"""

DEFAULT_MIRROR = """\
[host."https://registry.example.com"]
  capabilities = ["pull", "resolve"]
"""

BYPASS_TLS = """\
server = "https://registry-1.docker.io"

[host."http://192.168.31.250:5000"]
  capabilities = ["pull", "resolve", "push"]
  skip_verify = true
"""

HOST_FIELDS = """\
[host."https://mirror.registry"]
  capabilities = ["pull"]
  ca = "/etc/certs/mirror.pem"
  skip_verify = false
  [host."https://mirror.registry".header]
    x-custom-2 = ["value1", "value2"]

[host."https://mirror-bak.registry/us"]
  capabilities = ["pull"]
  skip_verify = true

[host."http://mirror.registry"]
  capabilities = ["pull"]

[host."https://test-1.registry"]
  capabilities = ["pull", "resolve", "push"]
  ca = ["/etc/certs/test-1-ca.pem", "/etc/certs/special.pem"]
  client = [["/etc/certs/client.cert", "/etc/certs/client.key"],["/etc/certs/client.pem", ""]]

[host."https://test-2.registry"]
  client = "/etc/certs/client.pem"

[host."https://test-3.registry"]
  client = ["/etc/certs/client-1.pem", "/etc/certs/client-2.pem"]

[host."https://non-compliant-mirror.registry/v2/upstream"]
  capabilities = ["pull"]
  override_path = true
"""


def test_docs_simple_default_host_config_for_docker() -> None:
    found = parse(SIMPLE_DOCKER)
    assert [(e.url, e.capabilities, e.is_server) for e in found] == [
        ("https://registry-1.docker.io/v2", ("pull", "resolve"), False),
        ("https://docker.io/v2", ALL, True),
    ]


def test_docs_local_mirror_relative_ca_joined_to_the_folder() -> None:
    found = parse(LOCAL_MIRROR)
    assert [e.url for e in found] == [
        "https://public-mirror.example.com/v2",
        "https://docker-mirror.internal/v2",
        "https://registry-1.docker.io/v2",
    ]
    assert found[0].capabilities == ("pull",)
    assert found[0].ca is None
    assert found[1].ca == (Path(FOLDER) / "docker-mirror.crt",)
    assert found[1].explicit_tls
    assert not found[0].explicit_tls


def test_docs_default_mirror_server_filled_in_for_the_registry() -> None:
    hosts = parse_hosts_toml(DEFAULT_MIRROR, "/etc/containerd/certs.d/_default")
    assert hosts.server is None
    server = hosts.endpoints[-1]
    assert server.host == ""
    assert server.is_server
    filled = endpoints(hosts.endpoints, "reg.example:5000")
    assert [e.url for e in filled] == [
        "https://registry.example.com/v2",
        "https://reg.example:5000/v2",
    ]
    assert filled[-1].implicit
    assert filled[-1].capabilities == ALL


def test_docs_mirror_only_server() -> None:
    found = parse('server = "https://registry.example.com"', "/etc/containerd/certs.d/_default")
    assert [e.url for e in found] == ["https://registry.example.com/v2"]


def test_docs_bypass_tls_verification() -> None:
    mirror, server = parse(BYPASS_TLS)
    assert (mirror.scheme, mirror.host, mirror.path) == ("http", "192.168.31.250:5000", "/v2")
    assert mirror.skip_verify is True
    assert mirror.explicit_tls
    assert mirror.capabilities == ("pull", "resolve", "push")
    assert server.skip_verify is None


def test_docs_every_host_field() -> None:
    found = parse(HOST_FIELDS)
    urls = [e.url for e in found]
    assert urls == [
        "https://mirror.registry/v2",
        "https://mirror-bak.registry/us/v2",
        "http://mirror.registry/v2",
        "https://test-1.registry/v2",
        "https://test-2.registry/v2",
        "https://test-3.registry/v2",
        "https://non-compliant-mirror.registry/v2/upstream",
        # No server: filled in later (the registry itself).
        "://",
    ]
    mirror = found[0]
    assert mirror.ca == (Path("/etc/certs/mirror.pem"),)
    assert mirror.skip_verify is False
    assert mirror.explicit_tls
    assert mirror.header == (("x-custom-2", ("value1", "value2")),)
    assert found[1].skip_verify is True
    assert found[2].scheme == "http"
    assert not found[2].explicit_tls
    test1 = found[3]
    assert test1.ca == (Path("/etc/certs/test-1-ca.pem"), Path("/etc/certs/special.pem"))
    assert test1.client == (
        ClientEntry(Path("/etc/certs/client.cert"), Path("/etc/certs/client.key")),
        # The empty key joined to the folder, as containerd's makeAbsPath does.
        ClientEntry(Path("/etc/certs/client.pem"), Path(FOLDER)),
    )
    assert found[4].client == (ClientEntry(Path("/etc/certs/client.pem")),)
    assert found[5].client == (
        ClientEntry(Path("/etc/certs/client-1.pem")),
        ClientEntry(Path("/etc/certs/client-2.pem")),
    )
    assert found[6].override_path
    assert found[6].path == "/v2/upstream"


def test_docs_header_forms() -> None:
    text = """\
[header]
  x-custom-1 = "custom header"
  x-custom-1-2 = ["another custom header", "part b"]
"""
    (server,) = parse(text)
    assert server.header == (
        ("x-custom-1", ("custom header",)),
        ("x-custom-1-2", ("another custom header", "part b")),
    )


def test_docs_dial_timeout_and_skip_verify_default() -> None:
    (server,) = parse('dial_timeout = "1s"\nskip_verify = false\n')
    assert server.dial_timeout == 1.0
    assert server.skip_verify is False


def test_docs_recursion_example_is_two_tables() -> None:
    # "Recursion is not supported": indentation means nothing in TOML, so these are two
    # sibling hosts, both used.
    text = """\
[host."http://mirror.registry"]
  capabilities = ["pull"]
  [host."http://double-mirror.registry"]
    capabilities = ["pull"]
"""
    assert [e.host for e in parse(text)][:2] == ["mirror.registry", "double-mirror.registry"]


# --- field forms ---------------------------------------------------------------------------------


def test_top_level_tls_applies_to_the_server_only() -> None:
    text = """\
server = "https://reg.example"
ca = "ca.crt"
client = "client.pem"
skip_verify = true
capabilities = ["pull"]
[host."https://mirror.example"]
"""
    mirror, server = parse(text, "/d")
    assert (mirror.ca, mirror.client, mirror.skip_verify, mirror.capabilities) == (
        None,
        None,
        None,
        ALL,
    )
    assert server.ca == (Path("/d/ca.crt"),)
    assert server.client == (ClientEntry(Path("/d/client.pem")),)
    assert server.skip_verify is True
    assert server.capabilities == ("pull",)


def test_server_without_scheme_gets_https_and_path_rules() -> None:
    assert parse('server = "reg.example:5000"')[0].url == "https://reg.example:5000/v2"
    assert parse('server = "https://reg.example/v2"')[0].path == "/v2"
    assert parse('server = "https://reg.example/a//b/"')[0].path == "/a/b/v2"
    assert parse('server = "https://reg.example/x"\noverride_path = true')[0].path == "/x"
    assert parse('server = "https://reg.example"\noverride_path = true')[0].path == ""
    # Go lower-cases the scheme; containerd only tests for the prefix "http".
    assert parse('server = "HTTP://reg.example"')[0].host == "HTTP:"


def test_host_key_without_http_prefix_gets_https() -> None:
    (mirror, _server) = parse('[host."mirror.example:8443"]\n')
    assert mirror.url == "https://mirror.example:8443/v2"


def test_paths_relative_absolute_cleaned_and_windows() -> None:
    (server,) = parse('ca = ["./a/../ca.crt", "/abs/x/../ca.crt", "sub/c.crt"]', "/d/reg")
    assert server.ca == (Path("/d/reg/ca.crt"), Path("/abs/x/../ca.crt"), Path("/d/reg/sub/c.crt"))
    (windows,) = parse(
        'ca = ["C:\\\\certs\\\\ca.crt", "ca.crt"]', "C:\\certs.d\\reg5000", platform="windows"
    )
    assert windows.ca is not None
    assert [str(p) for p in windows.ca] == ["C:\\certs\\ca.crt", "C:\\certs.d\\reg5000\\ca.crt"]


def test_client_forms_and_empty_lists() -> None:
    text = 'client = [["c.cert", "c.key"], ["both.pem", ""], "one.pem"]'
    (server,) = parse(text, "/d")
    assert server.client == (
        ClientEntry(Path("/d/c.cert"), Path("/d/c.key")),
        ClientEntry(Path("/d/both.pem"), Path("/d")),
        ClientEntry(Path("/d/one.pem"), None),
    )
    # An empty client list appends nothing: no client setting at all (no explicit TLS);
    # an empty ca list is a setting (system roots, nothing added).
    (empty,) = parse("client = []\n")
    assert empty.client is None
    assert not empty.explicit_tls
    (empty_ca,) = parse("ca = []\n")
    assert empty_ca.ca == ()
    assert empty_ca.explicit_tls


def test_capabilities_any_case_deduplicated_in_containerd_order() -> None:
    (server,) = parse('capabilities = ["PUSH", "pull", "Pull", "referrers"]')
    assert server.capabilities == ("pull", "push", "referrers")
    (empty,) = parse("capabilities = []")
    assert empty.capabilities == ALL


def test_field_names_match_in_any_case_as_go_toml_does() -> None:
    (server,) = parse('SERVER = "https://reg.example"\nSkip_Verify = true\nCA = "ca.crt"', "/d")
    assert server.host == "reg.example"
    assert server.skip_verify is True
    assert server.ca == (Path("/d/ca.crt"),)


def test_unknown_keys_are_listed_as_ignored() -> None:
    hosts = parse_hosts_toml(
        'mirror = "https://x"\n[host."https://m"]\n  skipverify = true\n  server = "y"\n', "/d"
    )
    assert [(i.key, "ignores" in i.reason) for i in hosts.ignored] == [
        ("mirror", True),
        ("host.https://m.skipverify", True),
        ("host.https://m.server", True),
    ]
    assert hosts.endpoints[0].skip_verify is None


def test_hosts_from_dotted_keys_or_capitalised_host_are_never_used() -> None:
    text = """\
[host]
"https://dotted.example".capabilities = ["pull"]
[Host."https://capital.example"]
[host."https://real.example"]
"""
    hosts = parse_hosts_toml(text, "/d")
    assert [e.host for e in hosts.hosts] == ["real.example"]
    assert {i.key for i in hosts.ignored} == {
        "host.https://dotted.example",
        "host.https://capital.example",
    }


def test_order_is_the_order_of_table_headers_with_containerds_repeat_quirk() -> None:
    text = """\
[host."https://b"]
[host."https://b".header]
  x = "1"
[host."https://a"]
[host."https://b".header2]
"""
    # getSortedHosts skips a header naming the same host as the one before it only.
    assert host_order(text) == ["https://b", "https://a", "https://b"]
    assert [e.host for e in parse(text)][:3] == ["b", "a", "b"]


def test_table_headers_ignore_brackets_inside_values_and_strings() -> None:
    text = """\
a = "[host.\\"x\\"]"
b = '''
[host."y"]
'''
c = [
  ["[host.z]", "x"], # [host."w"]
]
[ host . "v" ] # a comment [host."u"]
[[host."arr"]]
"""
    assert table_headers(text) == [(False, ("host", "v")), (True, ("host", "arr"))]


def test_empty_file_has_only_the_server() -> None:
    (server,) = parse("")
    assert server.is_server
    assert server.host == ""
    assert server.capabilities == ALL


# --- containerd's errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('capabilities = ["pull", "Fetch"]', "unknown capability Fetch"),
        ("ca = 5", 'invalid type 5 for "ca"'),
        ("ca = 1.5", 'invalid type 1.5 for "ca"'),
        ("ca = true", 'invalid type true for "ca"'),
        ("ca = {a = 1}", 'invalid type map[a:1] for "ca"'),
        ('ca = ["a", 2]', "unable to cast 2 to string"),
        ("client = 7", 'invalid type 7 for "client"'),
        ('client = [["a"]]', 'invalid pair [a] for "client"'),
        ('client = [["a", "b", "c"]]', 'invalid pair [a b c] for "client"'),
        ('client = [["a", 3]]', "unable to cast 3 to string"),
        ("client = [5]", 'invalid type int64 for "client"'),
        ("client = [{a = 1}]", 'invalid type map[string]interface {} for "client"'),
        ("[header]\nx = 5", 'invalid type 5 for header "x"'),
        ('[header]\nx = ["a", false]', "unable to cast false to string"),
        ('dial_timeout = "5"', 'time: missing unit in duration "5"'),
        ('dial_timeout = "5x"', 'time: unknown unit "x" in duration "5x"'),
        ('dial_timeout = "x"', 'time: invalid duration "x"'),
        (
            'server = "https://reg:abc"',
            'unable to parse server https://reg:abc: parse "https://reg:abc": '
            'invalid port ":abc" after host',
        ),
        (
            'server = "https://a b"',
            'unable to parse server https://a b: parse "https://a b": '
            'invalid character " " in host name',
        ),
        (
            '[host."https://m"]\ncapabilities = ["pull", "x"]',
            "unknown capability x",
        ),
    ],
)
def test_containerd_error_texts(text: str, reason: str) -> None:
    assert error(text) == reason


@pytest.mark.parametrize(
    ("text", "field", "kind"),
    [
        ('skip_verify = "yes"', "SkipVerify", "String"),
        ("override_path = 1", "OverridePath", "Integer"),
        ("dial_timeout = 5", "DialTimeout", "Integer"),
        ('capabilities = "pull"', "Capabilities", "String"),
        ('header = "x"', "Header", "String"),
        ("server = 5", "Server", "Integer"),
        ('host = "x"', "HostConfigs", "String"),
        ('[host."https://m"]\nskip_verify = 1', "SkipVerify", "Integer"),
    ],
)
def test_type_mismatches_worded_as_go_toml(text: str, field: str, kind: str) -> None:
    reason = error(text)
    assert reason.startswith(f"toml: cannot decode TOML {kind} into struct field ")
    assert f".{field} of type " in reason


def test_syntax_errors_and_bad_encoding_fail_the_file() -> None:
    assert error('server = "x').startswith("toml: ")
    assert error("[host.\n").startswith("toml: ")
    with pytest.raises(HostsTomlError, match="UTF-8"):
        parse_hosts_toml(b"server = '\xff'", "/d")
    with pytest.raises(HostsTomlError, match="cannot decode TOML Array"):
        parse_hosts_toml('[[host."https://m"]]\n', "/d")


def test_error_names_the_given_path() -> None:
    with pytest.raises(HostsTomlError) as caught:
        parse_hosts_toml("ca = 5", "/d", path="/elsewhere/hosts.toml")
    assert str(caught.value) == 'failed to decode /elsewhere/hosts.toml: invalid type 5 for "ca"'


# --- what containerd fills in --------------------------------------------------------------------


def test_endpoints_without_a_file() -> None:
    assert [e.url for e in endpoints((), "docker.io")] == ["https://registry-1.docker.io/v2"]
    assert [e.url for e in endpoints((), "reg:5000")] == ["https://reg:5000/v2"]
    # containerd 2.x: loopback registries on another port than 443 are http (TLS first).
    assert endpoints((), "localhost:5000")[0].scheme == "http"
    assert endpoints((), "127.0.0.1")[0].scheme == "https"
    assert endpoints((), "[::1]:5000")[0].scheme == "http"


def test_server_without_host_takes_the_registry_and_all_capabilities() -> None:
    found = parse('capabilities = ["pull"]\noverride_path = true\nca = "ca.crt"', "/d")
    (filled,) = endpoints(found, "reg:5000")
    assert filled.url == "https://reg:5000/v2"
    assert filled.capabilities == ALL
    assert filled.ca == (Path("/d/ca.crt"),)


# --- Go's words ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("1s", 10**9),
        ("1.5h", 5400 * 10**9),
        ("-2m3s", -123 * 10**9),
        ("+.5ms", 500_000),
        ("1\u00b5s", 1000),
        ("3ns", 3),
        ("0", 0),
    ],
)
def test_go_durations(text: str, ns: int) -> None:
    assert parse_duration(text) == ns


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", 'time: invalid duration ""'),
        ("-", 'time: invalid duration "-"'),
        (".s", 'time: invalid duration ".s"'),
        ("1", 'time: missing unit in duration "1"'),
        ("1d", 'time: unknown unit "d" in duration "1d"'),
        ("9999999999h", 'time: invalid duration "9999999999h"'),
    ],
)
def test_go_duration_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="^" + message.replace(".", r"\.") + "$"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1.0, "1"),
        (100000.0, "100000"),
        (1e6, "1e+06"),
        (123456789.0, "1.23456789e+08"),
        (0.0001, "0.0001"),
        (0.00001, "1e-05"),
        (-2.5, "-2.5"),
        ([], "[]"),
        ({"b": [1, "x"], "a": True}, "map[a:true b:[1 x]]"),
    ],
)
def test_go_value_formatting(value: object, text: str) -> None:
    assert go_value(value) == text


# --- Hypothesis: the order of [host] tables ----------------------------------------------------

NAMES = st.text(alphabet=string.ascii_letters + string.digits + ".-:/_ \"'[]#=", max_size=12)


@given(st.lists(st.tuples(NAMES, st.booleans()), max_size=8))
def test_host_order_follows_the_headers_as_written(headers: list[tuple[str, bool]]) -> None:
    """Any sequence of ``[host."X"]`` and ``[host."X".header]`` headers, with values that
    hold brackets and quotes: the order is one entry per header, unless the header before
    named the same host."""
    lines = []
    for name, sub in headers:
        quoted = json.dumps(name)  # a valid TOML basic string for these characters
        lines.append(f"[host.{quoted}{'.header' if sub else ''}]")
        lines.append(f'  x = ["[host.\\"y\\"]", {quoted}] # [host."z"]')
    text = "\n".join(lines) + "\n"
    try:
        import tomllib
    except ModuleNotFoundError:  # pragma: no cover - Python < 3.11
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return  # a table defined twice: containerd fails the file, no order to compare
    expected: list[str] = []
    last = None
    for name, _sub in headers:
        if name != last:
            expected.append(name)
        last = name
    assert host_order(text) == expected
