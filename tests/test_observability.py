"""What an operator sees: the service's metrics on Ray's Prometheus port move by exactly a known mix of searches,
with the right labels; every response carries a request id; the Grafana dashboard queries only metrics that a
running service and an index run export; the Prometheus config parses."""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
import yaml

from retrieval import strategies
from tests.conftest import index_config, served

pytestmark = [pytest.mark.ray, pytest.mark.e2e]
ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "cluster" / "grafana" / "fashion-search.json"
SAMPLE = re.compile(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def scrape(url: str) -> list[tuple[str, dict, float]]:
    samples = []
    for line in httpx.get(url, timeout=10).text.splitlines():
        match = SAMPLE.match(line)
        if match and not line.startswith("#"):
            samples.append((match[1], dict(LABEL.findall(match[2] or "")), float(match[3])))
    return samples


def total(samples, name: str, **labels) -> float:
    return sum(v for n, tags, v in samples if n == name and all(tags.get(k) == w for k, w in labels.items()))


@pytest.fixture(scope="module")
def service(ray_cluster, small_index, model_spec):
    from serve.app import build_app

    app = build_app({"model": model_spec, "store_path": small_index.store.path, "encoder_cpus": 0.25,
                     "max_upload_bytes": 1_000_000})
    with served(app, name="observed", route_prefix="/") as client:
        yield client


def wait_for(url: str, check, seconds: float = 90) -> list:
    """Ray's agents export every ~10 s: scrape until `check(samples)` holds (bounded)."""
    deadline = time.monotonic() + seconds
    while True:
        samples = scrape(url)
        if check(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(2)


DEFAULT = strategies.defaults()
MIX = [  # (request, status, mode, strategy or rejection reason)
    ({"json": {"text": "blue jeans"}}, 200, "text", DEFAULT["text"]),
    ({"json": {"text": "red tshirt", "k": 3}}, 200, "text", DEFAULT["text"]),
    ({"json": {"text": "white shoes"}}, 200, "text", DEFAULT["text"]),
    ({"json": {"item_id": "10003", "text": "but red"}}, 200, "image+text", DEFAULT["image+text"]),
    ({"json": {"text": "red", "filters": {"colour": "Red"}}}, 422, "text", "unknown_filter"),
    ({"files": {"image": ("x.jpg", b"not a photo", "image/jpeg")}}, 400, "image", "undecodable_image"),
    ({"content": b"\x00" * 1_100_000, "headers": {"content-type": "application/json"}}, 413, "unknown", "too_large"),
    ({"path": "/recommend", "json": {"liked": ["10003", "10005"], "disliked": ["10004"]}}, 200, "recommend",
     "best_score"),
    ({"path": "/recommend", "json": {"liked": ["no-such-item"]}}, 404, "recommend", "unknown_item"),
]


def test_metrics_move_by_exactly_the_mix_of_searches_and_recommendations(service, metrics_port):
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    before = scrape(url)
    for request, status, _, _ in MIX:
        path = request.get("path", "/search")  # recommendations are counted like searches, by their mode
        response = service.post(path, **{k: v for k, v in request.items() if k != "path"})
        assert response.status_code == status, response.text
    answered = Counter((mode, label, str(status)) for _, status, mode, label in MIX if status == 200)
    refused = Counter(label for _, status, _, label in MIX if status != 200)
    name = "ray_fashion_search_requests_total"
    requests = lambda s: total(s, name) - total(before, name)  # noqa: E731
    after = wait_for(url, lambda s: requests(s) >= len(MIX))
    assert requests(after) == len(MIX)
    for (mode, strategy, status), count in answered.items():
        tags = {"mode": mode, "strategy": strategy, "status": status, "deployment": "SearchAPI"}
        assert total(after, "ray_fashion_search_requests_total", **tags) - \
            total(before, "ray_fashion_search_requests_total", **tags) == count, tags
    for reason, count in refused.items():
        assert total(after, "ray_fashion_search_rejected_total", reason=reason) - \
            total(before, "ray_fashion_search_rejected_total", reason=reason) == count, reason
    answered_total = sum(answered.values())
    totals = total(after, "ray_fashion_search_stage_seconds_count", stage="total") - \
        total(before, "ray_fashion_search_stage_seconds_count", stage="total")
    assert totals == answered_total  # one observation per answered search
    delta = lambda name: total(after, name, kind="text") - total(before, name, kind="text")  # noqa: E731
    encoded, batches = delta("ray_fashion_encoder_requests_total"), delta("ray_fashion_encoder_batch_size_count")
    assert encoded >= 4 and encoded == batches  # one client, one request at a time: every batch holds one
    lookups = lambda kind: sum(total(after, "ray_fashion_query_cache_total", kind=kind, result=r)  # noqa: E731
                               - total(before, "ray_fashion_query_cache_total", kind=kind, result=r)
                               for r in ("hit", "miss"))
    # The cache is asked once per encoded part: the four answered searches' words, the undecodable photo (a miss
    # that is not kept); the refused filter and the oversized body end before it.
    assert (lookups("text"), lookups("image")) == (4, 1)


def test_every_response_carries_one_request_id(service):
    mine = service.post("/search", json={"text": "blue jeans"}, headers={"X-Request-ID": "trace-42"})
    assert mine.headers.get_list("x-request-id") == ["trace-42"]
    for response in (service.get("/healthz"), service.post("/search", json={})):
        (generated,) = response.headers.get_list("x-request-id")
        assert len(generated) >= 8


def dashboard_metrics() -> set[str]:
    exprs = [t["expr"] for panel in json.loads(DASHBOARD.read_text())["panels"] for t in panel["targets"]]
    names = {n for e in exprs for n in re.findall(r"\b(ray_[a-z_]+)", e)}
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}


def test_the_dashboard_queries_only_exported_metrics(service, metrics_port, ray_cluster, offline_catalog,
                                                     model_spec, tmp_path):
    """A search and an index run in this Ray session, then every metric the dashboard queries is on the port."""
    from jobs import indexer

    url, wanted = f"http://127.0.0.1:{metrics_port}/metrics", dashboard_metrics()
    assert {"ray_fashion_search_requests_total", "ray_fashion_index_items_total"} <= wanted
    # Words not searched before: the model runs (a cached phrase never reaches the encoder's batch metrics).
    service.post("/search", json={"text": "olive track pants for the dashboard"})
    run = threading.Thread(target=indexer.run, args=(index_config(offline_catalog, model_spec, tmp_path / "store",
                                                                  limit=1200),))
    run.start()
    exported = lambda s: {re.sub(r"_(bucket|sum|count)$", "", n) for n, _, _ in s}  # noqa: E731
    try:
        samples = wait_for(url, lambda s: wanted <= exported(s), seconds=120)
    finally:
        run.join(timeout=600)
    assert wanted <= exported(samples), sorted(wanted - exported(samples))


def test_a_watched_gauge_outlives_rays_gauge_ttl(service, metrics_port, ray_cluster):
    """Ray drops a gauge series ~20 s after its last set: one set once vanishes, a watched one stays, and so does
    the idle service's encoder queue (0 while nothing waits), which no batch has set within that time."""
    url = f"http://127.0.0.1:{metrics_port}/metrics"

    @ray_cluster.remote(num_cpus=0)
    class Reporter:
        def __init__(self):
            from ray.util import metrics

            from retrieval import gauges

            metrics.Gauge("fashion_probe_set_once").set(1)
            gauges.watch(metrics.Gauge("fashion_probe_watched"), {}, lambda: 2)

        def ready(self) -> bool:
            return True

    reporter = Reporter.remote()
    names = lambda s: {n for n, _, _ in s}  # noqa: E731
    try:
        ray_cluster.get(reporter.ready.remote())
        seen = wait_for(url, lambda s: "ray_fashion_probe_set_once" in names(s), seconds=60)
        assert {"ray_fashion_probe_set_once", "ray_fashion_probe_watched"} <= names(seen)
        gone = wait_for(url, lambda s: "ray_fashion_probe_set_once" not in names(s), seconds=90)
    finally:
        ray_cluster.kill(reporter)
    assert "ray_fashion_probe_set_once" not in names(gone)  # the TTL this test is about did pass
    assert "ray_fashion_probe_watched" in names(gone)
    queue = [(tags, v) for n, tags, v in gone if n == "ray_fashion_encoder_queue_length"]
    assert {tags["kind"] for tags, _ in queue} == {"image", "text"} and all(v == 0 for _, v in queue), queue


def test_the_prometheus_config_points_at_rays_discovery_file():
    config = yaml.safe_load((ROOT / "cluster" / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["ray"]["file_sd_configs"][0]["files"] == ["/tmp/ray/prom_metrics_service_discovery.json"]
    # make serve starts Ray without the dashboard that writes that file: its own port is scraped directly
    port = re.search(r"^METRICS_PORT \?= (\d+)$", (ROOT / "Makefile").read_text(), re.MULTILINE).group(1)
    assert jobs["serve-local"]["static_configs"][0]["targets"] == [f"127.0.0.1:{port}"]
    assert jobs["kubernetes-pods"]["relabel_configs"][0]["regex"] == "true"
