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
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import ssl
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Callable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import dockercerts
from dockercerts.testing import CA

NOW = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=1)


def _ca(key: ec.EllipticCurvePrivateKey, name: str) -> bytes:
    """A self-signed CA certificate named ``name``, DER."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW)
        .not_valid_after(NOW + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


def best(call: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
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


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,2000,4000,10000")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    sizes = [int(n) for n in args.sizes.split(",")]
    key = ec.generate_private_key(ec.SECP256R1())
    ders = [_ca(key, f"Bench CA {i}") for i in range(max(sizes))]
    leaf_key = ec.generate_private_key(ec.SECP256R1())
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
            cadata = b"".join(ders[:n])

            def eager(cadata: bytes = cadata) -> None:
                ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=cadata)

            folder = base / f"n{n}"
            folder.mkdir()
            pem = "".join(ssl.DER_cert_to_PEM_cert(d) for d in ders[:n])
            (folder / "ca.crt").write_text(pem)
            for p in range(args.pairs):
                client_ca.issue_client(f"c{p}").write(folder / f"c{p}.cert", folder / f"c{p}.key")
            issuer = n // 2
            (base / f"server{n}.key").write_bytes(
                leaf_key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
            # The server's leaf: issued (signed) by CA number n/2, with a key of its own.
            leaf = (
                x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
                .issuer_name(
                    x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Bench CA {issuer}")])
                )
                .public_key(leaf_key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(NOW)
                .not_valid_after(NOW + datetime.timedelta(days=30))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
                .sign(key, hashes.SHA256())
            )
            (base / f"server{n}.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
            server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            server.load_cert_chain(base / f"server{n}.pem", base / f"server{n}.key")

            t_eager = best(eager, args.repeat) if n <= 10_000 else float("nan")
            t_load = best(lambda f=folder: dockercerts.load_dir(f), args.repeat)
            firsts, others, verifies = [], [], []
            for _ in range(args.repeat):
                certs = dockercerts.load_dir(folder)
                candidates = certs.candidates()
                start = time.perf_counter()
                _ = candidates[0].context
                firsts.append(time.perf_counter() - start)
                for c in candidates[1:]:
                    start = time.perf_counter()
                    _ = c.context
                    others.append(time.perf_counter() - start)
                start = time.perf_counter()
                handshake(candidates[-1].context, server)
                verifies.append(time.perf_counter() - start)
            print(
                f"| {n:,} | {t_eager * 1000:.0f} ms | {t_load * 1000:.0f} ms | "
                f"{min(firsts) * 1000:.0f} ms | {min(others) * 1000:.1f} ms | "
                f"{min(verifies) * 1000:.1f} ms |"
            )
        dup = base / "dup"
        dup.mkdir()
        (dup / "ca.crt").write_text(ssl.DER_cert_to_PEM_cert(ders[0]) * 10_000)
        t_dup = best(lambda: dockercerts.load_dir(dup).candidates()[0].context, args.repeat)
        print(f"\n10,000 copies of one CA: load_dir + context {t_dup * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
