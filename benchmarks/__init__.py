"""dockercerts benchmarks (issue 6): what the transport costs once warm, and when cold.

Run ``nox -s bench`` or ``python benchmarks/run.py [--quick] [--only SECTION,...]``; the
layout of this package and how to add a section are in ``benchmarks/README.md``.
"""

from __future__ import annotations

from pathlib import Path

# Every child process (a section, a server) is started through the same script, so that it
# finds this package the way the parent did.
ENTRY = Path(__file__).resolve().parent / "run.py"
RESULTS = ENTRY.parent / "results.md"
