"""Go's wording, for errors that other runtimes print: pure functions over plain values.

containerd and containers/image are Go programs, and some of their messages embed what Go's
``fmt``, ``os``, ``time`` and ``crypto/tls`` packages say (``invalid type 1.5 for "ca"``,
``open /x/ca.crt: no such file or directory``, ``time: unknown unit "x" in duration "5x"``,
``tls: failed to find any PEM data in key input``). These functions produce the same words,
so a message seen in a containerd log and one from dockercerts can be searched for together.
"""

from __future__ import annotations

import datetime
import errno
import math
from decimal import Decimal
from pathlib import Path
from typing import Optional, Union

__all__ = [
    "go_type",
    "go_value",
    "key_pair_problem",
    "os_error",
    "parse_duration",
    "quote",
]


def quote(text: str) -> str:
    """Go's ``strconv.Quote`` for the texts that reach an error message.

    >>> quote('5"x')
    '"5\\\\"x"'
    """
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif not ch.isprintable():
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x80 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _go_float(value: float) -> str:
    """``fmt``'s ``%v`` of a float64: the shortest digits, in ``%e`` form when the exponent
    is below -4 or at least 6 (or the digits' count, when that is smaller and exact)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    sign, digits, exponent = Decimal(repr(value)).as_tuple()
    assert isinstance(exponent, int)
    text = "".join(map(str, digits)).rstrip("0")
    exponent += len(digits) - len(text)
    count = len(text)
    point = count + exponent  # digits before the decimal point
    precision = 6
    if precision > count >= point:
        precision = count
    exp = point - 1
    minus = "-" if sign else ""
    if exp < -4 or exp >= precision:
        mantissa = text[0] + ("." + text[1:] if count > 1 else "")
        return f"{minus}{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    if point <= 0:
        return f"{minus}0.{'0' * -point}{text}"
    if point >= count:
        return minus + text + "0" * (point - count)
    return f"{minus}{text[:point]}.{text[point:]}"


def go_value(value: object) -> str:
    """What Go's ``%v`` prints for a value decoded from TOML into ``any``.

    >>> go_value(["a", 1, True]), go_value({"b": 2.5, "a": "x"}), go_value(1e6)
    ('[a 1 true]', 'map[a:x b:2.5]', '1e+06')
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _go_float(value)
    if isinstance(value, list):
        return "[" + " ".join(go_value(item) for item in value) + "]"
    if isinstance(value, dict):
        # fmt prints maps with their keys sorted.
        items = sorted(value.items())
        return "map[" + " ".join(f"{key}:{go_value(item)}" for key, item in items) + "]"
    if isinstance(value, datetime.datetime) and value.tzinfo is not None:
        return value.strftime("%Y-%m-%d %H:%M:%S %z")
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    return str(value)


def go_type(value: object) -> str:
    """What Go's ``%T`` prints for a value decoded from TOML into ``any``.

    >>> go_type(5), go_type(["a"]), go_type({"a": 1})
    ('int64', '[]interface {}', 'map[string]interface {}')
    """
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, str):
        return "string"
    if isinstance(value, int):
        return "int64"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, list):
        return "[]interface {}"
    if isinstance(value, dict):
        return "map[string]interface {}"
    if isinstance(value, datetime.datetime):
        return "time.Time" if value.tzinfo is not None else "toml.LocalDateTime"
    if isinstance(value, datetime.date):
        return "toml.LocalDate"
    if isinstance(value, datetime.time):
        return "toml.LocalTime"
    return type(value).__name__


_UNITS = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # micro sign
    "\u03bcs": 1_000,  # Greek mu
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "h": 3600 * 1_000_000_000,
}
_MAX_NS = (1 << 63) - 1


def parse_duration(text: str) -> int:
    """Go's ``time.ParseDuration``: nanoseconds, or ``ValueError`` with Go's message.

    >>> parse_duration("1.5s"), parse_duration("1h2m"), parse_duration("0")
    (1500000000, 3720000000000, 0)
    >>> parse_duration("5")
    Traceback (most recent call last):
    ...
    ValueError: time: missing unit in duration "5"
    """
    invalid = ValueError("time: invalid duration " + quote(text))
    rest = text
    negative = False
    if rest[:1] in ("-", "+"):
        negative = rest[0] == "-"
        rest = rest[1:]
    if rest == "0":
        return 0
    if not rest:
        raise invalid
    total = 0
    while rest:
        if not (rest[0] == "." or (rest[0].isascii() and rest[0].isdigit())):
            raise invalid
        start = len(rest)
        whole, rest = _leading_digits(rest)
        had_whole = len(rest) != start
        fraction, had_fraction = "", False
        if rest[:1] == ".":
            rest = rest[1:]
            start = len(rest)
            fraction, rest = _leading_digits(rest)
            had_fraction = len(rest) != start
        if not had_whole and not had_fraction:
            raise invalid
        end = 0
        while end < len(rest) and not (rest[end] == "." or "0" <= rest[end] <= "9"):
            end += 1
        if end == 0:
            raise ValueError("time: missing unit in duration " + quote(text))
        unit_text, rest = rest[:end], rest[end:]
        unit = _UNITS.get(unit_text)
        if unit is None:
            raise ValueError(f"time: unknown unit {quote(unit_text)} in duration {quote(text)}")
        value = int(whole or "0")
        if value > _MAX_NS // unit:
            raise invalid
        value *= unit
        if fraction:
            # Go truncates the fraction's nanoseconds rather than rounding.
            value += int(Decimal("0." + fraction) * unit)
        total += value
        if total > _MAX_NS:
            raise invalid
    return -total if negative else total


def _leading_digits(text: str) -> tuple[str, str]:
    end = 0
    while end < len(text) and "0" <= text[end] <= "9":
        end += 1
    return text[:end], text[end:]


def os_error(op: str, path: Union[str, Path], exc: Union[OSError, str]) -> str:
    """Go's ``*os.PathError`` text: ``open /x/ca.crt: no such file or directory``.

    >>> os_error("open", "/x/ca.crt", FileNotFoundError(errno.ENOENT, "No such file or directory"))
    'open /x/ca.crt: no such file or directory'
    """
    if isinstance(exc, str):
        reason = exc
    else:
        reason = exc.strerror or (errno.errorcode.get(exc.errno or 0, "") if exc.errno else "")
        reason = reason or type(exc).__name__
    # Go's syscall errors are lower case ("permission denied"); Python's strerror is not.
    if reason[:1].isupper() and not reason[1:2].isupper():
        reason = reason[0].lower() + reason[1:]
    return f"{op} {path}: {reason}"


def key_pair_problem(
    cert_blocks: list[str], key_blocks: list[str], *, certificate_parses: bool = True
) -> Optional[str]:
    """What Go's ``tls.X509KeyPair`` says about the PEM block types of a pair, or ``None``
    when they are fine (the cryptographic checks are the caller's).

    ``cert_blocks`` and ``key_blocks`` are the block types found in each input, in order.

    >>> key_pair_problem(["PRIVATE KEY"], ["PRIVATE KEY"])[:61]
    'tls: failed to find certificate PEM data in certificate input'
    >>> key_pair_problem(["CERTIFICATE"], ["CERTIFICATE"])
    'tls: found a certificate rather than a key in the PEM for the private key'
    """
    skipped = [kind for kind in cert_blocks if kind != "CERTIFICATE"]
    if len(skipped) == len(cert_blocks):
        if not skipped:
            return "tls: failed to find any PEM data in certificate input"
        if len(skipped) == 1 and skipped[0].endswith("PRIVATE KEY"):
            return (
                "tls: failed to find certificate PEM data in certificate input, but did find "
                "a private key; PEM inputs may have been switched"
            )
        return (
            'tls: failed to find "CERTIFICATE" PEM block in certificate input after skipping '
            f"PEM blocks of the following types: [{' '.join(skipped)}]"
        )
    skipped = []
    for kind in key_blocks:
        if kind == "PRIVATE KEY" or kind.endswith(" PRIVATE KEY"):
            break
        skipped.append(kind)
    else:
        if not skipped:
            return "tls: failed to find any PEM data in key input"
        if skipped == ["CERTIFICATE"]:
            return "tls: found a certificate rather than a key in the PEM for the private key"
        return (
            'tls: failed to find PEM block with type ending in "PRIVATE KEY" in key input '
            f"after skipping PEM blocks of the following types: [{' '.join(skipped)}]"
        )
    if not certificate_parses:
        return "x509: malformed certificate"
    return None
