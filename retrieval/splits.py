"""Which catalog items are held out from training: one rule for the dev queries and the fine-tune job, so no query
photo, and no colour variant of its product, is ever trained on.

A split file (the JSON a model ships, with `train_ids` and `test_ids`) names the held-out items; without one, an item
is held out when its product group (or, without a group, its id) hashes below a fraction: the same split on every
machine and run, and the colour variants of one product never straddle it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

# Half the product groups: a small catalog needs many dev queries more than it needs training items.
HELD_OUT_FRACTION = 0.5

# The payload fields that play each role, per catalog format: type, colour, gender, and for a shop export the
# product group and its description. The dev queries judge by them; fine-tuning writes "<colour> <type>" captions.
ROLES = {"csv": {"type": "articleType", "colour": "baseColour", "gender": "gender"},
         "magento": {"type": "type", "colour": "color", "gender": "gender", "group": "product_group",
                     "description": "description"}}


class SplitError(ValueError):
    """A split file that cannot be read as one (the entry points print it as one line, exit 2)."""


def roles_of(fmt: str) -> dict[str, str]:
    """The role -> payload field table for a catalog format (the CSV layout's for formats without their own)."""
    return ROLES.get(fmt, ROLES["csv"])


def unit_hash(key: str) -> float:
    """A stable number in [0, 1) for a key."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2 ** 64


def held_out_by_group(groups: dict[str, str | None], fraction: float = HELD_OUT_FRACTION) -> list[str]:
    """The ids (in the given order) whose group, or the id itself where it has none, hashes below `fraction`."""
    return [i for i, group in groups.items() if unit_hash(group or i) < fraction]


def read_split(path: Path) -> list[str]:
    """The held-out ids of a split file (`test_ids`), in its order."""
    try:
        return [str(i) for i in json.loads(Path(path).read_text())["test_ids"]]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise SplitError(f"{path}: not a split file with test_ids ({err})") from err


def write_split(path: Path, train_ids: Iterable[str], test_ids: Iterable[str]) -> None:
    """A split file in the format read_split reads (and a model folder ships)."""
    Path(path).write_text(json.dumps({"train_ids": sorted(train_ids), "test_ids": sorted(test_ids)}))
