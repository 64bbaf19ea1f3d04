"""Loader fuzzing: random host directories against an independent oracle of Docker's rules.

The oracle below is written from moby's ``loadTLSConfig`` (its rules, as the README lists
them), not from the library: it walks the names a generated directory holds in byte order, takes the
extension from the last dot (case-sensitive), and predicts what Docker does with each file
from what the test *put* there (a model of every entry: a file of known content, a symlink,
a dangling link, a folder, a link loop). ``load_dir`` must agree with it on every example:

* the same error type, with Docker's exact message for ``MissingKeyError`` and
  ``MissingCertificateError`` and the right file named for the others;
* or the same ``.crt`` files and pairs, in the same order (plus the number of usable CA
  certificates and each pair's leaf fingerprint);
* and never any exception that is not a ``CertsDirError``.

The PEM material is generated once per module; each example writes its directory into a
fresh temporary folder. ``DOCKERCERTS_SOAK=1`` runs ten times as many examples.
"""

from __future__ import annotations

import datetime
import functools
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dockercerts import (
    CertsDirError,
    CertsDirReadError,
    KeyPairError,
    MissingCertificateError,
    MissingKeyError,
    load_dir,
)
from dockercerts.testing import CA

pytestmark = pytest.mark.reliability

SOAK = os.environ.get("DOCKERCERTS_SOAK", "") not in ("", "0")
EXAMPLES = 20_000 if SOAK else 2_000

# tmpfs when there is one: creating and removing ~2,000 small trees on a disk costs seconds.
FAST_TMP = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None

# kubelet's names for a secret volume's payload; generated names never collide with them.
K8S_DATA = "..data"
K8S_PAYLOAD = "..2024_01_01_00_00_00.0000000001"


# --------------------------------------------------------------------------- the material


@dataclass(frozen=True)
class Content:
    """A file body and what Docker's Go code would find in it.

    ``cert_id``: the identity of the first certificate ``tls.X509KeyPair`` would use as the
    leaf (``None``: no usable PEM certificate, or the leaf does not parse). ``key_id``: the
    identity of the first ``* PRIVATE KEY`` block (``None``: none; ``"encrypted"``: one Go
    cannot read). ``ca_certs``: how many certificates ``AppendCertsFromPEM`` would add.
    """

    data: bytes
    cert_id: Optional[str]
    key_id: Optional[str]
    ca_certs: int


def rsa_leaf(issuer: CA) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    """An RSA client certificate. 1024 bits: cryptography validates every RSA key it loads,
    which costs ~7 ms at 1024 bits and ~40 ms at 2048, per load."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    signer = serialization.load_pem_private_key(issuer.key_pem(), password=None)
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "b")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(signer, hashes.SHA256())
    )
    return cert, key


def pkcs8(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@functools.lru_cache(maxsize=1)
def pool() -> tuple[dict[str, Content], dict[str, str]]:
    """Every content label, and the SHA-256 fingerprint of each identity's leaf."""
    root = CA(name="fuzz root")
    issuing = root.intermediate(name="fuzz issuing")
    a = root.issue_client("a")  # P-256
    b_cert, b_key = rsa_leaf(root)
    c = issuing.issue_client("c", key_type="ed25519")  # cert_pem = leaf + intermediate
    rsa_traditional = b_key.private_bytes(  # "BEGIN RSA PRIVATE KEY", as old openssl writes
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    ec_sec1 = a._key.private_bytes(  # "BEGIN EC PRIVATE KEY"
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    ec_params = b"-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n"
    der_key = a._key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    bad_base64 = b"-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n-----END CERTIFICATE-----\n"
    bad_der = b"-----BEGIN CERTIFICATE-----\nAAECAwQFBgcICQ==\n-----END CERTIFICATE-----\n"
    garbage = bytes(range(256)) * 3
    contents = {
        "cert_a": Content(a.cert_pem, "a", None, 1),
        "key_a": Content(a.key_pem(), None, "a", 0),
        "key_a_sec1": Content(ec_sec1, None, "a", 0),
        "key_a_after_params": Content(ec_params + ec_sec1, None, "a", 0),
        "pair_a": Content(a.cert_pem + a.key_pem(), "a", "a", 1),
        "key_then_cert_a": Content(a.key_pem() + a.cert_pem, "a", "a", 1),
        "text_around_cert_a": Content(b"subject=CN=a\n" + a.cert_pem + b"trailer\n", "a", None, 1),
        "crlf_cert_a": Content(a.cert_pem.replace(b"\n", b"\r\n"), "a", None, 1),
        "bad_base64_then_cert_a": Content(bad_base64 + a.cert_pem, "a", None, 1),
        "bad_der_then_cert_a": Content(bad_der + a.cert_pem, None, None, 1),
        "encrypted_key_a": Content(a.key_pem(b"fuzz-password"), None, "encrypted", 0),
        "cert_b": Content(b_cert.public_bytes(serialization.Encoding.PEM), "b", None, 1),
        "key_b_rsa_traditional": Content(rsa_traditional, None, "b", 0),
        "key_b": Content(pkcs8(b_key), None, "b", 0),
        "chain_c": Content(c.cert_pem, "c", None, 2),
        "key_c": Content(c.key_pem(), None, "c", 0),
        "ca_root": Content(root.cert_pem, "root", None, 1),
        "ca_root_key": Content(root.key_pem(), None, "root", 0),
        "bundle": Content(root.cert_pem + issuing.cert_pem, "root", None, 2),
        "der_cert": Content(a.der, None, None, 0),
        "der_key": Content(der_key, None, None, 0),
        "garbage": Content(garbage, None, None, 0),
        "empty": Content(b"", None, None, 0),
        "truncated_cert_a": Content(a.cert_pem[: len(a.cert_pem) // 2], None, None, 0),
    }
    fingerprints = {"a": a.fingerprint, "b": b_cert.fingerprint(hashes.SHA256()).hex()}
    fingerprints["c"] = c.fingerprint
    fingerprints["root"] = root.fingerprint
    return contents, fingerprints


# --------------------------------------------------------------------------- the model

# An entry of the host directory, as the test creates it:
#   ("file", label)      a regular file with pool content
#   ("link", label)      an absolute symlink to a file with that content outside the folder
#   ("k8s", label)       name -> ..data/name, the file in ..data's payload folder
#   ("sibling", name)    a relative symlink to another name of the folder (may not exist)
#   ("dangling",)        a symlink to a path that does not exist
#   ("self",)            a symlink to itself (ELOOP)
#   ("dir",)             a folder (with a file inside)
#   ("dirlink",)         a symlink to a folder
Entry = tuple[str, ...]


LABELS = (
    *("cert_a", "key_a", "key_a_sec1", "key_a_after_params", "pair_a", "key_then_cert_a"),
    *("text_around_cert_a", "crlf_cert_a", "bad_base64_then_cert_a", "bad_der_then_cert_a"),
    *("encrypted_key_a", "cert_b", "key_b_rsa_traditional", "key_b", "chain_c", "key_c"),
    *("ca_root", "ca_root_key", "bundle", "der_cert", "der_key", "garbage", "empty"),
    "truncated_cert_a",
)
CERTS_FOR = {
    "a": ("cert_a", "pair_a", "crlf_cert_a", "text_around_cert_a", "bad_base64_then_cert_a"),
    "b": ("cert_b",),
    "c": ("chain_c",),
    "root": ("ca_root", "bundle"),
}
KEYS_FOR = {
    "a": ("key_a", "key_a_sec1", "key_a_after_params", "pair_a", "key_then_cert_a"),
    "b": ("key_b", "key_b_rsa_traditional"),
    "c": ("key_c",),
    "root": ("ca_root_key",),
}

# Strategies are built once: building them inside a draw costs more than the example.
STEMS = st.one_of(
    st.sampled_from(
        [
            *("a", "A", "b", "B", "client", "Client", "ca", "", ".", "x.y", "é", "É", "日本"),
            *("a.crt", "-", "_", "a b", "z" * 40, ".hidden", "tls", "ü.cert", "ca.key"),
        ]
    ),
    st.text(alphabet="aAbB.-_ é日", max_size=6),
)
EXTENSIONS = st.sampled_from(
    [".crt", ".cert", ".key"] * 4
    + [".CRT", ".Cert", ".KEY", ".pem", ".crt.bak", "", ".key~", ".cer", ".der", ".crt "]
)
HOST_KINDS = st.sampled_from(["dir"] * 16 + ["dirlink", "missing", "file", "dangling"])
ENTRY_KINDS = st.sampled_from(
    ["file"] * 6 + ["link"] * 2 + ["k8s"] * 2 + ["sibling", "dangling", "self", "dir", "dirlink"]
)
CONTENT = st.sampled_from(LABELS)
IDENTITIES = st.sampled_from(["a", "a", "b", "c", "root"])
PAIR_CERT = {identity: st.sampled_from(labels) for identity, labels in CERTS_FOR.items()}
PAIR_KEY = {identity: st.sampled_from(labels) for identity, labels in KEYS_FOR.items()}
PAIR_HOW = st.sampled_from(["file", "file", "link", "k8s"])
GROUPS = st.lists(st.booleans(), max_size=7)


def valid_name(name: str) -> bool:
    return (
        bool(name)
        and name not in (".", "..", K8S_DATA, K8S_PAYLOAD)
        and "/" not in name
        and "\0" not in name
        and len(name.encode("utf-8")) <= 255
    )


@st.composite
def host_directories(draw: st.DrawFn) -> tuple[str, dict[str, Entry]]:
    """``(host_kind, {name: entry})``: how the host directory itself exists, and its content."""
    host_kind = draw(HOST_KINDS)
    entries: dict[str, Entry] = {}
    for is_pair in draw(GROUPS):
        stem = draw(STEMS)
        if is_pair:
            # A .cert/.key pair, usually matching, so that whole folders load too.
            identity = draw(IDENTITIES)
            cert_label, key_label = draw(PAIR_CERT[identity]), draw(PAIR_KEY[identity])
            how = draw(PAIR_HOW)
            for name, label in ((stem + ".cert", cert_label), (stem + ".key", key_label)):
                if valid_name(name):
                    entries.setdefault(name, (how, label))
            continue
        name = stem + draw(EXTENSIONS)
        if not valid_name(name) or name in entries:
            continue
        kind = draw(ENTRY_KINDS)
        if kind in ("file", "link", "k8s"):
            entries[name] = (kind, draw(CONTENT))
        elif kind == "sibling":
            # Another name of the folder (maybe not created yet, maybe never).
            names = [*entries, "absent.crt", name + ".crt"]
            entries[name] = (kind, names[draw(st.integers(0, len(names) - 1))])
        else:
            entries[name] = (kind,)
    return host_kind, entries


# --------------------------------------------------------------------------- building it


def build(base: Path, host_kind: str, entries: dict[str, Entry]) -> tuple[Path, dict[str, Entry]]:
    """Create the folder under ``base``; return the path to load and the full listing model."""
    contents = pool()[0]
    base.mkdir(parents=True, exist_ok=True)
    store = base / "store"
    store.mkdir()
    (store / "a-folder").mkdir()
    real = base / "real"
    path = base / "certs.d" / "reg:5000"
    path.parent.mkdir()
    if host_kind == "missing":
        return path, {}
    if host_kind == "file":
        path.write_bytes(b"not a folder")
        return path, {}
    if host_kind == "dangling":
        os.symlink(base / "nowhere", path)
        return path, {}
    if host_kind == "dirlink":
        real.mkdir()
        os.symlink(real, path)
        target = real
    else:
        path.mkdir()
        target = path
    listing = dict(entries)
    if any(entry[0] == "k8s" for entry in entries.values()):
        (target / K8S_PAYLOAD).mkdir()
        os.symlink(K8S_PAYLOAD, target / K8S_DATA)
        listing[K8S_DATA] = ("sibling", K8S_PAYLOAD)
        listing[K8S_PAYLOAD] = ("dir",)
    for name, entry in entries.items():
        where = target / name
        kind = entry[0]
        if kind == "file":
            where.write_bytes(contents[entry[1]].data)
        elif kind == "link":
            source = store / entry[1]
            if not source.exists():
                source.write_bytes(contents[entry[1]].data)
            os.symlink(source, where)
        elif kind == "k8s":
            (target / K8S_PAYLOAD / name).write_bytes(contents[entry[1]].data)
            os.symlink(f"{K8S_DATA}/{name}", where)
        elif kind == "sibling":
            os.symlink(entry[1], where)
        elif kind == "dangling":
            os.symlink(base / "gone" / name, where)
        elif kind == "self":
            os.symlink(name, where)
        elif kind == "dir":
            where.mkdir()
            (where / "inside.crt").write_bytes(contents["cert_a"].data)
        elif kind == "dirlink":
            os.symlink(store / "a-folder", where)
        else:  # pragma: no cover - the strategy makes no other kind
            raise AssertionError(kind)
    return path, listing


# --------------------------------------------------------------------------- the oracle


@dataclass(frozen=True)
class Loaded:
    exists: bool
    ca_files: tuple[str, ...]
    ca_certs: int
    pairs: tuple[tuple[str, str], ...]  # (name, identity)


@dataclass(frozen=True)
class Fails:
    kind: type[CertsDirError]
    message: Optional[str] = None  # exact str() (Docker's two messages)
    path: Optional[str] = None  # CertsDirReadError: the file that cannot be read
    pair: Optional[tuple[str, str]] = None  # KeyPairError: (cert, key)


Outcome = Union[Loaded, Fails]


def resolve(listing: dict[str, Entry], name: str) -> Optional[str]:
    """The content label reading ``name`` yields, or ``None`` when reading it fails."""
    for _hop in range(len(listing) + 2):
        entry = listing.get(name)
        if entry is None or entry[0] in ("dangling", "self", "dir", "dirlink"):
            return None
        if entry[0] != "sibling":
            return entry[1]
        name = entry[1]
        if name == K8S_PAYLOAD:
            return None
    return None  # a cycle of siblings: ELOOP


def docker_extension(name: str) -> str:
    """Go's filepath.Ext: the suffix from the last dot, case kept; '' without a dot."""
    dot = name.rfind(".")
    return "" if dot < 0 else name[dot:]


def predict(host_kind: str, listing: dict[str, Entry]) -> Outcome:
    """What moby's loop does with this folder, step by step."""
    contents = pool()[0]
    if host_kind in ("missing", "dangling"):
        return Loaded(False, (), 0, ())  # ENOENT: no error, system trust only
    if host_kind == "file":
        return Fails(CertsDirReadError, path="")  # ENOTDIR: an error naming the folder
    ca_files: list[str] = []
    ca_certs = 0
    pairs: list[tuple[str, str]] = []
    for name in sorted(listing, key=lambda n: n.encode("utf-8")):  # Go sorts by bytes
        ext = docker_extension(name)
        if ext == ".crt":
            label = resolve(listing, name)
            if label is None:
                return Fails(CertsDirReadError, path=name)
            ca_files.append(name)  # counts even when nothing in it parses
            ca_certs += contents[label].ca_certs
        elif ext == ".cert":
            stem = name[: -len(".cert")]
            key = stem + ".key"
            if key not in listing:
                return Fails(
                    MissingKeyError,
                    message=f"missing key {key} for client certificate {name}. "
                    "CA certificates must use the extension .crt",
                )
            cert_label = resolve(listing, name)
            if cert_label is None:
                return Fails(CertsDirReadError, path=name)
            key_label = resolve(listing, key)  # LoadX509KeyPair reads both, then parses
            if key_label is None:
                return Fails(CertsDirReadError, path=key)
            cert_id = contents[cert_label].cert_id
            key_id = contents[key_label].key_id
            if cert_id is None or key_id is None or key_id != cert_id:
                return Fails(KeyPairError, pair=(name, key))
            pairs.append((stem, cert_id))
        elif ext == ".key":
            stem = name[: -len(".key")]
            cert = stem + ".cert"
            if cert not in listing:
                return Fails(
                    MissingCertificateError,
                    message=f"missing client certificate {cert} for key {name}",
                )
    return Loaded(True, tuple(ca_files), ca_certs, tuple(pairs))


# --------------------------------------------------------------------------- the check


def check(base: Path, host_kind: str, entries: dict[str, Entry]) -> str:
    """Build one folder, load it, compare with the oracle; return the outcome's name."""
    path, listing = build(base, host_kind, entries)
    expected = predict(host_kind, listing)
    fingerprints = pool()[1]
    error: Optional[CertsDirError] = None
    try:
        certs = load_dir(path)
    except CertsDirError as exc:  # any other exception type escapes and fails the example
        error = exc
    if error is not None:
        assert isinstance(expected, Fails), f"unexpected {error!r}; oracle says {expected}"
        assert type(error) is expected.kind, f"{error!r}; oracle says {expected}"
        if expected.message is not None:
            assert str(error) == expected.message
        if expected.path is not None:
            assert isinstance(error, CertsDirReadError)
            assert error.path == (path / expected.path if expected.path else path), error
        if expected.pair is not None:
            assert isinstance(error, KeyPairError)
            assert (error.cert, error.key) == (path / expected.pair[0], path / expected.pair[1])
        return expected.kind.__name__
    assert isinstance(expected, Loaded), f"loaded {certs!r}; oracle says {expected}"
    assert certs.exists is expected.exists
    assert certs.directory == path
    assert [p.name for p in certs.ca_files] == list(expected.ca_files)
    assert all(p.parent == path for p in certs.ca_files)
    assert len(certs.ca_certificates) == expected.ca_certs
    assert [(p.name, p.fingerprint) for p in certs.pairs] == [
        (name, fingerprints[identity]) for name, identity in expected.pairs
    ]
    assert [(p.cert, p.key) for p in certs.pairs] == [
        (path / f"{name}.cert", path / f"{name}.key") for name, _ in expected.pairs
    ]
    return "loaded" if expected.exists else "missing"


def test_loader_agrees_with_an_independent_oracle() -> None:
    seen: dict[str, int] = {}

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
            HealthCheck.large_base_example,
        ],
    )
    @given(host_directories())
    def examples(case: tuple[str, dict[str, Entry]]) -> None:
        host_kind, entries = case
        with tempfile.TemporaryDirectory(prefix="dockercerts-fuzz-", dir=FAST_TMP) as tmp:
            outcome = check(Path(tmp), host_kind, entries)
        seen[outcome] = seen.get(outcome, 0) + 1

    # The loader logs a warning for every odd file; thousands of captured records would cost
    # more than the examples themselves. The fuzz is about outcomes, not logs.
    logger = logging.getLogger("dockercerts")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        examples()
    finally:
        logger.setLevel(level)
    total = sum(seen.values())
    print(f"loader fuzz: {total} examples, outcomes {dict(sorted(seen.items()))}")
    assert total >= EXAMPLES
    # The strategy must reach every branch of the oracle, not only the first error.
    for outcome in ("loaded", "missing", "MissingKeyError", "MissingCertificateError"):
        assert seen.get(outcome, 0) > 0, seen
    for outcome in ("KeyPairError", "CertsDirReadError"):
        assert seen.get(outcome, 0) > 0, seen
    assert seen["loaded"] >= total // 20, seen


# --------------------------------------------------------------------------- fixed cases


def test_pool_labels_and_identities() -> None:
    contents, _ = pool()
    assert set(LABELS) == set(contents)
    for identity, labels in CERTS_FOR.items():
        assert all(contents[label].cert_id == identity for label in labels)
    for identity, labels in KEYS_FOR.items():
        assert all(contents[label].key_id == identity for label in labels)


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        # The oracle itself, on cases written out by hand from moby's rules.
        ({".crt": ("file", "garbage")}, Loaded(True, (".crt",), 0, ())),
        ({"ca.CRT": ("file", "cert_a"), "x.crt.bak": ("dangling",)}, Loaded(True, (), 0, ())),
        (
            {"B.cert": ("file", "cert_b"), "B.key": ("file", "key_b"), "a.crt": ("dir",)},
            Fails(CertsDirReadError, path="a.crt"),
        ),
        (
            {"a.cert": ("file", "cert_a"), "a.key": ("dangling",), "A.key": ("file", "key_a")},
            Fails(
                MissingCertificateError, message="missing client certificate A.cert for key A.key"
            ),
        ),
        (
            {"x.cert": ("dangling",), "y.crt": ("self",)},
            Fails(
                MissingKeyError,
                message="missing key x.key for client certificate x.cert. "
                "CA certificates must use the extension .crt",
            ),
        ),
        (
            {"c.cert": ("file", "chain_c"), "c.key": ("k8s", "key_c"), "r.crt": ("file", "bundle")},
            Loaded(True, ("r.crt",), 2, (("c", "c"),)),
        ),
        (
            {"a.cert": ("file", "cert_a"), "a.key": ("file", "encrypted_key_a")},
            Fails(KeyPairError, pair=("a.cert", "a.key")),
        ),
    ],
    ids=[
        "dot-crt-alone-counts",
        "case-and-last-dot",
        "byte-order-upper-first",
        "orphan-key-sorts-first",
        "missing-key-before-reading",
        "k8s-chain-bundle",
        "encrypted-key",
    ],
)
def test_oracle_and_loader_on_hand_written_cases(
    tmp_path: Path, entries: dict[str, Entry], expected: Outcome
) -> None:
    _path, listing = build(tmp_path, "dir", entries)
    assert predict("dir", listing) == expected
    check(tmp_path / "again", "dir", entries)
