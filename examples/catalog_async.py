"""List a registry's repositories with ``httpx.AsyncClient`` and ``dockercerts.AsyncTransport``.

    python examples/catalog_async.py https://registry.example.com:5000 [--root DIR]

The async twin of ``catalog.py``: same arguments, same output, same exit status.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Optional

import httpx

import dockercerts


def catalog_url(registry: str) -> str:
    """``reg:5000`` or ``https://reg:5000/`` -> ``https://reg:5000/v2/_catalog``."""
    if "://" not in registry:
        registry = "https://" + registry
    return registry.rstrip("/") + "/v2/_catalog"


async def list_repositories(client: httpx.AsyncClient, registry: str) -> list[str]:
    """Every repository in the catalog, following its pages (``Link: <...>; rel="next"``)."""
    url: Optional[httpx.URL] = httpx.URL(catalog_url(registry))
    repositories: list[str] = []
    while url is not None:
        response = await client.get(url)
        response.raise_for_status()
        repositories += response.json().get("repositories") or []
        following = response.links.get("next", {}).get("url")
        url = response.url.join(following) if following else None
    return repositories


async def main(argv: Optional[list[str]] = None) -> int:
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

    transport = dockercerts.AsyncTransport(root=args.root, policy=args.policy)
    async with httpx.AsyncClient(transport=transport, timeout=30) as client:
        try:
            repositories = await list_repositories(client, args.registry)
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
    sys.exit(asyncio.run(main()))
