"""dockercerts benchmarks (issue 6): what the transport costs once warm, and when cold.

Run ``nox -s bench`` or ``python benchmarks/run.py [--quick] [--only SECTION,...]
[--output FILE] [--json FILE]``. The table goes to stdout and ``benchmarks/results.md``. Every
figure is a ratio against a baseline measured in the same run, from medians of interleaved
repetitions (A, B, B, A, ...), because absolute times drift on shared machines.

This script is the entry point only: the sections, the measuring helpers and the report writer
are the ``benchmarks`` package around it (see ``benchmarks/README.md``). Linux only (resident
memory comes from ``/proc/self/status``).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    # Run as a script, Python puts this folder first on sys.path, where the package's module
    # names would stand for top-level ones; the project root instead lets it import as a
    # package, for this process and for every child process started through this script.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

    from benchmarks.main import main

    sys.exit(main())
