"""A host folder's CA certificates, prepared once and shared by all of its contexts.

OpenSSL 3.0 adds each certificate given to ``load_verify_locations(cadata=...)`` after a
duplicate check that sorts the whole store again, so an eager load grows faster than the
number of certificates (0.17 s for 1,000, 5.3 s for 10,000 on the development machine), and
it is paid for every context, i.e. every client pair. OpenSSL's other way in is a *hashed
folder* (``capath``): files named ``<subject hash>.<n>``, opened only when a verification
looks for a certificate with that subject. Building one costs a file per distinct subject,
once per host folder; each context then pays nothing up front.

Python exposes no subject-hash function (nor does ``cryptography``), so :func:`subject_hash`
computes OpenSSL's own (``X509_NAME_hash_ex``: the first four bytes of the SHA-1 of the
name's canonical encoding, little-endian). A certificate whose name uses an encoding whose
canonical form is not certain here is never guessed at: it is loaded eagerly, as before.
Small sets (fewer than :data:`LAZY_FROM` certificates) are loaded eagerly too, which is
cheaper for them than files.

Duplicates (equal DER) are dropped first, as Go's ``CertPool`` drops them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import ssl
import tempfile
import weakref
from collections.abc import Iterable, Sequence
from typing import Optional, Union

from ._gil import let_others_run

__all__ = ["LAZY_FROM", "Anchors", "subject_hash"]

log = logging.getLogger("dockercerts")

#: From this many distinct certificates on, a folder's anchors go into a hashed folder.
LAZY_FROM = 32

# Tags of the string types OpenSSL canonicalises (ASN1_MASK_CANON) and accepts in a name
# (VisibleString is canonicalised but refused in names, so it is not here).
_UTF8, _NUMERIC, _PRINTABLE, _T61, _IA5, _UNIVERSAL, _BMP = 12, 18, 19, 20, 22, 28, 30
_ONE_BYTE = {_PRINTABLE, _T61, _IA5}  # OpenSSL reads these as Latin-1
_SPACES = b" \t\n\v\f\r"  # ossl_isspace
_SPACE_RUN = re.compile(rb"[ \t\n\v\f\r]+")


class _Unsupported(Exception):
    """A name whose canonical form is not certain: its certificate is loaded eagerly."""


def _tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    """``(tag, content start, content end)`` of the DER element at ``pos``."""
    if pos + 2 > len(data):
        raise _Unsupported("truncated")
    tag, first = data[pos], data[pos + 1]
    if tag & 0x1F == 0x1F:
        raise _Unsupported("high tag number")
    pos += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            raise _Unsupported("indefinite or huge length")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    if pos + length > len(data):
        raise _Unsupported("truncated")
    return tag, pos, pos + length


def _encode(tag: int, content: bytes) -> bytes:
    size = len(content)
    if size < 0x80:
        return bytes((tag, size)) + content
    octets = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(octets))) + octets + content


def _subject(der: bytes) -> bytes:
    """The content of the subject ``Name`` of a DER certificate, as written."""
    _, start, _ = _tlv(der, 0)  # Certificate
    _, pos, end = _tlv(der, start)  # TBSCertificate
    fields: list[tuple[int, int, int]] = []
    while pos < end and len(fields) < 6:
        tag, content, after = _tlv(der, pos)
        fields.append((tag, content, after))
        pos = after
    if fields and fields[0][0] == 0xA0:  # [0] version
        fields = fields[1:]
    if len(fields) < 5 or fields[4][0] != 0x30:
        raise _Unsupported("not a certificate")
    _, content, after = fields[4]  # serial, signature, issuer, validity, subject
    return der[content:after]


def _canonical_value(tag: int, value: bytes) -> bytes:
    """OpenSSL's ``asn1_string_canon``: UTF-8, trimmed, runs of spaces as one, ASCII lower."""
    if tag == _NUMERIC:  # not in ASN1_MASK_CANON: copied as it is
        return _encode(tag, value)
    try:
        if tag == _UTF8:
            text = value.decode("utf-8")
        elif tag in _ONE_BYTE:
            text = value.decode("latin-1")
        elif tag == _BMP:
            if len(value) % 2:
                raise _Unsupported("odd BMPString")
            text = value.decode("utf-16-be")
            if any(0xD800 <= ord(c) <= 0xDFFF for c in text) or len(text) * 2 != len(value):
                raise _Unsupported("surrogates in a BMPString")
        elif tag == _UNIVERSAL:
            text = value.decode("utf-32-be")
        else:
            raise _Unsupported(f"tag {tag}")
    except UnicodeDecodeError:
        raise _Unsupported("undecodable string") from None
    data = _SPACE_RUN.sub(b" ", text.encode("utf-8").strip(_SPACES)).lower()
    return _encode(_UTF8, data)


def _canonical_name(name: bytes) -> bytes:
    """OpenSSL's ``x509_name_canon``: each RDN as a DER SET of canonical entries, joined."""
    out = []
    pos = 0
    while pos < len(name):
        tag, start, end = _tlv(name, pos)
        if tag != 0x31 or start == end:
            raise _Unsupported("not a SET")
        entries = []
        inner = start
        while inner < end:
            tag, seq_start, seq_end = _tlv(name, inner)
            if tag != 0x30:
                raise _Unsupported("not a SEQUENCE")
            oid_tag, oid_start, oid_end = _tlv(name, seq_start)
            value_tag, value_start, value_end = _tlv(name, oid_end)
            if oid_tag != 0x06 or value_end != seq_end:
                raise _Unsupported("not an attribute")
            oid = _encode(0x06, name[oid_start:oid_end])
            value = _canonical_value(value_tag, name[value_start:value_end])
            entries.append(_encode(0x30, oid + value))
            inner = seq_end
        out.append(_encode(0x31, b"".join(sorted(entries))))
        pos = end
    if not out:
        raise _Unsupported("empty name")
    return b"".join(out)


def subject_hash(der: bytes) -> Optional[str]:
    """OpenSSL's subject hash of a DER certificate (what ``openssl x509 -subject_hash``
    prints), or ``None`` when its name's canonical form is not certain here."""
    try:
        canonical = _canonical_name(_subject(der))
    except _Unsupported:
        return None
    digest = hashlib.sha1(canonical).digest()  # noqa: S324 - OpenSSL's hash, not security
    return f"{int.from_bytes(digest[:4], 'little'):08x}"


_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


def _memory_folder() -> Optional[str]:
    """Where to make the hashed folder: ``/dev/shm`` when usable, else the temp folder.

    Creating a file costs ~7 us on tmpfs and ~200 us on the development machine's disk, so
    for 10,000 anchors the choice is 0.07 s against 2 s.
    """
    shm = "/dev/shm"  # noqa: S108 - a private 0700 folder with a random name is made in it
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK) else None


class _HashedFolder:
    """A private ``capath`` folder; removed when the last context using it is gone."""

    def __init__(self, groups: dict[str, list[bytes]]) -> None:
        self.path = tempfile.mkdtemp(prefix="dockercerts-anchors-", dir=_memory_folder())
        self._remove = weakref.finalize(self, shutil.rmtree, self.path, ignore_errors=True)
        try:
            for done, (name, ders) in enumerate(groups.items()):
                let_others_run(done)
                # One file per hash, holding every certificate with it: OpenSSL reads all of
                # a file's certificates, and stops at the first missing <hash>.<n>.
                pem = "".join(ssl.DER_cert_to_PEM_cert(der) for der in ders).encode("ascii")
                fd = os.open(os.path.join(self.path, f"{name}.0"), _CREATE, 0o600)
                try:
                    os.write(fd, pem)
                finally:
                    os.close(fd)
        except BaseException:
            self._remove()
            raise

    def __repr__(self) -> str:
        return f"<_HashedFolder {self.path}>"


class Anchors:
    """A host folder's CA certificates, ready to be added to any number of contexts.

    Built once per host folder (the candidates of a :class:`~dockercerts.HostCerts` share
    one); :meth:`load_into` costs one ``capath`` registration plus the eager remainder.
    ``count`` is the number of distinct certificates.
    """

    def __init__(self, certificates: Iterable[bytes], *, lazy_from: Optional[int] = None) -> None:
        unique = list(dict.fromkeys(certificates))
        self.count = len(unique)
        threshold = LAZY_FROM if lazy_from is None else lazy_from
        eager: list[bytes] = []
        groups: dict[str, list[bytes]] = {}
        if self.count >= threshold:
            for done, der in enumerate(unique):
                let_others_run(done)
                name = subject_hash(der)
                if name is None:
                    eager.append(der)
                else:
                    groups.setdefault(name, []).append(der)
        else:
            eager = unique
        self._folder: Optional[_HashedFolder] = None
        if groups:
            try:
                self._folder = _HashedFolder(groups)
            except OSError as exc:
                # No writable temporary folder: correct, only slower.
                log.debug("anchors: no hashed folder (%s); loading them eagerly", exc)
                eager = unique
        self._cadata = b"".join(eager)
        self.eager = len(eager)

    @property
    def lazy(self) -> int:
        """How many certificates are looked up lazily (in the hashed folder)."""
        return self.count - self.eager

    @property
    def folder(self) -> Optional[str]:
        """The hashed folder, while any context or this object uses it."""
        return None if self._folder is None else self._folder.path

    def __repr__(self) -> str:
        return f"<Anchors {self.count} ({self.lazy} lazy)>"

    def load_lazy(self, context: ssl.SSLContext) -> None:
        """Register the hashed folder with ``context``, which keeps it alive."""
        if self._folder is not None:
            context.load_verify_locations(capath=self._folder.path)
            # OpenSSL opens the files at verification time: the folder lives as long as
            # the context does (it is removed once neither it nor this object is left).
            context.__dict__.setdefault("_dockercerts_anchors", []).append(self._folder)

    def load_eager(self, context: ssl.SSLContext) -> None:
        """Add the certificates that are not in the hashed folder."""
        if self._cadata:
            context.load_verify_locations(cadata=self._cadata)


def as_anchors(anchors: Union[Sequence[bytes], Anchors]) -> Anchors:
    """``anchors`` itself when prepared already, else a new :class:`Anchors`."""
    return anchors if isinstance(anchors, Anchors) else Anchors(anchors)
