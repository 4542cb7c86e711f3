"""Training pairs from a catalog: each item's photo with its own words (its document) and with a caption of its
attributes ("<colour> <type>"), and the split into training and held-out items (retrieval.splits' rule)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from retrieval import splits
from schemas.catalog import CatalogItem

# Colours nobody types (make_queries skips them too): a caption with one would teach a word shoppers never use.
SKIP_COLOURS = {"NA", "Multi"}


@dataclass
class Pairs:
    """The rows to train on and to hold out ({id, path, document, caption}), and the items skipped, by reason."""

    train: list[dict] = field(default_factory=list)
    held_out: list[dict] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)


def caption_of(metadata: dict, roles: dict[str, str]) -> str:
    """'<colour> <type>' in lower case, or '' when the catalog lacks either."""
    colour, kind = (str(metadata.get(roles.get(r, ""), "") or "").strip() for r in ("colour", "type"))
    if not colour or not kind or colour in SKIP_COLOURS:
        return ""
    return f"{colour} {kind}".lower()


def pair_row(catalog, item: CatalogItem, roles: dict[str, str]) -> dict:
    return {"id": item.id, "path": str(catalog.image_path(item)), "document": item.text.strip(),
            "caption": caption_of(item.metadata, roles)}


def split_pairs(catalog, items: Iterable[CatalogItem], held_out_ids: Iterable[str] | None = None,
                fraction: float = splits.HELD_OUT_FRACTION) -> Pairs:
    """Pairs of every item with words, held out by a split file's ids or else by the group hash."""
    roles, items = splits.roles_of(catalog.format), list(items)
    held = set(held_out_ids) if held_out_ids is not None else set(splits.held_out_by_group(
        {i.id: str(i.metadata.get(roles.get("group", ""), "") or "") or None for i in items}, fraction))
    pairs = Pairs()
    for item in items:
        row = pair_row(catalog, item, roles)
        if not row["document"] and not row["caption"]:
            pairs.skipped["no words"] += 1
            continue
        (pairs.held_out if item.id in held else pairs.train).append(row)
    return pairs


def text_for(row: dict, epoch: int) -> str:
    """The pair's words this epoch: the document or the caption, each item alternating by a hash, so both kinds
    are learnt without the same photo twice in one batch (two copies would be each other's false negatives)."""
    use_caption = splits.unit_hash(f"{row['id']}:{epoch}") < 0.5
    return (row["caption"] or row["document"]) if use_caption else (row["document"] or row["caption"])
