"""Dict-item datasets of image-to-image translation, built from image datasets yielding ``(image, label)``.

Shared by the folder modules (translation_folders.py) and the derived digit sets (translation_digits.py), so both
serve the same batch fields (gen_research/models/contract.py BATCH_FIELDS):

- :class:`PairedDataset`: ``{"source", "target", "image" (= target), "label"}`` (pix2pix's aligned dataset);
- :class:`UnpairedDataset`: ``{"source", "image", "label", "domain", "target_domain"}`` (CycleGAN's unaligned one);
- :class:`MultiDomainDataset`: ``{"image", "domain", "target_domain", "label"}`` (StarGAN's): no ``source`` field,
  the image is the source (gen_research/models/contract.py: ``domain`` is then the domain of ``image``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

#: What ``direction`` / ``eval_direction`` accept: AtoB translates A into B, BtoA swaps the roles.
DIRECTIONS = ("AtoB", "BtoA")


def _sized(dataset: Dataset) -> int:
    return len(dataset)  # type: ignore[arg-type]


class PairedDataset(Dataset):
    """Item k pairs ``sources[k]`` with ``targets[k]``; the label is the source's."""

    def __init__(self, sources: Dataset, targets: Dataset) -> None:
        if _sized(sources) != _sized(targets):
            raise ValueError(f"paired datasets need as many sources as targets; got {_sized(sources)} and {_sized(targets)}")
        self.sources, self.targets = sources, targets

    def __len__(self) -> int:
        return _sized(self.sources)

    def __getitem__(self, index: int) -> dict[str, Any]:
        source, label = self.sources[index]
        target = self.targets[index][0]
        return {"source": source, "target": target, "image": target, "label": label}


class UnpairedDataset(Dataset):
    """Images of domain A (id 0) and domain B (id 1) with no pairing: item i shows ``a[i % |A|]`` and
    ``b[perm[i] % |B|]``, perm a fixed permutation of ``range(max(|A|, |B|))`` seeded by ``seed``.

    As CycleGAN's unaligned dataset, the length is max(|A|, |B|) so every image of both domains is seen each epoch;
    the fixed permutation (instead of the reference's fresh random B index per access, which a resumed run could not
    replay) keeps items i and i + |A| from showing the same B neighbours, and the loader's seeded shuffle of i varies
    which A and B meet in a batch from epoch to epoch.

    ``reverse`` (``eval_direction: BtoA``): items ``{"source": B, "image": A, "label": B's, "domain": 1,
    "target_domain": 0}``, so evaluation measures the B -> A generator.
    """

    def __init__(self, a: Dataset, b: Dataset, seed: int, reverse: bool = False) -> None:
        if (_sized(a) == 0) != (_sized(b) == 0):  # both empty is an empty split (val_fraction 0)
            raise ValueError(f"unpaired datasets need images in both domains; got {_sized(a)} and {_sized(b)}")
        self.a, self.b, self.reverse = a, b, reverse
        self.b_order = torch.randperm(max(_sized(a), _sized(b)), generator=torch.Generator().manual_seed(seed))

    def __len__(self) -> int:
        return len(self.b_order)

    def a_index(self, index: int) -> int:
        return index % _sized(self.a)

    def b_index(self, index: int) -> int:
        return int(self.b_order[index]) % _sized(self.b)

    def __getitem__(self, index: int) -> dict[str, Any]:
        a_image, a_label = self.a[self.a_index(index)]
        b_image, b_label = self.b[self.b_index(index)]
        if self.reverse:
            return {"source": b_image, "image": a_image, "label": b_label, "domain": 1, "target_domain": 0}
        return {"source": a_image, "image": b_image, "label": a_label, "domain": 0, "target_domain": 1}


def target_domain_ids(domains: Tensor, num_domains: int) -> Tensor:
    """int64 [N]: item k of a split asks for domain ``(own + 1 + k % (K - 1)) % K``: every other domain in turn,
    never its own, so an evaluation covers all (source, target) domain pairs."""
    positions = torch.arange(len(domains), dtype=torch.int64)
    return (domains + 1 + positions % (num_domains - 1)) % num_domains


def target_attributes(attributes: Tensor) -> Tensor:
    """float32 [N, K]: item k of a split asks for its own 0/1 attributes with attribute ``k % K`` flipped."""
    positions = torch.arange(len(attributes))
    flipped = attributes.clone()
    column = positions % attributes.shape[1]
    flipped[positions, column] = 1.0 - flipped[positions, column]
    return flipped


class MultiDomainDataset(Dataset):
    """Images with their domain and the domain each asks to be translated into (StarGAN): ``domains`` are int64 ids
    [N] of ``num_domains`` domains, or float32 0/1 attribute vectors [N, K] (``multi_label``); the label is the
    underlying dataset's (0 for folders, the digit class for the digit sets: class preservation)."""

    def __init__(self, images: Dataset, domains: Tensor, num_domains: int, multi_label: bool) -> None:
        if _sized(images) != len(domains):
            raise ValueError(f"got {_sized(images)} images but {len(domains)} domains")
        self.images = images
        if multi_label:
            self.domains = domains.to(torch.float32)
            self.targets = target_attributes(self.domains)
        else:
            self.domains = domains.to(torch.int64)
            self.targets = target_domain_ids(self.domains, num_domains)

    def __len__(self) -> int:
        return len(self.domains)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, label = self.images[index]
        return {"image": image, "domain": self.domains[index], "target_domain": self.targets[index], "label": label}


__all__ = ["DIRECTIONS", "MultiDomainDataset", "PairedDataset", "UnpairedDataset", "target_attributes", "target_domain_ids"]
