"""500 open event streams on the shipped server: probes stay fast, every stream gets its events."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import pytest

from tests import streams

pytestmark = pytest.mark.integration

STALL_MS = 1000  # what a probe waiting behind the streams would take


def test_500_streams_cost_almost_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with ExitStack() as cleanup:
        figures = streams.run(500, tmp_path, cleanup)
    with capsys.disabled():
        print("\n" + streams.figures_line(figures))
    assert figures["finished"] and figures["complete"] == figures["streams"] == 500
    assert figures["over_cap"] == (429, "5", "too_many_streams")
    assert figures["after_all"] == 200, "the streams' slots were not given back"
    assert not figures["probe_failures"], figures["probe_failures"]
    for path, probe in figures["probes"].items():
        assert probe["n"] >= 50, (path, probe)
        # A stall shows as seconds; the 100 ms target is judged by `make streams` (a shared,
        # loaded machine's p99 is not a test's business: STYLE, speed targets in benchmarks).
        assert probe["p99_ms"] <= STALL_MS, (path, probe)
    # 500 clients connecting at once: a moment's wait at worst (it was the 60 s time-out).
    assert all(probe["max_ms"] <= 2000 for probe in figures["opening"].values()), figures
