"""``python -m dockercerts``: the same command line as the ``dockercerts`` script."""

from __future__ import annotations

from dockercerts.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
