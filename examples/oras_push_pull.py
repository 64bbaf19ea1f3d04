"""Push a small artifact with oras-py and pull it back, with Docker's certs.d client certificates.

    python examples/oras_push_pull.py localhost:5000 --root ./certs.d
    python examples/oras_push_pull.py localhost:5000 --repository team/hello --tag v2

oras-py talks to a registry through a ``requests.Session`` (``client.session``) and has no
client-certificate option of its own; mounting ``dockercerts.requests.Adapter`` on that
session is all it takes. Every pair in ``<root>/<host[:port]>`` is tried in Docker's order
until the registry accepts one.

The example writes to the registry, so it only talks to one on this machine (``localhost``,
``127.0.0.1``, ``[::1]``). It prints what it pushed and pulled to stdout and the client
certificate that was accepted to stderr. Exit status: 0 pulled back what was pushed, 1 the
registry refused or failed (or the bytes differ), 2 the host directory is broken or the
registry is not on this machine.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
from pathlib import Path
from typing import Optional
from urllib.parse import urlsplit

import oras.client
import requests

import dockercerts
import dockercerts.requests

CONTENT = b"hello from dockercerts and oras-py\n"


def on_this_machine(registry: str) -> bool:
    return urlsplit(f"https://{registry}").hostname in ("localhost", "127.0.0.1", "::1")


def push_and_pull(client: oras.client.OrasClient, target: str, workdir: Path) -> tuple[str, Path]:
    """Push ``hello.txt`` to ``target`` and pull it back into ``workdir``: (the pushed
    manifest's digest, the pulled file)."""
    source = workdir / "push" / "hello.txt"
    source.parent.mkdir(parents=True)
    source.write_bytes(CONTENT)
    pushed = client.push(
        target=target, files=[str(source)], disable_path_validation=True, quiet=True
    )
    pushed.raise_for_status()
    [pulled] = client.pull(target=target, outdir=str(workdir / "pull"))
    return pushed.headers["Docker-Content-Digest"], Path(pulled)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Push an artifact with oras-py, pull it back.")
    parser.add_argument("registry", help="host:port of a registry on this machine")
    parser.add_argument("--root", help="the certs.d folder (default: Docker's)")
    parser.add_argument("--repository", default="dockercerts/example")
    parser.add_argument("--tag", default="v1")
    args = parser.parse_args(argv)
    registry = args.registry.removeprefix("https://").rstrip("/")
    if not on_this_machine(registry):
        print(f"error: {registry} is not a registry on this machine", file=sys.stderr)
        return 2

    adapter = dockercerts.requests.Adapter(root=args.root)
    client = oras.client.OrasClient(hostname=registry)
    client.session.mount("https://", adapter)
    target = f"{registry}/{args.repository}:{args.tag}"
    with client.session, tempfile.TemporaryDirectory() as tmp:
        try:
            digest, pulled = push_and_pull(client, target, Path(tmp))
            data = pulled.read_bytes()
        except dockercerts.CertsDirError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except (requests.RequestException, ValueError) as exc:  # oras-py raises ValueError too
            print(f"error: {exc}", file=sys.stderr)
            return 1
        used = adapter.winner(f"https://{registry}")
    print(f"pushed {target}, manifest {digest}")
    print(f"pulled {pulled.name}, sha256:{hashlib.sha256(data).hexdigest()}")
    print(f"client certificate: {used or '(none)'}", file=sys.stderr)
    if data != CONTENT:
        print("error: the pulled bytes differ from the pushed ones", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
