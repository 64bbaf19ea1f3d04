"""The table headers of a TOML document, in the order they are written: ``tomllib`` keeps
tables as nested dicts, where a table reopened further down (``[host."a".header]`` after
``[host."b"]``) no longer shows, and containerd's host order depends on exactly that.

Pure, over valid TOML text (the caller has parsed it with ``tomllib`` first, so no error
handling here). Internal; :func:`table_headers` is re-exported by :mod:`dockercerts.hoststoml`.
"""

from __future__ import annotations

import re
import sys

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python < 3.11 only
    import tomli as tomllib

__all__ = ["table_headers"]

_BARE = re.compile(r"[A-Za-z0-9_-]+")


def _skip_string(text: str, i: int) -> int:
    """The index after the TOML string starting at ``text[i]`` (the document is valid)."""
    quote_char = text[i]
    if text.startswith(quote_char * 3, i):
        end = i + 3
        while True:
            if quote_char == '"' and text[end] == "\\":
                end += 2
                continue
            if text.startswith(quote_char * 3, end):
                end += 3
                # Up to two more quotes belong to the string's content.
                extra = 0
                while extra < 2 and end < len(text) and text[end] == quote_char:
                    end += 1
                    extra += 1
                return end
            end += 1
    end = i + 1
    while text[end] != quote_char:
        end += 2 if quote_char == '"' and text[end] == "\\" else 1
    return end + 1


def _key_part(text: str, i: int) -> tuple[str, int]:
    """One part of a dotted key at ``text[i]``: its value and the index after it."""
    if text[i] in "\"'":
        end = _skip_string(text, i)
        # tomllib knows TOML's escapes; a one-line document turns the quoted key into text.
        value = tomllib.loads("k = " + text[i:end])["k"]
        assert isinstance(value, str)
        return value, end
    match = _BARE.match(text, i)
    assert match is not None
    return match.group(), match.end()


def _header(text: str, i: int) -> tuple[bool, list[str], int]:
    """The table header at ``text[i]`` (``[a."b".c]`` or ``[[...]]``): whether it is an
    array of tables, its key parts, and the index after it."""
    array = text.startswith("[[", i)
    i += 2 if array else 1
    parts: list[str] = []
    while True:
        while text[i] in " \t":
            i += 1
        part, i = _key_part(text, i)
        parts.append(part)
        while text[i] in " \t":
            i += 1
        if text[i] == ".":
            i += 1
            continue
        return array, parts, i + (2 if array else 1)


def _skip_value(text: str, i: int) -> int:
    """From after ``key =``: the index past the value and the end of its line."""
    depth = 0
    while i < len(text):
        ch = text[i]
        if ch in "\"'":
            i = _skip_string(text, i)
            continue
        if ch == "#":
            while i < len(text) and text[i] != "\n":
                i += 1
            continue
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "\n" and depth == 0:
            return i + 1
        i += 1
    return i


def table_headers(text: str) -> list[tuple[bool, tuple[str, ...]]]:
    """Every table header of a valid TOML document, in order: ``(is_array, key_parts)``.

    >>> text = 'a = "[x]"\\n[host."m"]\\nca = ["a",\\n "b"]\\n[host."m".header]\\n'
    >>> table_headers(text)
    [(False, ('host', 'm')), (False, ('host', 'm', 'header'))]
    """
    found: list[tuple[bool, tuple[str, ...]]] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch in " \t\r\n":
            i += 1
        elif ch == "#":
            while i < len(text) and text[i] != "\n":
                i += 1
        elif ch == "[":
            array, parts, i = _header(text, i)
            found.append((array, tuple(parts)))
        else:
            # A key/value line: skip the key (quoted parts may hold '='), then the value.
            while text[i] != "=":
                i = _skip_string(text, i) if text[i] in "\"'" else i + 1
            i = _skip_value(text, i + 1)
    return found
