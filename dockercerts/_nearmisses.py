"""Near misses across a runtime's roots: folders that look meant for a registry but are not
the one podman or containerd reads (shadowed by an earlier root, or the other port-443
spelling), and a ``hosts.toml``'s top-level settings that its ``[host]`` tables do not get.
What ``dockercerts inspect --runtime`` shows; Docker's own are
:func:`dockercerts.diagnose.near_misses`."""

from __future__ import annotations

from pathlib import Path

from ._layouts import Layout
from .diagnose import NearMiss, folder_cas, is_dir
from .hoststoml import HOSTS_TOML, HostsFile
from .locate import split_port
from .runtimes import Lookup, folder_names

__all__ = ["runtime_near_misses", "top_level_misses"]


def _other_spellings(host: str) -> list[str]:
    """The same registry written the other way round on port 443."""
    name, port = split_port(host)
    if port is None:
        return [f"{name}:443"]
    if port == "443":
        return [name]
    return []


def runtime_near_misses(chosen: Layout, host: str, lookup: Lookup) -> list[NearMiss]:
    """Folders that exist and look meant for this registry, but are not the one read."""
    found: list[NearMiss] = []
    names = (host,)
    seen: set[Path] = set()
    winner = lookup.folder
    runtime = chosen.runtime
    if winner is not None:
        places = chosen.places(names)
        after = places[[p.path for p in places].index(winner) + 1 :]
        for place in after:
            if place.path in seen or not is_dir(place.path):
                continue
            seen.add(place.path)
            cas = folder_cas(place.path)
            holds = f" (it holds {', '.join(cas)})" if cas else ""
            found.append(
                NearMiss(
                    name=place.name,
                    path=place.path,
                    reason=f"shadowed: {runtime} reads only the first folder that exists "
                    f"({winner}) and merges nothing, so this one is never read{holds}",
                    fix=f"move what it holds into {winner}, or remove one of the two",
                )
            )
    for other in _other_spellings(host):
        for root in chosen.roots:
            for name in folder_names(runtime, other, platform=chosen.platform):
                path = root / name
                if name == "_default" or path in seen or path == winner or not is_dir(path):
                    continue
                seen.add(path)
                rule = (
                    "nerdctl adds :443 and tries that folder first; ctr and the CRI plugin "
                    "use the name as written"
                    if runtime == "containerd"
                    else "containers/image uses the name as written in the reference"
                )
                found.append(
                    NearMiss(
                        name=name,
                        path=path,
                        reason=f"the folder of {other}, not {host}: {rule}",
                        fix=f"use it for references written {other}/..., or rename it after {host}",
                    )
                )
    return found


def top_level_misses(hosts_file: HostsFile) -> list[NearMiss]:
    """Top-level ``ca``/``client`` that users expect to reach the ``[host]`` tables
    (containerd#13212, #7118): they apply to the server only."""
    server = hosts_file.endpoints[-1]
    found: list[NearMiss] = []
    for field, value in (("client", server.client), ("ca", server.ca)):
        missing = [
            e.url for e in hosts_file.hosts if value is not None and getattr(e, field) is None
        ]
        if missing:
            found.append(
                NearMiss(
                    name=HOSTS_TOML,
                    path=hosts_file.path,
                    reason=f"the top-level {field} applies to the server only, not to "
                    f"[host] tables: {', '.join(missing)} use none (containerd#13212)",
                    fix=f'repeat {field} = ... inside each [host."..."] table that needs it',
                )
            )
    return found
