"""The fine-tune job's configuration: the catalog and its split, the base model, the training recipe and where the
run keeps its checkpoints. Fields named as settings (catalog, model, letterbox, ...) take the settings' values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from retrieval import splits
from schemas.catalog import CatalogRef
from schemas.settings import PROJECT_ROOT, Settings, get_settings


class FinetuneConfig(BaseModel):
    """One fine-tune run; build it with `from_settings` (the settings fill the fields they declare)."""

    catalog: CatalogRef
    catalog_format: str
    text_fields: tuple[str, ...] | None = Field(None, description="CSV columns that make an item's document "
                                                                  "(as the index job reads them)")
    model: str = Field(description="the base model spec (or, with --from-scratch, an architecture name)")
    from_scratch: bool = Field(False, description="random weights of the named architecture (e.g. "
                                                  "fashion-clip-mini, the offline model's) instead of its weights")
    out: Path = Field(PROJECT_ROOT / "var" / "models" / "finetuned",
                      description="the model folder to write (load it as local-dir:OUT)")
    split_file: Path | None = Field(None, description="JSON with test_ids, the held-out items (default: a hash of "
                                                      "each item's product group, as jobs.make_queries holds out)")
    held_out_fraction: float = Field(splits.HELD_OUT_FRACTION, gt=0, lt=1,
                                     description="without --split-file, the share of product groups held out")
    epochs: int = Field(5, gt=0)
    batch_size: int = Field(128, gt=1, description="pairs per worker and step (every worker's are negatives)")
    lr: float = Field(1e-4, gt=0, description="peak learning rate (AdamW)")
    weight_decay: float = Field(0.1, ge=0)
    warmup: float = Field(0.1, ge=0, lt=1, description="share of the steps spent warming the learning rate up")
    lock_image: bool = Field(False, description="freeze the image tower (LiT) but its last --unlocked-image-groups")
    lock_text: bool = Field(False, description="freeze the text tower but its last --unlocked-text-layers")
    unlocked_image_groups: int = Field(0, ge=0)
    unlocked_text_layers: int = Field(0, ge=0)
    workers: int = Field(1, gt=0, description="data-parallel training workers (one per GPU on a GPU cluster)")
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus: str = Field("auto", description="auto (one per worker when the cluster has GPUs), 0 or 1")
    threads: int | None = Field(None, ge=1, description="torch threads per worker (default: the machine's cores "
                                                        "shared among the workers)")
    limit: int | None = Field(None, gt=0, description="only the first N catalog items")
    storage_path: Path = Field(PROJECT_ROOT / "var" / "finetune",
                               description="where Ray Train keeps the run's checkpoints (shared storage on a "
                                           "cluster); a rerun of the same run resumes from its last one")
    letterbox: bool
    max_image_pixels: int
    max_skip_fraction: float = Field(0.2, ge=0, le=1, description="fail past this share of unusable items")
    seed: int = 0
    progress_every_s: float = Field(10.0, gt=0, description="seconds between progress lines")

    @classmethod
    def from_settings(cls, settings: Settings | None = None, **overrides: Any) -> "FinetuneConfig":
        """The settings for the fields they declare (overrides in their place), the other overrides, defaults."""
        given = {k: v for k, v in overrides.items() if v is not None}
        s = (settings or get_settings()).with_values(
            **{name: given.pop(name) for name in list(given) if name in Settings.model_fields})
        named = {name: getattr(s, name) for name in cls.model_fields if name in Settings.model_fields}
        return cls(**named, **given)

    def recipe(self) -> dict[str, Any]:
        """What decides the weights: a run with the same recipe resumes; a changed one starts afresh."""
        skip = {"out", "storage_path", "progress_every_s", "threads", "cpus_per_worker", "gpus"}
        return {k: str(v) if isinstance(v, Path) else v for k, v in self.model_dump().items() if k not in skip}
