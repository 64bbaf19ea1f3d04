"""The registry: every section, in the order a run measures them (the micro-benchmarks first).

The report orders them by figure number instead. A new section is a module here with a
``SECTION`` and one line below.
"""

from __future__ import annotations

from typing import Any

from ..section import Section
from . import (
    anchors,
    canames,
    change,
    cold,
    concurrency,
    context,
    denied,
    handshakes,
    memory,
    requests_adapter,
    routing,
    scale,
    steady,
    wrapper,
)

REGISTRY: tuple[Section[Any, Any], ...] = (
    wrapper.SECTION,
    routing.SECTION,
    change.SECTION,
    context.SECTION,
    steady.SECTION,
    handshakes.SECTION,
    concurrency.SECTION,
    denied.SECTION,
    canames.SECTION,
    cold.SECTION,
    memory.SECTION,
    scale.SECTION,
    anchors.SECTION,
    requests_adapter.SECTION,
)
SECTIONS = {section.name: section for section in REGISTRY}
