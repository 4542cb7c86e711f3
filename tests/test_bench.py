"""The benchmark scripts measure what they say: real stores, the budget rule."""

from __future__ import annotations

from bench import store as bench_store


def test_store_benchmark_runs_edge_and_reports_every_point(capsys):
    bench_store.main(["--points", "300", "--dim", "16", "--backends", "edge", "--queries", "20", "--limit", "10"])
    table = capsys.readouterr().out
    row = next(line for line in table.splitlines() if line.startswith("| edge | 300 |"))
    assert float(row.split("|")[6]) > 0  # a kNN p50 in ms was measured


def test_a_backend_past_its_budget_is_not_run(capsys):
    small = bench_store.StoreBenchResult("local", 1000, upsert_s=10.0, optimize_s=None, reopen_s=0.1, knn_ms=(1, 2),
                               filtered_ms=(1, 2), filtered_hits=10)
    assert bench_store.predicted_build_s([small], "local", 100_000) == 1000.0
    assert bench_store.predicted_build_s([small], "edge", 100_000) is None
    bench_store.main(["--points", "200", "4000", "--dim", "8", "--backends", "edge", "--queries", "10",
                      "--budget-s", "1e-6"])
    out = capsys.readouterr().out
    assert "| edge | 200 |" in out and "| edge | 4000 |" not in out
    assert "edge at 4000 points: not run" in out

