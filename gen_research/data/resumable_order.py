"""The seeded, resumable order of training items: a DistributedSampler that can resume in the middle of an epoch.

(Called an "order", not a "sampler": elsewhere in gen_research "sampler" means how images are drawn from a model.)"""

from __future__ import annotations

from typing import Iterator, Sized

from torch.utils.data.distributed import DistributedSampler


class ResumableOrder(DistributedSampler):
    """Seeded shuffling whose order depends only on (seed, epoch), plus :meth:`skip` for mid-epoch resume.

    It subclasses ``DistributedSampler`` because Lightning leaves such a sampler in place under DDP
    instead of swapping in its own, so the same class serves 1 and N processes. ``num_replicas``
    and ``rank`` are explicit (default 1 / 0) so no process group is needed outside DDP.
    """

    def __init__(
        self,
        dataset: Sized,
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last)  # type: ignore[arg-type]
        self._skip_epoch: int | None = None
        self._skip_items = 0

    def skip(self, epoch: int, num_items: int) -> None:
        """In ``epoch`` only, leave out the first ``num_items`` indices of this rank's share.

        ``len()`` stays the full share (see :meth:`__len__`); :attr:`num_remaining` counts what is yielded.
        """
        if num_items < 0:
            raise ValueError(f"num_items must be >= 0, got {num_items}")
        self._skip_epoch = int(epoch)
        self._skip_items = int(num_items)

    @property
    def num_skipped(self) -> int:
        """How many leading indices the current epoch leaves out (0 outside the skipped epoch)."""
        if self._skip_epoch is None or self.epoch != self._skip_epoch:
            return 0
        return min(self._skip_items, self.num_samples)

    def __iter__(self) -> Iterator[int]:
        # The parent computes the full (seed, epoch) permutation for this rank; dropping a prefix
        # keeps every later index exactly where the uninterrupted run would have had it.
        indices = list(super().__iter__())
        return iter(indices[self.num_skipped :])

    @property
    def num_remaining(self) -> int:
        """How many indices the current epoch actually yields."""
        return self.num_samples - self.num_skipped

    def __len__(self) -> int:
        # Deliberately the whole share, skipped or not. On resume Lightning restores the batch
        # counter to k and runs the epoch until that counter reaches len(loader) (as it does with
        # its own stateful loaders), so a shortened length would end the epoch k batches early.
        return self.num_samples
