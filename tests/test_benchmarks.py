"""The benchmarks' arithmetic: how the steady state's rounds from several processes become
its figures (the measuring itself runs in ``nox -s bench``, not here)."""

from __future__ import annotations

import json
import statistics
from typing import Any

import pytest

from benchmarks.measure import SLICE_REQUESTS, Rounds, slices, throughput
from benchmarks.section import Results
from benchmarks.sections import requests_adapter
from benchmarks.sections import steady as steady_section
from benchmarks.sections.steady import Knobs, Steady, SteadyMode, plan, pooled
from benchmarks.typed import from_json, to_json

N = 100  # requests a round


def _rounds(bare: list[float], wrapped: list[float]) -> Rounds:
    """Rounds whose per-round ratio (bare / wrapped) is known; control = bare, CPU = wall."""
    return Rounds(wrapped, bare, list(bare), list(wrapped), list(bare))


def _process(rounds: Rounds, connections: int) -> Steady:
    counts = {"dockercerts": connections, "bare": 0, "control": 0}
    return Steady(requests=N, rounds=len(rounds.bare), modes={"sync": SteadyMode(rounds, counts)})


def test_slices_add_up_to_rounds() -> None:
    times = [float(i) for i in range(6)]
    rounds = Rounds.of_slices(times, times, times, times, times, per_round=3)
    assert rounds.wrapped == [0 + 1 + 2, 3 + 4 + 5]
    assert rounds.cpu_bare == [3.0, 12.0]


def test_a_round_is_whole_slices() -> None:
    assert slices(2000, "sync") == 2000 // SLICE_REQUESTS["sync"]
    assert slices(500, "64 tasks") == 1
    with pytest.raises(ValueError, match="8 threads: 150 requests"):
        slices(150, "8 threads")


def test_the_figure_is_the_median_of_every_process_round() -> None:
    # Process 1's rounds are all slow, process 2's all fast: each alone is one draw.
    slow = _rounds(bare=[1.0, 1.0, 1.0], wrapped=[1.10, 1.08, 1.06])
    fast = _rounds(bare=[1.0, 1.0, 1.0], wrapped=[0.99, 1.01, 1.02])
    results = Results()
    for number, process in enumerate((_process(slow, 1), _process(fast, 2)), 1):
        results.add(f"process {number}", process)

    figures = pooled(results)

    assert figures is not None
    assert (figures.processes, figures.rounds, figures.requests) == (2, 6, N)
    sync = figures.modes["sync"]
    every_ratio = [1 / w for w in slow.wrapped + fast.wrapped]
    assert sync.throughput.throughput_ratio == statistics.median(every_ratio)
    assert sync.per_process == [
        statistics.median([1 / w for w in slow.wrapped]),
        statistics.median([1 / w for w in fast.wrapped]),
    ]
    assert sync.throughput.ratio_min == min(every_ratio)
    assert sync.new_connections == {"dockercerts": 3, "bare": 0, "control": 0}


def test_pooling_one_process_gives_its_own_figures() -> None:
    rounds = _rounds(bare=[1.0, 2.0, 3.0], wrapped=[1.1, 2.0, 2.9])
    results = Results()
    results.add("process 1", _process(rounds, 0))
    figures = pooled(results)
    assert figures is not None
    assert figures.modes["sync"].throughput == throughput(rounds, N)


def test_no_process_no_figures() -> None:
    assert pooled(Results()) is None


def test_a_process_result_crosses_the_process_boundary() -> None:
    process = _process(_rounds(bare=[1.0, 2.0], wrapped=[1.5, 2.5]), 4)
    assert from_json(Steady, json.loads(json.dumps(to_json(process)))) == process


def test_the_section_plans_one_run_per_process() -> None:
    runs = plan(Knobs(requests=N, rounds=3, processes=4))
    assert [run.key for run in runs] == [f"process {i}" for i in range(1, 5)]
    assert all(run.knobs.rounds == 3 for run in runs)


@pytest.mark.parametrize(
    ("section", "modes"),
    [
        (steady_section.SECTION, tuple(SLICE_REQUESTS)),
        (requests_adapter.SECTION, ("sync", "8 threads")),
    ],
)
def test_every_keep_alive_mode_makes_whole_slices(section: Any, modes: tuple[str, ...]) -> None:
    for knobs in (section.full, section.quick):
        for mode in modes:
            assert slices(knobs.requests, mode) >= 1
