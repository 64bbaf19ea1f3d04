"""A transport's options, checked once when it is made: :class:`Options` and :func:`options`,
shared by every front end (the httpx twins and the requests adapter), with the one text that
documents them (:data:`OPTIONS_DOC`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

from . import canames
from ._layouts import Layout, layout
from .loader import Secret
from .locate import StrPath, resolve_platform
from .rejection import RejectionPolicy
from .scan import Password
from .trust import Trust, check_system

__all__ = ["OPTIONS_DOC", "Options", "options"]


#: What the options every front end takes mean (appended to each front end's docstring).
OPTIONS_DOC = """
    ``runtime`` is whose folders are read: ``"docker"`` (default), ``"podman"``
    (containers/image's search list; ``cert_dir=`` is its ``--cert-dir``) or
    ``"containerd"`` (``hosts.toml``: a request is routed as containerd routes it, to the
    mirrors with the operation's capability, then ``server``, each with its own TLS; see
    :mod:`dockercerts.routing`). ``system="truststore"`` verifies with the
    platform's verifier plus the folder's CA files (the ``truststore`` extra; see
    :func:`~dockercerts.load`).
    ``root`` replaces the runtime's roots (Docker's: :func:`~dockercerts.certs_root`);
    ``platform`` and ``trust`` choose the platform's rules and how the folder's ``.crt`` files
    combine with the system's roots (:func:`~dockercerts.load_dir`); ``password`` decrypts
    keys; ``policy`` is the :class:`~dockercerts.RejectionPolicy` (or a preset's name).
    ``refresh`` is how often (seconds) a host directory is checked for changes; 0 checks on
    every request. ``recheck`` is how long (seconds, default 60) a candidate refused at the
    certificate layer is skipped by later requests to its host; 0 never skips. ``max_hosts``
    bounds how many hosts keep their pools."""


@dataclass(frozen=True)
class Options:
    """A transport's settings that every host state reads; checked when the transport is made."""

    root: Path
    platform: str
    # Where folders are and how they are read: the runtime's, chosen once (see _layouts).
    layout: Layout
    trust: Optional[Trust]
    # Wrapped: dataclasses.asdict() and repr() of the options must not show it.
    password: Secret = field(repr=False)
    policy: RejectionPolicy
    refresh: float
    recheck: float
    order: str = "docker"
    system: str = "openssl"
    # False: every folder's trust only, no client certificate (HostCerts.trust_only).
    client_certificates: bool = True


_TRUSTS = (None, "merge", "replace")


_ORDERS = ("docker", "ca-names")


def options(
    root: Optional[StrPath],
    platform: Optional[str],
    trust: Optional[Trust],
    password: Optional[Password],
    policy: Union[RejectionPolicy, str],
    refresh: float,
    recheck: float = 60.0,
    *,
    order: str = "docker",
    runtime: str = "docker",
    cert_dir: Optional[StrPath] = None,
    system: str = "openssl",
    client_certificates: bool = True,
) -> Options:
    """:class:`Options` from a transport's keyword arguments, each one checked now: a mistake
    found at the first request would surface far from where it was made."""
    plat = resolve_platform(platform)
    folders = layout(runtime, root=root, cert_dir=cert_dir, platform=plat)
    if trust not in _TRUSTS:
        raise ValueError(f"trust must be 'merge', 'replace' or None, not {trust!r}")
    check_system(system)
    if system == "truststore" and trust == "replace":
        raise ValueError("trust='replace' cannot go with system='truststore' (always merged)")
    if password is not None and not isinstance(password, (bytes, str)) and not callable(password):
        raise TypeError("password must be bytes, str or a callable taking the key's path")
    if not isinstance(policy, (str, RejectionPolicy)):
        raise TypeError(f"policy must be a preset name or a RejectionPolicy, not {policy!r}")
    for name, value in (("refresh", refresh), ("recheck", recheck)):
        if not isinstance(value, (int, float)) or not value >= 0 or value == float("inf"):
            raise ValueError(f"{name} must be a finite number of seconds >= 0, not {value!r}")
    if order not in _ORDERS:
        raise ValueError(f"order must be 'docker' or 'ca-names', not {order!r}")
    if order == "ca-names":
        canames.require("order='ca-names'")
    if not isinstance(client_certificates, bool):
        raise TypeError(f"client_certificates must be True or False, not {client_certificates!r}")
    return Options(
        root=folders.roots[0],
        platform=plat,
        layout=folders,
        trust=trust,
        password=Secret.of(password),
        policy=RejectionPolicy.preset(policy) if isinstance(policy, str) else policy,
        refresh=float(refresh),
        recheck=float(recheck),
        order=order,
        system=system,
        client_certificates=client_certificates,
    )
