"""The evaluation feeder's samples per process (what the evaluation callback and evaluate generate): distinct across
ranks, and the same set for any number of processes.

Fast (no process group): the feeder's per-rank generation is called as ranks 0..W-1 would call it. The
end-to-end check under real 2-process DDP is tests/integration/test_commands.py.
"""

import torch

from gen_research.evaluation.feeder import Feeder


class NoiseModel(torch.nn.Module):
    """A 'generator' whose samples are its noise: equal images mean equal noise."""

    conditioning_classes = 3  # the contract's Generates, class-conditional

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def sample(self, num_samples, labels=None, generator=None):
        return torch.randn(num_samples, 1, 2, 2, generator=generator) * 0.3


def samples(settings, rank, world, with_labels=False):
    num_samples, batch_size, seed = settings
    feeder = Feeder(NoiseModel(), [], 0, num_samples, batch_size, seed, with_labels)
    batches = list(feeder.fakes(rank, world))
    if with_labels:
        return torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    assert all(labels is None for _, labels in batches)
    return torch.cat([b[0] for b in batches]) if batches else torch.empty(0, 1, 2, 2)


def test_ranks_draw_distinct_samples_that_together_are_the_single_process_set():
    callback = (23, 5, 4)  # num_samples, batch_size, seed
    single = samples(callback, 0, 1)
    assert single.shape == (23, 1, 2, 2) and len(torch.unique(single.flatten(1), dim=0)) == 23
    for world in (2, 3):
        parts = [samples(callback, rank, world) for rank in range(world)]
        assert sum(len(p) for p in parts) == 23
        for a in range(world):
            for b in range(a + 1, world):
                assert torch.cdist(parts[a].flatten(1), parts[b].flatten(1)).min() > 0  # no noise shared by two ranks
        together = torch.cat(parts).flatten(1)
        assert torch.equal(together[together[:, 0].argsort()], single.flatten(1)[single.flatten(1)[:, 0].argsort()])


def test_classes_cycle_over_the_whole_set_whatever_the_number_of_processes():
    callback = (10, 4, 0)
    _, single = samples(callback, 0, 1, with_labels=True)
    assert single.tolist() == [i % 3 for i in range(10)]
    labels = torch.cat([samples(callback, rank, 2, with_labels=True)[1] for rank in range(2)])
    assert sorted(labels.tolist()) == sorted(single.tolist())


def test_more_processes_than_chunks_still_gives_every_process_distinct_samples():
    callback = (23, 10, 4)  # 3 chunks of 10, 8 processes
    parts = [samples(callback, rank, 8) for rank in range(8)]
    assert all(len(p) > 0 for p in parts) and sum(len(p) for p in parts) == 23
    together = torch.cat(parts).flatten(1)
    assert len(torch.unique(together, dim=0)) == 23
