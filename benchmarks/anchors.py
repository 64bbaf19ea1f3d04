"""Large ``.crt`` bundles (issue 15): what a host folder with N anchors costs.

    python benchmarks/anchors.py [--sizes 1000,2000,4000,10000] [--pairs 3] [--repeat 3]

For each N, a host folder holds one ``ca.crt`` with N distinct self-signed CAs (one key,
many names: fast to make) and ``--pairs`` client pairs. Measured, best of ``--repeat``:

* ``eager``: one context with the N certificates given to ``load_verify_locations(cadata=)``,
  which is what every candidate paid before (OpenSSL 3.0 re-sorts its store per addition);
* ``load``: ``load_dir`` (reads and checks the files, parses each certificate once);
* ``first``: the first candidate's context (deduplication, the hashed folder, one context);
* ``others``: each further candidate's context (the shared trust is ready: one context);
* ``verify``: one TLS handshake (over memory) whose server is issued by one of the N CAs,
  on a fresh context: the lazy lookup of its issuer.

Also one row for a bundle of 10,000 copies of one CA (deduplicated to one anchor).

``nox -s bench`` runs the same measurements as its ``anchors`` section
(``benchmarks/sections/anchors.py``, which imports the helpers here), with the event-loop
stall of an async first request.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import gc
import os
import ssl
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Callable, Optional

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import dockercerts
from dockercerts import loader
from dockercerts.testing import CA

NOW = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=1)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _ca(key: ec.EllipticCurvePrivateKey, name: str) -> bytes:
    """A self-signed CA certificate named ``name``, DER."""
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW)
        .not_valid_after(NOW + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


class Bundle:
    """``count`` distinct self-signed CAs ("Bench CA <i>"), all with one key."""

    def __init__(self, count: int) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.ders = [_ca(self.key, f"Bench CA {i}") for i in range(count)]

    def pem(self, count: int) -> str:
        return "".join(ssl.DER_cert_to_PEM_cert(der) for der in self.ders[:count])

    def server(self, issuer: int, folder: Path) -> ssl.SSLContext:
        """A server context for ``localhost`` whose leaf CA number ``issuer`` signed."""
        leaf_key = ec.generate_private_key(ec.SECP256R1())
        leaf = (
            x509.CertificateBuilder()
            .subject_name(_name("localhost"))
            .issuer_name(_name(f"Bench CA {issuer}"))
            .public_key(leaf_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW)
            .not_valid_after(NOW + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
            .sign(self.key, hashes.SHA256())
        )
        cert_file, key_file = folder / f"server-{issuer}.pem", folder / f"server-{issuer}.key"
        cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            leaf_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.load_cert_chain(cert_file, key_file)
        return server


Clock = Callable[[], float]


def best(call: Callable[[], object], repeat: int, clock: Clock = time.perf_counter) -> float:
    times = []
    for _ in range(repeat):
        start = clock()
        call()
        times.append(clock() - start)
    return min(times)


def handshake(client_ctx: ssl.SSLContext, server_ctx: ssl.SSLContext) -> None:
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost")
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(20):
        try:
            client.do_handshake()
            return
        except ssl.SSLWantReadError:
            pass
        s_in.write(c_out.read())
        with contextlib.suppress(ssl.SSLWantReadError):
            server.do_handshake()
        c_in.write(s_out.read())
    raise AssertionError("no handshake")


def eager_context(cadata: str) -> ssl.SSLContext:
    """What every candidate paid before issue 15: the whole bundle through ``cadata=``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cadata=cadata)
    return context


def no_prepared_trust() -> None:
    """Make sure the next context prepares its trust: a reload of the same ``.crt`` files
    reuses a prepared trust while the previous load's contexts live."""
    gc.collect()
    if len(loader._PREPARED):
        raise RuntimeError("a prepared trust is still alive: the figure would not include it")


def costs(
    folder: Path, server: ssl.SSLContext, repeat: int, clock: Clock = time.perf_counter
) -> dict[str, float]:
    """Seconds, best of ``repeat``: ``load_dir``, the first candidate's context (its trust
    prepared), each other candidate's context, and a handshake on a fresh context.
    (``clock=time.thread_time`` counts CPU time: waiting for a busy machine's CPU does not.)"""
    rounds = [_one_load(folder, server, clock) for _ in range(repeat)]
    return {name: min(r[name] for r in rounds) for name in ("load", "first", "others", "verify")}


def _one_load(folder: Path, server: ssl.SSLContext, clock: Clock) -> dict[str, float]:
    # A function of its own: nothing of this load outlives it to be reused by the next.
    no_prepared_trust()
    start = clock()
    certs = dockercerts.load_dir(folder)
    load = clock() - start
    candidates = certs.candidates()
    start = clock()
    _ = candidates[0].context
    first = clock() - start
    others = []
    for candidate in candidates[1:]:
        start = clock()
        _ = candidate.context
        others.append(clock() - start)
    start = clock()
    handshake(candidates[-1].context, server)
    verify = clock() - start
    return {
        "load": load,
        "first": first,
        "others": min(others) if others else float("nan"),
        "verify": verify,
    }


def host_folder(base: Path, name: str, pem: str, client_ca: CA, pairs: int) -> Path:
    folder = base / name
    folder.mkdir()
    (folder / "ca.crt").write_text(pem)
    for p in range(pairs):
        client_ca.issue_client(f"c{p}").write(folder / f"c{p}.cert", folder / f"c{p}.key")
    return folder


def duplicated(
    bundle: Bundle, base: Path, copies: int, repeat: int, clock: Clock = time.perf_counter
) -> float:
    """Seconds for ``load_dir`` + a context of ``copies`` copies of one CA (one anchor)."""
    folder = base / "dup"
    folder.mkdir()
    (folder / "ca.crt").write_text(ssl.DER_cert_to_PEM_cert(bundle.ders[0]) * copies)

    times = []
    for _ in range(repeat):
        no_prepared_trust()
        start = clock()
        _ = dockercerts.load_dir(folder).candidates()[0].context
        times.append(clock() - start)
        del _
    return min(times)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,2000,4000,10000")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    sizes = [int(n) for n in args.sizes.split(",")]
    bundle = Bundle(max(sizes))
    client_ca = CA(name="bench client CA")
    print(f"# {sys.version.split()[0]}, {ssl.OPENSSL_VERSION}, {os.cpu_count()} CPUs")
    print(
        "| anchors | eager cadata, per context | load_dir | first context | each other "
        "context | verify (lazy lookup) |"
    )
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        for n in sizes:
            pem = bundle.pem(n)
            t_eager: Optional[float] = best(functools.partial(eager_context, pem), args.repeat)
            folder = host_folder(base, f"n{n}", pem, client_ca, args.pairs)
            # The server's leaf: issued (signed) by CA number n/2, with a key of its own.
            cost = costs(folder, bundle.server(n // 2, base), args.repeat)
            print(
                f"| {n:,} | {(t_eager or 0) * 1000:.0f} ms | {cost['load'] * 1000:.0f} ms | "
                f"{cost['first'] * 1000:.0f} ms | {cost['others'] * 1000:.1f} ms | "
                f"{cost['verify'] * 1000:.1f} ms |"
            )
        t_dup = duplicated(bundle, base, 10_000, args.repeat)
        print(f"\n10,000 copies of one CA: load_dir + context {t_dup * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
