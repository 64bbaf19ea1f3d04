"""Which client certificate Docker (Go) sends, and a folder mistake that makes it send none.

Docker, containers/image (podman, skopeo) and containerd put every pair of a host folder in
Go's ``tls.Config.Certificates``, in Docker's order. When the server asks for a certificate,
Go's ``getClientCertificate`` (``crypto/tls/handshake_client.go``; ``SupportsCertificate`` in
``common.go``) sends the first pair whose chain has a certificate *issued by* one of the CA
names in the server's CertificateRequest (the raw DER issuer name compared byte for byte), the
first pair when the server lists no name, and **no certificate** when no pair matches. It never
tries another pair.

Pure functions over DER names: :func:`issuer_listed`, :func:`go_sends` and
:func:`leaf_without_intermediate`. Reading the names from a server is
:mod:`dockercerts.canames`; ordering candidates by them is ``_hosts``.

Go also skips a pair whose key cannot sign with any of the server's signature schemes; with
the keys Docker loads (RSA, ECDSA, Ed25519) and an OpenSSL or Go server that never happens,
so it is not modelled.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Sequence
from typing import Optional

from cryptography import x509

from ._pem import tbs_names
from .scan import CertsWarning, ClientPair, is_ca

__all__ = ["go_sends", "issuer_listed", "leaf_without_intermediate", "name_text"]


def issuer_listed(chain_issuers: Sequence[bytes], ca_names: Collection[bytes]) -> bool:
    """Whether one certificate of a chain was issued by a CA the server names.

    ``chain_issuers`` is :attr:`ClientPair.chain_issuers <dockercerts.ClientPair>` (one DER
    issuer per certificate in the ``.cert``); ``ca_names`` the DER names of the server's
    CertificateRequest.

        >>> issuer_listed([b"leaf-issuer", b"root"], {b"root"})
        True
    """
    return any(issuer in ca_names for issuer in chain_issuers)


def go_sends(
    chains: Sequence[Sequence[bytes]], ca_names: Optional[Sequence[bytes]]
) -> Optional[int]:
    """The index of the pair Go sends, or ``None`` when it sends none.

    ``chains`` holds each pair's ``chain_issuers`` in Docker's order; ``ca_names`` the DER
    names the server's CertificateRequest lists, or ``None`` when the server sent no
    CertificateRequest (it asked for no certificate, so none is sent).

        >>> go_sends([[b"other"], [b"root"]], [b"root"])  # the first listed issuer's pair
        1
        >>> go_sends([[b"other"], [b"root"]], [])  # no names: the first pair
        0
        >>> go_sends([[b"other"]], [b"root"]) is None  # no match: no certificate at all
        True
    """
    if ca_names is None or not chains:
        return None
    if not ca_names:
        return 0
    listed = frozenset(ca_names)
    return next((i for i, chain in enumerate(chains) if issuer_listed(chain, listed)), None)


def name_text(der: bytes) -> str:
    """A DER name as RFC 4514 text; ``0x`` and its hex when it does not parse (or this
    cryptography, older than 45, cannot parse a bare name).

        >>> name_text(x509.Name.from_rfc4514_string("CN=registry clients").public_bytes())
        'CN=registry clients'
    """
    from_bytes = getattr(x509.Name, "from_bytes", None)
    if from_bytes is not None:
        with contextlib.suppress(ValueError):
            return str(from_bytes(der).rfc4514_string())
    return "0x" + der.hex()


def leaf_without_intermediate(
    pairs: Sequence[ClientPair], ca_certificates: Sequence[bytes]
) -> tuple[CertsWarning, ...]:
    """Pairs whose ``.cert`` stops short of an intermediate CA found in the ``.crt`` files.

    Go matches a server's CA names only against the issuers of the certificates inside the
    ``.cert`` (moby#21148): a leaf issued by an intermediate, saved without it, matches a
    server that names only the root with nothing, and Go sends no certificate. Only the
    intermediates the folder holds (``ca_certificates``: DER, the ``.crt`` files' content)
    can be recognised; one kept nowhere in the folder cannot be told from a root.
    """
    wanted = {pair.chain_issuers[-1] for pair in pairs if pair.chain_issuers}
    intermediates: dict[bytes, str] = {}
    for der in ca_certificates:
        # A DER certificate holds its subject's bytes as written: one without any pair's
        # issuer in it cannot be that issuer, and a large bundle is not parsed for nothing.
        if not any(name in der for name in wanted):
            continue
        try:
            cert = x509.load_der_x509_certificate(der)
            issuer, subject = tbs_names(cert.tbs_certificate_bytes)
        except ValueError:
            continue
        if issuer != subject and is_ca(cert):
            intermediates.setdefault(subject, cert.subject.rfc4514_string())
    found = []
    for pair in pairs:
        last = pair.chain_issuers[-1] if pair.chain_issuers else None
        if last is None or last not in intermediates:
            continue
        name = intermediates[last]
        held = (
            "holds only the leaf"
            if pair.chain_length == 1
            else f"holds {pair.chain_length} certificates but not the last one's issuer"
        )
        found.append(
            CertsWarning(
                "leaf-without-intermediate",
                pair.cert,
                f"the .cert {held}, issued by the intermediate {name}",
                f"append that intermediate to {pair.cert.name} (leaf first): servers that "
                "ask for the root's name get no certificate from Go (moby#21148)",
            )
        )
    return tuple(found)
