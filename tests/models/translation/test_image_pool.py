"""CycleGAN's image pool: the reference's fill-then-mix rule on a hand-traced case, pass-through at size 0, exact
continuation from its state_dict, detached outputs, and the shape error."""

from __future__ import annotations

import pytest
import torch

from gen_research.errors import GenResearchError
from gen_research.models.translation.image_pool import ImagePool

SEED = 16


def _pixels(*values: float) -> torch.Tensor:
    """A batch of single-pixel, single-channel images."""
    return torch.tensor(values, dtype=torch.float32).view(-1, 1, 1, 1)


def _draws(generator: torch.Generator, batch: int, pool_size: int) -> tuple[list[float], list[int]]:
    """What one query draws: batch uniforms, then batch slot indices."""
    return torch.rand(batch, generator=generator).tolist(), torch.randint(pool_size, (batch,), generator=generator).tolist()


def test_fills_then_mixes_as_traced_by_hand():
    twin = torch.Generator().manual_seed(SEED)
    fill_draws, mix_draws = _draws(twin, 2, 2), _draws(twin, 3, 2)
    # The draws the trace below relies on (torch's CPU generator at seed 16):
    coins, slots = mix_draws
    assert [c > 0.5 for c in coins] == [True, False, True] and slots == [1, 1, 0]
    assert len(fill_draws[0]) == 2  # filling draws too, so each query consumes a fixed amount

    pool = ImagePool(pool_size=2, image_shape=(1, 1, 1))
    generator = torch.Generator().manual_seed(SEED)
    # Not full: each image is stored and returned.
    assert torch.equal(pool.query(_pixels(1, 2), generator), _pixels(1, 2))
    assert int(pool.count) == 2 and torch.equal(pool.images, _pixels(1, 2))
    # Full: 3 swaps with slot 1 (returns 2, pool [1, 3]); 4 is returned itself; 5 swaps with slot 0 (returns 1,
    # pool [5, 3]).
    assert torch.equal(pool.query(_pixels(3, 4, 5), generator), _pixels(2, 4, 1))
    assert torch.equal(pool.images, _pixels(5, 3)) and int(pool.count) == 2


def test_a_batch_that_fills_the_pool_midway_mixes_its_remainder():
    twin = torch.Generator().manual_seed(SEED)
    coins, slots = _draws(twin, 3, 2)
    pool = ImagePool(pool_size=2, image_shape=(1, 1, 1))
    out = pool.query(_pixels(1, 2, 3), torch.Generator().manual_seed(SEED))
    # The first two fill the pool; the third is mixed with the third draws.
    expected_third = (1.0 if slots[2] == 0 else 2.0) if coins[2] > 0.5 else 3.0
    assert out.flatten().tolist() == [1.0, 2.0, expected_third]


def test_about_half_are_swapped_once_full():
    pool = ImagePool(pool_size=4, image_shape=(1, 2, 2))
    generator = torch.Generator().manual_seed(0)
    pool.query(torch.full((4, 1, 2, 2), -1.0), generator)
    fresh = torch.rand(2000, 1, 2, 2, generator=torch.Generator().manual_seed(1)) + 1  # all in [1, 2)
    out = pool.query(fresh, generator)
    swapped = (out != fresh).any(dim=(1, 2, 3)).float().mean().item()
    assert 0.45 < swapped < 0.55


def test_size_zero_passes_through():
    pool = ImagePool(pool_size=0, image_shape=(1, 2, 2))
    fakes = torch.randn(3, 1, 2, 2, requires_grad=True)
    state = torch.get_rng_state()
    out = pool.query(fakes)
    assert torch.equal(out, fakes) and not out.requires_grad
    assert torch.equal(torch.get_rng_state(), state)  # no draws when there is no pool
    assert pool.images.shape == (0, 1, 2, 2)


def test_state_dict_round_trip_continues_identically():
    shape = (2, 3, 3)
    batches = torch.randn(8, 2, *shape, generator=torch.Generator().manual_seed(0))
    original = ImagePool(pool_size=3, image_shape=shape)
    generator = torch.Generator().manual_seed(7)
    for batch in batches[:3]:
        original.query(batch, generator)
    state = {key: value.clone() for key, value in original.state_dict().items()}
    assert set(state) == {"images", "count"} and int(state["count"]) == 3
    restored = ImagePool(pool_size=3, image_shape=shape)
    restored.load_state_dict(state)
    generator_state = generator.get_state()
    outputs = [original.query(batch, generator) for batch in batches[3:]]
    generator.set_state(generator_state)
    assert all(torch.equal(restored.query(batch, generator), out) for batch, out in zip(batches[3:], outputs))
    assert torch.equal(restored.images, original.images)
    # A fresh pool (what the reference resumes with) would not continue the same way.
    fresh = ImagePool(pool_size=3, image_shape=shape)
    generator.set_state(generator_state)
    assert not all(torch.equal(fresh.query(batch, generator), out) for batch, out in zip(batches[3:], outputs))


def test_global_rng_is_used_without_a_generator():
    """Without a generator the pool draws from torch's global (checkpointed) RNG: seeding it gives the same batches
    as a generator with that seed, and the draws advance it."""
    with_generator = ImagePool(2, (1, 1, 1))
    generator = torch.Generator().manual_seed(SEED)
    expected = [with_generator.query(_pixels(1, 2), generator), with_generator.query(_pixels(3, 4, 5), generator)]
    global_pool = ImagePool(2, (1, 1, 1))
    torch.manual_seed(SEED)
    before = torch.get_rng_state()
    got = [global_pool.query(_pixels(1, 2)), global_pool.query(_pixels(3, 4, 5))]
    assert all(torch.equal(x, y) for x, y in zip(got, expected))
    assert not torch.equal(torch.get_rng_state(), before)


def test_outputs_are_detached_and_stored_copies():
    pool = ImagePool(pool_size=2, image_shape=(1, 1, 1))
    fakes = _pixels(1, 2).requires_grad_()
    out = pool.query(fakes, torch.Generator().manual_seed(0))
    assert not out.requires_grad and not pool.images.requires_grad
    with torch.no_grad():
        fakes.mul_(10)
    assert torch.equal(pool.images, _pixels(1, 2))  # the pool keeps its own copy


def test_wrong_shapes_and_sizes_are_one_line_errors():
    pool = ImagePool(pool_size=2, image_shape=(3, 4, 4))
    with pytest.raises(ValueError, match=r"holds images of shape \(3, 4, 4\), got a batch of shape \(2, 3, 8, 8\)"):
        pool.query(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="got a batch of shape"):
        pool.query(torch.zeros(3, 4, 4))
    with pytest.raises(GenResearchError, match="pool_size=-1 must be an integer >= 0"):
        ImagePool(pool_size=-1, image_shape=(3, 4, 4))
    with pytest.raises(GenResearchError, match="image_shape=.* must be three positive integers"):
        ImagePool(pool_size=2, image_shape=(4, 4))
