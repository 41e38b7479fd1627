"""ResumableOrder: order from (seed, epoch) only, one-epoch skips, disjoint shares per rank."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data.distributed import DistributedSampler

from gen_research.data import ResumableOrder

DATA = list(range(103))


def _order(seed: int, epoch: int, **kwargs) -> list[int]:
    sampler = ResumableOrder(DATA, seed=seed, **kwargs)
    sampler.set_epoch(epoch)
    return list(sampler)


def test_is_a_distributed_sampler_with_single_process_defaults():
    sampler = ResumableOrder(DATA)
    assert isinstance(sampler, DistributedSampler)  # Lightning keeps it under DDP
    assert (sampler.num_replicas, sampler.rank, sampler.shuffle) == (1, 0, True)
    assert sorted(sampler) == DATA and len(sampler) == 103


def test_order_depends_only_on_seed_and_epoch():
    torch.manual_seed(0)
    a = _order(seed=5, epoch=2)
    torch.manual_seed(999)  # the global RNG has no say ...
    rng = torch.get_rng_state()
    assert _order(seed=5, epoch=2) == a
    assert torch.equal(torch.get_rng_state(), rng)  # ... and is not consumed
    assert a != list(range(103))
    assert _order(seed=5, epoch=3) != a and sorted(_order(seed=5, epoch=3)) == DATA
    assert _order(seed=6, epoch=2) != a
    # the permutation is DistributedSampler's own for (seed, epoch): torch.randperm seeded with seed + epoch
    assert a == torch.randperm(103, generator=torch.Generator().manual_seed(5 + 2)).tolist()


def test_skip_drops_the_first_items_of_that_epoch_only():
    sampler = ResumableOrder(DATA, seed=1)
    sampler.skip(epoch=3, num_items=40)
    for epoch in (0, 2, 4):
        sampler.set_epoch(epoch)
        assert list(sampler) == _order(1, epoch) and sampler.num_remaining == 103
    sampler.set_epoch(3)
    assert list(sampler) == _order(1, 3)[40:]
    assert sampler.num_skipped == 40 and sampler.num_remaining == 63
    # len() stays the full epoch: Lightning counts resumed batches from the restored index up to it
    assert len(sampler) == 103
    sampler.skip(epoch=3, num_items=500)  # more than the epoch: nothing left, no error
    assert list(sampler) == [] and sampler.num_remaining == 0
    with pytest.raises(ValueError):
        sampler.skip(epoch=0, num_items=-1)


@pytest.mark.parametrize("n", [100, 103])
def test_two_ranks_get_disjoint_shares_covering_the_data(n):
    data = list(range(n))
    shares = []
    for rank in (0, 1):
        sampler = ResumableOrder(data, num_replicas=2, rank=rank, seed=3)
        sampler.set_epoch(1)
        shares.append(list(sampler))
    assert len(shares[0]) == len(shares[1]) == (n + 1) // 2
    assert set(shares[0]) | set(shares[1]) == set(data)
    if n % 2 == 0:
        assert not set(shares[0]) & set(shares[1])
    else:  # DistributedSampler pads an odd set with one repeated index so the ranks stay in step
        assert len(set(shares[0]) & set(shares[1])) == 1
    # the shares interleave the one global permutation for (seed, epoch)
    full = torch.randperm(n, generator=torch.Generator().manual_seed(3 + 1)).tolist()
    assert shares[0][: n // 2] == full[0::2][: n // 2] and shares[1][: n // 2] == full[1::2][: n // 2]


def test_skip_applies_to_each_ranks_own_share():
    full = []
    for rank in (0, 1):
        sampler = ResumableOrder(DATA, num_replicas=2, rank=rank, seed=0)
        sampler.set_epoch(0)
        full.append(list(sampler))
        sampler.skip(0, 10)
        assert list(sampler) == full[rank][10:]
