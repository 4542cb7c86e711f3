"""The benchmark scripts measure what they say: real stores, every request counted, ratios of the measured figures,
the peak memory seen, the budget rule."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from bench import indexing as bench_indexing
from bench import serving as bench_serving
from bench import store as bench_store


def table_row(out: str, prefix: str) -> list[str]:
    line = next(line for line in out.splitlines() if line.startswith(prefix))
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def test_store_benchmark_reports_what_the_store_answered_and_its_recall(capsys):
    bench_store.main(["--points", "300", "--dim", "16", "--data", "synthetic", "--configs", "brute", "int8-scan",
                      "--queries", "20", "--limit", "10"])
    out = capsys.readouterr().out
    cells = table_row(out, "| brute | synthetic | 300 |")
    upsert_s, optimize_s, reopen_s, knn50, knn95, filtered50, filtered95, knn_recall, filtered_recall, rss = cells[3:13]
    assert float(upsert_s) >= 0 and optimize_s == "-" and float(reopen_s) > 0  # brute force: nothing to build
    assert 0 < float(knn50) <= float(knn95) and float(filtered50) <= float(filtered95)
    assert knn_recall == filtered_recall == "1.000"  # brute force is exact search: the reference agrees with it
    assert float(rss) > 0 and len(table_row(out, "| int8-scan | synthetic | 300 |")[13].split()) == 3  # load avg


def test_recall_counts_the_exact_neighbours_found_and_skips_queries_with_none():
    data = bench_store.synthetic(50, 8, 4)
    exact = bench_store.exact_top(data, filtered=False, k=10)
    by_numpy = np.argsort(-(data.queries @ data.vectors.T), axis=1)[:, :10]
    assert all(set(a) == set(b) for a, b in zip(exact, by_numpy))
    assert bench_store.recall([list(r) for r in by_numpy], exact) == 1.0
    assert bench_store.recall([list(r[:5]) for r in by_numpy], exact) == 0.5
    nothing = np.full((1, 10), -1)
    assert bench_store.recall([[1, 2], [3]], np.vstack([exact[:1], nothing])) == 0.0  # the empty one is left out


def test_a_configuration_past_its_budget_is_not_run(capsys):
    small = bench_store.StoreBenchResult("brute", "synthetic", 1000, upsert_s=10.0, optimize_s=None, reopen_s=0.1,
                                         knn_ms=(1, 2), filtered_ms=(1, 2), filtered_hits=10)
    assert bench_store.predicted_build_s([small], "brute", "synthetic", 100_000) == 1000.0
    assert bench_store.predicted_build_s([small], "int8", "synthetic", 100_000) is None
    bench_store.main(["--points", "200", "4000", "--dim", "8", "--data", "synthetic", "--configs", "brute",
                      "--queries", "10", "--budget-s", "1e-6"])
    out = capsys.readouterr().out
    assert "| brute | synthetic | 200 |" in out and "| brute | synthetic | 4000 |" not in out
    assert "brute on synthetic at 4000 points: not run" in out


class _SlowSearch(BaseHTTPRequestHandler):
    """Answers POST /search after DELAY_S: 200 for a body with "text" (saying, as the service does, that its search
    took DELAY_S), 400 otherwise; records every body."""

    DELAY_S = 0.005
    seen: list[dict] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen.append(body)
        time.sleep(self.DELAY_S)
        status = 200 if "text" in body else 400
        answer = json.dumps({"timings_ms": {"parse_ms": 0.0, "total_ms": self.DELAY_S * 1000}}).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def slow_server():
    _SlowSearch.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SlowSearch)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", _SlowSearch.seen
    finally:
        server.shutdown()
        server.server_close()


def test_the_serving_load_counts_every_request_and_error_it_made():
    bodies = [{"text": "a"}, {"text": "b"}, {"image": "x"}]  # one body in three is refused
    with slow_server() as (url, seen):
        one = asyncio.run(bench_serving.load(url, bodies, concurrency=1, seconds=60, max_requests=30))
        assert one["requests"] == len(seen) == 30 and one["errors"] == 10
        several = asyncio.run(bench_serving.load(url, bodies, concurrency=4, seconds=0.5, max_requests=10**6))
        assert several["requests"] == len(seen) - 30 > 4
    for result in (one, several):
        assert _SlowSearch.DELAY_S * 1000 <= result["p50"] <= result["p95"] <= result["p99"]
    # One client waits for each answer: 20 answered in at least 30 x 5 ms.
    assert 0 < one["rps"] <= 20 / (30 * _SlowSearch.DELAY_S)


def test_the_time_outside_the_search_is_each_latency_less_the_replicas_own_account():
    with slow_server() as (url, _):
        result = asyncio.run(bench_serving.load(url, [{"text": "a"}], concurrency=1, seconds=60, max_requests=20,
                                                around=True))
    assert len(result["around_ms"]) == 20
    assert np.allclose(np.subtract(result["ms"], result["around_ms"]), _SlowSearch.DELAY_S * 1000)
    assert min(result["around_ms"]) > 0  # the HTTP round trip itself


def test_an_answer_from_the_result_cache_is_all_serving():
    assert bench_serving.replica_search_ms({"total_ms": 0.4}) == 0.0
    assert bench_serving.replica_search_ms({"parse_ms": 0.5, "encode_ms": 3.0, "total_ms": 6.0}) == 5.5


def test_the_overhead_interval_brackets_the_true_gap_and_narrows_with_more_searches():
    rng = np.random.default_rng(1)
    widths = []
    for n in (50, 2000):
        low, high = bench_serving.median_gap(list(rng.normal(10, 1, n)), list(rng.normal(7, 1, n)))
        assert low < 3.0 < high
        widths.append(high - low)
    assert widths[1] < widths[0] / 3


def test_the_new_queries_at_one_client_are_new_to_every_other_load_and_the_same_each_run():
    from bench.common import WORDS

    shoppers = bench_serving.shopper_phrases(2)
    alone = bench_serving.new_queries(20, shoppers)
    words = [q["text"] for q in alone[bench_serving.UNIQUE]]
    zipf, many = shoppers
    assert len(words) == len(set(words)) == 20 + bench_serving.WARM_UP
    assert not set(words) & (set(zipf) | set(many) | set(WORDS))
    assert alone == bench_serving.new_queries(20, bench_serving.shopper_phrases(2))


def test_loads_in_turns_join_as_one():
    turns = [{"ms": [1.0, 3.0], "around_ms": [0.5, 0.5], "errors": 1, "requests": 3, "seconds": 1.0,
              "client_cpu_ms": 0.2},
             {"ms": [2.0], "around_ms": [0.7], "errors": 0, "requests": 1, "seconds": 1.0, "client_cpu_ms": 0.6}]
    joined = bench_serving.joined(turns)
    assert joined["ms"] == [1.0, 3.0, 2.0] and joined["around_ms"] == [0.5, 0.5, 0.7] and joined["p50"] == 2.0
    assert joined["errors"] == 1 and joined["requests"] == 4 and joined["rps"] == 1.5
    assert joined["client_cpu_ms"] == (0.2 * 3 + 0.6) / 4


def test_index_table_ratios_are_the_measured_rates_divided(capsys):
    row = bench_indexing.Row("offline", "224", ceiling=200.0, pipeline=150.0, end_to_end=60.0, naive=50.0,
                             peak_gb=3.25)
    bench_indexing.print_table([row])
    cells = table_row(capsys.readouterr().out, "| offline | 224 |")
    assert [float(c) for c in cells[2:]] == [200.0, 150.0, 60.0, 50.0, 0.75, 3.0, 3.25]


def test_peak_memory_sees_an_allocation():
    with bench_indexing.PeakMemory(interval_s=0.01, ray_workers=False) as before:
        time.sleep(0.05)
    with bench_indexing.PeakMemory(interval_s=0.01, ray_workers=False) as during:
        block = np.ones(256 * 2**20, dtype=np.uint8)  # written, so every page is resident
        time.sleep(0.1)
        del block
    assert during.peak - before.peak >= 200 * 2**20

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


def test_the_shopper_word_loads_are_seeded_zipf_headed_and_unique():
    from bench.query_load import ZIPF_POOL, distinct_share, phrases, unique_words, zipf_words

    assert len(set(phrases())) == len(phrases())
    zipf = zipf_words(5000, seed=3)
    assert zipf == zipf_words(5000, seed=3) and zipf != zipf_words(5000, seed=4)
    counts = sorted(Counter(zipf).values(), reverse=True)
    assert len(counts) <= ZIPF_POOL and counts[0] > 20 * counts[len(counts) // 2]  # a head, then a long tail
    assert 0.05 < distinct_share(zipf) < 0.3
    unique = unique_words(3000, seed=2, excluding=set(zipf))
    assert unique == unique_words(3000, seed=2, excluding=set(zipf)) and len(set(unique)) == 3000
    assert not set(unique) & set(zipf) and distinct_share(unique) == 1.0


def test_unique_queries_repeat_nothing_and_are_seeded():
    from bench.common import PHOTOS, photo_bytes
    from bench.query_load import unique_kinds

    kinds = unique_kinds(20, seed=1)
    assert kinds == unique_kinds(20, seed=1)
    photos = [q["image"] for kind in ("image unique", "image+text unique") for q in kinds[kind]]
    assert len(set(photos)) == 40 and not set(photos) & set(photo_bytes()) and len(PHOTOS) == 8
    assert len({q["text"] for q in kinds["text unique"]}) == 20


def test_the_idle_floor_takes_each_handlers_own_wait_out_of_its_latency(capsys):
    """The plain stack end to end (no Ray): every stack and wait measured, and what is left of a 10 ms wait is the
    time outside it; the bench refuses a run past its bound."""
    from bench import idle_floor

    url, server = idle_floor.start_uvicorn()
    try:
        asyncio.run(idle_floor.ready(url, 60))
        p50s = asyncio.run(idle_floor.measure({"plain": url}, requests=5, rounds=2))
    finally:
        idle_floor.stop(server)
    assert not server.is_alive()
    assert set(p50s) == {("plain", wait) for wait in idle_floor.WAITS_MS}
    assert all(len(rounds) == 2 and all(0 < p50 < max(idle_floor.WAITS_MS) for p50 in rounds)
               for rounds in p50s.values())
    idle_floor.report(p50s, ["plain"])
    assert len(table_row(capsys.readouterr().out, "| plain |")) == len(idle_floor.WAITS_MS) + 2
    assert idle_floor.main(["--requests", "5000"]) == 2
    assert idle_floor.main(["--requests", "-1", "--rounds", "-1"]) == 2
