"""The data side of the batch contract: every loader of a data module yields a dict of named fields.

The field names are those of ``gen_research.models.contract.BATCH_FIELDS`` (``image``, ``label``, ``caption``,
``source``, ``target``, ``domain``); a data module lists the ones it provides in ``batch_fields`` and a model the
ones it trains on in ``BATCH_FIELDS``, so a mismatch is refused before training instead of failing in a step.

Dataset items are either dicts of those fields or, for the plain image datasets, ``(image, label)`` tuples
(:data:`TUPLE_ITEM_FIELDS`): other code reads such an item as ``item[0]``. :func:`collate_fields` turns a list of
either kind into one dict batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor
from torch.utils.data import default_collate

#: The fields of an ``(image, label)`` tuple item, in order.
TUPLE_ITEM_FIELDS = ("image", "label")
#: The fields holding images [B, C, H, W]: random flips (and any per-batch geometry) apply to all of them alike.
IMAGE_FIELDS = ("image", "source", "target")

Batch = dict[str, Any]


class FieldBatch(dict):
    """A batch gathered whole by a dataset's ``__getitems__`` (gen_research/data/in_memory.py): already collated,
    so :func:`collate_fields` passes it through (as a plain dict) instead of stacking items."""


def as_fields(item: Any) -> dict[str, Any]:
    """One dataset item (or one collated batch) as a dict of named fields."""
    if isinstance(item, Mapping):
        return dict(item)
    if isinstance(item, (tuple, list)):
        if len(item) > len(TUPLE_ITEM_FIELDS):
            raise ValueError(f"a tuple item has at most {len(TUPLE_ITEM_FIELDS)} fields ({', '.join(TUPLE_ITEM_FIELDS)}); got {len(item)}")
        return dict(zip(TUPLE_ITEM_FIELDS, item))
    return {"image": item}


def collate_fields(items: Sequence[Any]) -> Batch:
    """Stack dataset items (dicts, ``(image, label)`` tuples or bare images) into a dict batch (``collate_fn``)."""
    if isinstance(items, FieldBatch):
        return dict(items)
    return as_fields(default_collate(list(items)))


def batch_length(batch: Mapping[str, Any]) -> int:
    """How many items a dict batch holds (the length of its first image field)."""
    for name in IMAGE_FIELDS:
        value = batch.get(name)
        if isinstance(value, Tensor):
            return len(value)
    raise ValueError(f"a batch needs one of the image fields {', '.join(IMAGE_FIELDS)}; it has {', '.join(batch)}")


__all__ = ["IMAGE_FIELDS", "TUPLE_ITEM_FIELDS", "Batch", "FieldBatch", "as_fields", "batch_length", "collate_fields"]
