"""What a section is: its knobs, its runs (child processes), its typed result, and the rows and
details it adds to the report.

A section module defines its knobs (a frozen dataclass of counts and rounds, one value for a
full run and one for ``--quick``), a ``measure(knobs) -> Result`` that runs in a child process,
and ``rows(results)`` / ``details(results)`` that turn the results of every run into report
lines; it ends with ``SECTION = Section(...)``, which ``benchmarks/sections/__init__.py`` lists.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Callable, Generic, Optional, TypeVar

K = TypeVar("K")  # a section's knobs
R = TypeVar("R")  # what one run of a section returns
T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Row:
    """One figure of the summary table; ``why`` goes to the list under it."""

    figure: str
    value: str
    target: str
    verdict: str
    note: str = ""
    why: str = ""


@dataclasses.dataclass(frozen=True)
class Run(Generic[K]):
    """One child process of a section.

    ``key`` names the run among the section's others (``None``: the section's only run);
    ``env`` is the trust setup of the child's environment (see ``trust_env.ssl_env``; ``None``:
    this process's environment as it is); ``note`` is logged before the run starts.
    """

    knobs: K
    key: Optional[str] = None
    env: Optional[str] = None
    note: str = ""


@dataclasses.dataclass(frozen=True)
class Failure:
    """A run that gave no result: its process failed or overran."""

    error: str


class Results:
    """The results of the runs that succeeded, found by their type: a section reads its own,
    and another's where one of its figures needs it (the steady state's cost per request, say).
    """

    def __init__(self) -> None:
        self._runs: list[tuple[str, object]] = []

    def add(self, key: Optional[str], result: object) -> None:
        self._runs.append((key or "", result))

    def one(self, kind: type[T]) -> Optional[T]:
        """The result of a section that runs once; ``None`` if it did not run or failed."""
        return next((result for _, result in self._runs if isinstance(result, kind)), None)

    def runs(self, kind: type[T]) -> dict[str, T]:
        """The results of a section that runs several times, by run key, in run order."""
        return {key: result for key, result in self._runs if isinstance(result, kind)}


def no_details(results: Results) -> list[str]:
    return []


@dataclasses.dataclass(frozen=True)
class Section(Generic[K, R]):
    """A section: ``name`` is what ``--only`` takes; ``number`` is its figures' number in the
    report ("1", "1b", "2", ...), which orders the table and the details."""

    name: str
    number: str
    result: type[R]
    full: K
    quick: K
    measure: Callable[[K], R]
    rows: Callable[[Results], list[Row]]
    details: Callable[[Results], list[str]] = no_details
    # One run with the knobs as they are, unless the section plans several.
    runs: Optional[Callable[[K], list[Run[K]]]] = None

    def plan(self, quick: bool) -> list[Run[K]]:
        knobs = self.quick if quick else self.full
        return [Run(knobs)] if self.runs is None else self.runs(knobs)

    def order(self) -> tuple[int, str]:
        number = re.fullmatch(r"(\d+)([a-z]*)", self.number)
        if number is None:
            raise ValueError(f"section {self.name}: figure number {self.number!r}")
        return int(number[1]), number[2]
