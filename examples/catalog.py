"""List a registry's repositories, sending the client certificates of Docker's certs.d.

    python examples/catalog.py https://registry.example.com:5000
    python examples/catalog.py registry.example.com:5000 --root ./certs.d

The host directory is ``<root>/<host[:port]>`` (``root`` defaults to Docker's, e.g.
``/etc/docker/certs.d``). Every pair in it is tried in Docker's order until the registry
accepts one; the repositories go to stdout, one per line, and the certificate that was
accepted goes to stderr. Exit status: 0 listed, 1 the registry refused or failed, 2 the
host directory is broken.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional

import httpx

import dockercerts


def catalog_url(registry: str) -> str:
    """``reg:5000`` or ``https://reg:5000/`` -> ``https://reg:5000/v2/_catalog``."""
    if "://" not in registry:
        registry = "https://" + registry
    return registry.rstrip("/") + "/v2/_catalog"


def list_repositories(client: httpx.Client, registry: str) -> list[str]:
    """Every repository in the catalog, following its pages (``Link: <...>; rel="next"``)."""
    url: Optional[httpx.URL] = httpx.URL(catalog_url(registry))
    repositories: list[str] = []
    while url is not None:
        response = client.get(url)
        response.raise_for_status()
        repositories += response.json().get("repositories") or []
        following = response.links.get("next", {}).get("url")
        url = response.url.join(following) if following else None
    return repositories


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="List a registry's repositories.")
    parser.add_argument("registry", help="https://host[:port] or host[:port]")
    parser.add_argument("--root", help="the certs.d folder (default: Docker's)")
    parser.add_argument(
        "--policy",
        default="docker",
        choices=["docker", "docker-legacy", "tls-only"],
        help="which answers mean 'certificate rejected, try the next one'",
    )
    args = parser.parse_args(argv)

    transport = dockercerts.Transport(root=args.root, policy=args.policy)
    with httpx.Client(transport=transport, timeout=30) as client:
        try:
            repositories = list_repositories(client, args.registry)
        except dockercerts.CertsDirError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except httpx.HTTPError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        used = transport.winner(catalog_url(args.registry))
    for name in repositories:
        print(name)
    print(f"client certificate: {used or '(none)'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
