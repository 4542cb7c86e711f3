"""The index job on real Ray: salted catalog, idempotent reruns, generations, and the whole offline catalog."""

from __future__ import annotations

import csv

import pytest

from bench.resume import kill_shard_holders, run_killed
from jobs import index, indexer
from retrieval.store.factory import open_store
from retrieval.store.base import point_id
from tests.conftest import index_config
from tests.salted import EXPECTED, GOOD_IDS

pytestmark = pytest.mark.ray


def run_index(catalog, model_spec, store_path, **overrides):
    cfg = index_config(catalog, model_spec, store_path, **overrides)
    return cfg, indexer.run(cfg)


def test_salted_catalog_indexes_good_files_and_reports_bad_ones(ray_cluster, salted_catalog, model_spec, tmp_path):
    cfg, summary = run_index(salted_catalog, model_spec, tmp_path / "store", max_skip_fraction=0.5)
    good = len(GOOD_IDS) + sum(1 for r in EXPECTED.values() if r is None)
    assert summary["read"] == len(GOOD_IDS) + len(EXPECTED)
    assert summary["indexed"] == good == summary["points_in_collection"]
    assert summary["skipped"] == {reason: 1 for reason in EXPECTED.values() if reason}
    assert summary["alias_switched"] and summary["images_per_s"] > 0
    with open_store(cfg.store) as store:
        hits = store.retrieve(summary["collection"], ["exif-rotated", "cmyk", "zero-byte"])
        assert sorted(h.item_id for h in hits) == ["cmyk", "exif-rotated"]


def test_too_many_bad_files_fail_the_run_without_switching(ray_cluster, salted_catalog, model_spec, tmp_path):
    cfg, summary = run_index(salted_catalog, model_spec, tmp_path / "store", max_skip_fraction=0.1)
    assert not summary["acceptable"] and not summary["alias_switched"]
    assert index.main(["--catalog", str(salted_catalog), "--model", model_spec, "--store-path",
                       str(tmp_path / "store2"), "--max-skip-fraction", "0.1", "--encode-cpus", "0.5"]) == 1


def test_mismatched_model_is_refused(ray_cluster, salted_catalog, model_spec, tmp_path):
    from retrieval.store.base import CollectionMismatch

    store_path = tmp_path / "store"
    run_index(salted_catalog, model_spec, store_path, max_skip_fraction=0.5, limit=4)
    with pytest.raises(CollectionMismatch, match="--rebuild"):
        run_index(salted_catalog, model_spec, store_path, letterbox=True, limit=4)


def test_segmentation_stage_in_the_job(ray_cluster, salted_catalog, model_spec, tmp_path):
    """--segment u2netp runs as its own actor pool; crops land in the payload, the collection records it."""
    cfg, summary = run_index(salted_catalog, model_spec, tmp_path / "store", limit=4, segment="u2netp",
                             segment_cpus=0.5)
    assert summary["indexed"] == 4 and summary["skipped"] == {}
    with open_store(cfg.store) as store:
        hits = store.retrieve(summary["collection"], GOOD_IDS[:4], with_vectors=False)
        assert len(hits) == 4 and all(len(h.payload["crop_box"]) == 4 for h in hits)
        assert store.collection_spec(summary["collection"]).segmentation == "u2netp"


@pytest.mark.slow
def test_full_offline_catalog_every_id_once_and_rerun_is_idempotent(full_index, offline_catalog, model_spec):
    ids = [row["id"] for row in csv.DictReader((offline_catalog / "catalog.csv").open())]
    cfg, first = full_index
    assert first["skipped"] == {} and first["indexed"] == len(ids) == first["points_in_collection"]
    _, second = run_index(offline_catalog, model_spec, cfg.store.path, encode_cpus=1, limit=300)
    assert second["collection"] == first["collection"] and second["points_in_collection"] == len(ids)
    with open_store(cfg.store) as store:
        found = store.retrieve(first["collection"], ids)
        assert sorted(h.item_id for h in found) == sorted(ids)  # every id exactly once
        assert len({point_id(i) for i in ids}) == len(ids)
    print(f"\nfull offline catalog: {first['indexed']} images in {first['wall_s']} s "
          f"= {first['images_per_s']} images/s")


def test_a_killed_rebuild_is_resumed_and_the_alias_never_sees_it(ray_cluster, offline_catalog, model_spec, tmp_path):
    """kill -9 a rebuild a quarter of the way, rerun the same command: the alias stayed on the last complete
    generation throughout; the rerun continues the unfinished one, re-encodes only what was not written, and ends
    with exactly the catalog slice; the previous generation is kept as the rollback target."""
    import sys

    store, n = tmp_path / "store", 2000
    first_cfg, first = run_index(offline_catalog, model_spec, store, limit=300)
    argv = [sys.executable, "-m", "jobs.index", "--catalog", str(offline_catalog), "--model", model_spec,
            "--store-path", str(store), "--rebuild", "--limit", str(n), "--encode-cpus", "0.5",
            "--batch-size", "16", "--progress-every-s", "0.5"]
    killed_at = run_killed(argv, 0.25)
    assert n // 4 <= killed_at < n, killed_at
    kill_shard_holders(store)  # its Ray workers run in sessions of their own: the crash takes them too
    # The alias stayed on the last complete generation; the dead run's is marked partial.
    with open_store(first_cfg.store) as opened:
        assert opened.resolve_alias(first_cfg.collection) == first["collection"]
        (partial,) = [c for c in opened.list_collections() if c != first["collection"]]
        assert not opened.collection_spec(partial).complete
    _, second = run_index(offline_catalog, model_spec, store, limit=n, rebuild=True)
    assert second["resumed"] and second["already_in_collection"] >= killed_at
    assert second["indexed"] == n - second["already_in_collection"]  # only what the killed run had not written
    assert second["points_in_collection"] == n and second["alias_switched"]
    with open_store(first_cfg.store) as opened:
        assert first["collection"] in opened.list_collections()  # the rollback target was kept
        assert opened.collection_spec(second["collection"]).complete
