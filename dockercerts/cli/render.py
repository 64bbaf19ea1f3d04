"""Text output: colour (``Style``), aligned tables and the small formats every report uses."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Optional, TextIO, Union

from .args import Report

#: A table cell: plain text, or ``(style, text)`` to colour it.
Cell = Union[str, tuple[str, str]]


_CODES = {"bold": "1", "red": "31", "green": "32", "yellow": "33"}


def use_colour(
    stream: TextIO, mode: str = "auto", environ: Optional[dict[str, str]] = None
) -> bool:
    """Colour only on a terminal, never with a non-empty ``NO_COLOR`` or ``TERM=dumb``.

    An explicit ``--color always`` or ``never`` wins over the environment.
    """
    if mode in ("always", "never"):
        return mode == "always"
    env = os.environ if environ is None else environ
    if env.get("NO_COLOR") or env.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class Style:
    """``style("red+bold", text)``: ANSI colours when enabled, the text unchanged otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, name: str, text: str) -> str:
        if not self.enabled or not text:
            return text
        codes = ";".join(_CODES[part] for part in name.split("+"))
        return f"\x1b[{codes}m{text}\x1b[0m"


def table(rows: Sequence[Sequence[Cell]], style: Style, indent: str = "  ") -> list[str]:
    """Rows as aligned columns; colour is added after padding so columns line up either way."""
    plain = [[cell if isinstance(cell, str) else cell[1] for cell in row] for row in rows]
    widths: dict[int, int] = {}
    for texts in plain:
        for index, text in enumerate(texts[:-1]):
            widths[index] = max(widths.get(index, 0), len(text))
    lines = []
    for cells, texts in zip(rows, plain):
        parts = []
        for index, (cell, text) in enumerate(zip(cells, texts)):
            padding = "" if index == len(cells) - 1 else " " * (widths[index] - len(text))
            shown = text if isinstance(cell, str) else style(cell[0], text)
            parts.append(shown + padding)
        lines.append((indent + "  ".join(parts)).rstrip())
    return lines


def plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def iso(value: Optional[datetime]) -> Optional[str]:
    """ISO 8601 in UTC with a ``Z``, as documented for ``--json``."""
    if value is None:
        return None
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def day_iso(value: Optional[str]) -> str:
    return "?" if value is None else value[:10]


def refusal(report: Report, style: Style) -> list[str]:
    """The loader's error in a report (inspect's or probe's), with its fix; none: nothing."""
    error = report["error"]
    if not error:
        return []
    lines = ["", style("red+bold", "Docker would refuse this directory"), f"  {error['message']}"]
    if error["fix"]:
        lines.append(f"  fix: {error['fix']}")
    return lines


def notes_and_near_misses(report: Report, style: Style, heading: str, label: str) -> list[str]:
    """The report's notes, then its near misses under ``heading``, each named by ``label``."""
    lines = [f"  note: {note}" for note in report["notes"]]
    if report["near_misses"]:
        lines += ["", style("bold", heading)]
        for miss in report["near_misses"]:
            lines.append(f"  {style('yellow', miss[label])}: {miss['reason']}")
            lines.append(f"    fix: {miss['fix']}")
    return lines
