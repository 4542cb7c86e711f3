"""The benchmark scripts measure what they say: real stores, the real sink tally, the budget rule."""

from __future__ import annotations

from jobs import bench_store
from jobs.qdrant_sink import WriteTally


def test_store_benchmark_runs_edge_and_reports_every_point(capsys):
    bench_store.main(["--points", "300", "--dim", "16", "--backends", "edge", "--queries", "20", "--limit", "10"])
    table = capsys.readouterr().out
    row = next(line for line in table.splitlines() if line.startswith("| edge | 300 |"))
    assert float(row.split("|")[6]) > 0  # a kNN p50 in ms was measured


def test_a_backend_past_its_budget_is_not_run():
    small = bench_store.Result("local", 1000, upsert_s=10.0, optimize_s=None, reopen_s=0.1, knn_ms=(1, 2),
                               filtered_ms=(1, 2), filtered_hits=10)
    assert bench_store.predicted_build_s([small], "local", 100_000) == 1000.0
    assert bench_store.predicted_build_s([small], "edge", 100_000) is None


def test_steady_rate_leaves_out_the_first_write_and_merges_across_workers():
    first, second = WriteTally(), WriteTally()
    first.first_write, first.last_write, first.first_rows, first.written = 100.0, 101.0, 64, 128
    second.first_write, second.last_write, second.first_rows, second.written = 100.5, 104.0, 64, 64
    merged = WriteTally()
    merged.merge(first.as_dict())
    merged.merge(second.as_dict())
    assert merged.written == 192 and merged.first_rows == 64
    assert merged.steady_rate() == (192 - 64) / (104.0 - 100.0)
