"""Watched gauges (retrieval/gauges.py): each refresh sets every series from its reader's current value, a series
whose owner is gone stops, and one failing reader does not stop the others. tests/test_observability.py checks on a
real Ray cluster that a watched series outlives Ray's gauge TTL."""

from __future__ import annotations

import functools
import gc

from retrieval import gauges


class RecordingGauge:
    """Stands in for a Ray gauge: remembers every set."""

    def __init__(self):
        self.sets: list[tuple[float, dict]] = []

    def set(self, value: float, tags: dict) -> None:
        self.sets.append((value, tags))


class Queue:
    def __init__(self, length: int):
        self.length = length

    def waiting(self) -> int:
        return self.length


def test_a_watched_series_is_set_at_once_and_from_the_current_value_at_each_refresh():
    watched, gauge, queue = gauges.Watched(), RecordingGauge(), Queue(3)
    watched.add(gauge, {"kind": "text"}, queue.waiting)
    queue.length = 0
    assert watched.refresh() == 1
    assert gauge.sets == [(3.0, {"kind": "text"}), (0.0, {"kind": "text"})]


def test_a_series_whose_owner_is_gone_is_no_longer_set():
    watched, gauge, kept, dropped = gauges.Watched(), RecordingGauge(), Queue(1), Queue(2)
    watched.add(gauge, {"kind": "image"}, kept.waiting)
    watched.add(gauge, {"kind": "text"}, dropped.waiting)
    del dropped
    gc.collect()
    assert watched.refresh() == 1
    assert gauge.sets[2:] == [(1.0, {"kind": "image"})]
    assert len(watched) == 1


def test_a_reader_of_an_owners_values_stops_with_the_owner():
    """As the fine-tune's gauges: the reader holds a dict, the series lives as long as the object holding it."""

    class Run:
        def __init__(self):
            self.values = {"epoch": 1.0}

    watched, gauge, run = gauges.Watched(), RecordingGauge(), Run()
    watched.add(gauge, {"run": "r"}, functools.partial(run.values.__getitem__, "epoch"), owner=run)
    run.values["epoch"] = 2.0
    assert watched.refresh() == 1
    del run
    gc.collect()
    assert watched.refresh() == 0 and len(watched) == 0
    assert [value for value, _ in gauge.sets] == [1.0, 2.0]


def test_a_failing_reader_does_not_stop_the_others():
    def broken() -> float:
        raise RuntimeError("the run's actor is gone")

    watched, gauge = gauges.Watched(), RecordingGauge()
    watched.add(gauge, {"run": "a"}, broken)
    watched.add(gauge, {"run": "b"}, lambda: 7)
    assert watched.refresh() == 1
    assert gauge.sets == [(7.0, {"run": "b"}), (7.0, {"run": "b"})]


def test_a_series_is_refreshed_more_often_than_ray_exports():
    import ray

    export_s = max(ray._config.metrics_report_interval_ms(), 1000) / 1000
    assert 0 < gauges.refresh_seconds() < export_s
