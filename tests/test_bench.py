"""The benchmark scripts measure what they say: real stores, the budget rule."""

from __future__ import annotations

from bench import store as bench_store


def test_store_benchmark_runs_edge_and_reports_every_point(capsys):
    bench_store.main(["--points", "300", "--dim", "16", "--backends", "edge", "--queries", "20", "--limit", "10"])
    table = capsys.readouterr().out
    row = next(line for line in table.splitlines() if line.startswith("| edge | 300 |"))
    assert float(row.split("|")[6]) > 0  # a kNN p50 in ms was measured


def test_a_backend_past_its_budget_is_not_run(capsys):
    small = bench_store.Result("local", 1000, upsert_s=10.0, optimize_s=None, reopen_s=0.1, knn_ms=(1, 2),
                               filtered_ms=(1, 2), filtered_hits=10)
    assert bench_store.predicted_build_s([small], "local", 100_000) == 1000.0
    assert bench_store.predicted_build_s([small], "edge", 100_000) is None
    bench_store.main(["--points", "200", "4000", "--dim", "8", "--backends", "edge", "--queries", "10",
                      "--budget-s", "1e-6"])
    out = capsys.readouterr().out
    assert "| edge | 200 |" in out and "| edge | 4000 |" not in out
    assert "edge at 4000 points: not run" in out



def test_slow_clients_stays_on_loopback_and_within_its_bounds(capsys):
    from bench import slow_clients

    assert slow_clients.main(["--url", "http://10.0.0.1:8000"]) == 2
    assert slow_clients.main(["--url", "http://127.0.0.1:8000", "--stalled", "100000"]) == 2
    assert "127.0.0.1" in capsys.readouterr().err


def test_a_stalled_connection_is_timed_to_its_answer_and_its_close():
    """Against a stand-in server that answers a stalled body after 0.2 s and closes 0.2 s later."""
    import asyncio
    import time

    from bench import slow_clients

    async def stand_in(reader, writer):
        await reader.readuntil(b'{"text"')
        await asyncio.sleep(0.2)
        writer.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\n\r\n")
        await asyncio.sleep(0.2)
        writer.close()

    async def run() -> list:
        server = await asyncio.start_server(stand_in, "127.0.0.1", 0)
        held: list = []
        async with server:
            await slow_clients.stall("127.0.0.1", server.sockets[0].getsockname()[1], time.monotonic() + 0.6, held)
        return held

    held = asyncio.run(run())
    answered, closed, status = held[0]
    assert status == "HTTP/1.1 408 Request Timeout" and 0.2 <= answered < 0.35 and 0.4 <= closed < 0.6
    assert held[-1][2] in ("open", "HTTP/1.1 408 Request Timeout")  # the last one may outlive the run
