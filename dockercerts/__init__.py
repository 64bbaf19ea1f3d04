"""dockercerts: talk to container registries with Docker's ``certs.d`` TLS material.

The data's path, one module per step:

* :mod:`~dockercerts.locate`: where a registry's host directory is; for podman and containerd,
  :mod:`~dockercerts.runtimes` (their roots and folder names), ``_search`` (which exists) and
  ``_layouts`` (one object per runtime, chosen in one place);
* :mod:`~dockercerts.scan`: what is in it, by Docker's rules (or containers/image's);
  :mod:`~dockercerts.hoststoml` and :mod:`~dockercerts.containerd`: containerd's
  ``hosts.toml`` and folders;
* :mod:`~dockercerts.trust` and :mod:`~dockercerts.loader`: which ``ssl`` contexts it makes;
* :mod:`~dockercerts.rejection`: what an answer says about a certificate;
* :mod:`~dockercerts.gochoice`: which pair Docker (Go) sends for a server's CA names, and
  :mod:`~dockercerts.canames`: reading those names (``pip install 'dockercerts[probe]'``);
* :mod:`~dockercerts.flow`: every decision of one exchange (order, verdicts, replay, answer),
  over the per-host memory of ``_hosts``;
* :mod:`~dockercerts.transport`: the httpx front ends that drive the flow (``_watch``: which
  try opened a connection, seen at the ``ssl`` layer; ``proxies``: which proxy a host uses;
  ``_drive``: what the sync front ends share around the flow);
* :mod:`dockercerts.requests`: the requests front end (an ``HTTPAdapter``), imported on its
  own: ``pip install 'dockercerts[requests]'``;
* :mod:`dockercerts.testing`: a CA, a certs.d tree and an mTLS server for tests.
"""

import logging

from .errors import (
    Attempt,
    CANamesError,
    CertsDirError,
    CertsDirReadError,
    CertsDirTransportError,
    CertsDirUnusable,
    ClientCertificateRejected,
    EndpointTLSError,
    EveryCertificateRejected,
    HostsTomlError,
    InvalidHostError,
    KeyPairError,
    MissingCertificateError,
    MissingExtraError,
    MissingKeyError,
    NoEndpointError,
    OverrideRefused,
)
from .loader import Candidate, HostCerts, default_trust, load, load_dir
from .locate import Platform, StrPath, certs_root, check_host, host_dir, registry_host
from .rejection import DOCKER, DOCKER_LEGACY, TLS_ONLY, RejectionPolicy, Verdict
from .runtimes import Runtime
from .scan import CertsWarning, ClientPair, Password
from .transport import AsyncTransport, Transport, docker_host_names
from .trust import DOCKER_CIPHERS, SystemTrust, Trust, docker_context, system_trust

__version__ = "0.1.0"

# A library must not print through logging's last-resort handler: applications decide.
logging.getLogger("dockercerts").addHandler(logging.NullHandler())

__all__ = [
    "DOCKER",
    "DOCKER_CIPHERS",
    "DOCKER_LEGACY",
    "TLS_ONLY",
    "AsyncTransport",
    "Attempt",
    "CANamesError",
    "Candidate",
    "CertsDirError",
    "CertsDirReadError",
    "CertsDirTransportError",
    "CertsDirUnusable",
    "CertsWarning",
    "ClientCertificateRejected",
    "ClientPair",
    "EndpointTLSError",
    "EveryCertificateRejected",
    "HostCerts",
    "HostsTomlError",
    "InvalidHostError",
    "KeyPairError",
    "MissingCertificateError",
    "MissingExtraError",
    "MissingKeyError",
    "NoEndpointError",
    "OverrideRefused",
    "Password",
    "Platform",
    "RejectionPolicy",
    "Runtime",
    "StrPath",
    "SystemTrust",
    "Transport",
    "Trust",
    "Verdict",
    "__version__",
    "certs_root",
    "check_host",
    "default_trust",
    "docker_context",
    "docker_host_names",
    "host_dir",
    "load",
    "load_dir",
    "registry_host",
    "system_trust",
]
