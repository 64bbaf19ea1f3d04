"""PEM and DER, read as Go reads them: the blocks of a file, the certificates of a bundle,
the raw names of a certificate. Pure functions over bytes."""

from __future__ import annotations

import base64
import binascii
import re
from datetime import datetime
from typing import Optional

from cryptography import x509

from ._certfacts import utc
from ._gil import let_others_run

__all__ = ["ca_certificates", "key_pem", "pem_blocks", "tbs_names"]

# Go's pem.Decode trims spaces and tabs at the end of the BEGIN line; so does OpenSSL.
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----[ \t]*\r?\n(.*?)-----END \1-----", re.DOTALL)


def pem_blocks(data: bytes) -> list[tuple[str, bytes, bool]]:
    """``(type, der, has_headers)`` for every PEM block; undecodable bodies are skipped."""
    blocks = []
    for done, match in enumerate(_PEM_BLOCK.finditer(data)):
        let_others_run(done)
        kind = match.group(1).decode("ascii")
        body = match.group(2)
        has_headers = b":" in body
        if has_headers:
            # RFC 1421 headers (Proc-Type, DEK-Info) end at the first blank line.
            body = re.split(rb"\r?\n\r?\n", body, maxsplit=1)[-1]
        try:
            der = base64.b64decode(b"".join(body.split()), validate=True)
        except (binascii.Error, ValueError):
            continue
        blocks.append((kind, der, has_headers))
    return blocks


def ca_certificates(data: bytes, parsed: Optional[dict[bytes, datetime]] = None) -> list[bytes]:
    """The certificates Go's ``AppendCertsFromPEM`` would add: the rest is passed over.

    ``parsed`` maps certificates known to parse (shared across a folder's files, so a bundle
    repeating one CA thousands of times parses it once) to their ``notAfter``, which the one
    parse gives for free and the expiry check needs.
    """
    known: dict[bytes, datetime] = {} if parsed is None else parsed
    found = []
    for done, (kind, der, has_headers) in enumerate(pem_blocks(data)):
        let_others_run(done)
        if kind != "CERTIFICATE" or has_headers:
            continue
        if der not in known:
            try:
                cert = x509.load_der_x509_certificate(der)
            except ValueError:
                continue
            known[der] = utc(cert, "not_valid_after")
        found.append(der)
    return found


def _element(data: bytes, pos: int) -> tuple[int, int]:
    """``(start of contents, end)`` of the DER element at ``pos``."""
    length = data[pos + 1]
    start = pos + 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(data[start : start + count], "big")
        start += count
    if start + length > len(data):
        raise ValueError("truncated DER element")
    return start, start + length


def tbs_names(tbs: bytes) -> tuple[bytes, bytes]:
    """``(issuer, subject)`` of a DER ``TBSCertificate``, each the Name's bytes as written.

    Go matches a server's CA names against these raw bytes (``RawIssuer``); cryptography
    only offers names re-encoded from their parsed form, which can differ for an issuer
    that was not encoded canonically.
    """
    try:
        pos, end = _element(tbs, 0)  # the TBSCertificate SEQUENCE
        fields: list[bytes] = []
        while pos < end and len(fields) < 6:
            _, stop = _element(tbs, pos)
            fields.append(tbs[pos:stop])
            pos = stop
    except IndexError:
        raise ValueError("truncated TBSCertificate") from None
    if fields and fields[0][0] == 0xA0:  # [0] EXPLICIT version, absent for v1
        fields.pop(0)
    # serialNumber, signature, issuer, validity, subject
    if len(fields) < 5:
        raise ValueError("a TBSCertificate without issuer and subject")
    return fields[2], fields[4]


def key_pem(data: bytes, kind: str) -> bytes:
    begin = f"-----BEGIN {kind}-----".encode()
    end = f"-----END {kind}-----".encode()
    start = data.find(begin)
    stop = data.find(end, start) + len(end)
    return data[start:stop] + b"\n"
