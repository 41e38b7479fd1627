"""The vector quantiser against hand computations: straight-through gradient, beta on the commitment term, one EMA
step, dead-code restart (fires, is used afterwards, resumes exactly), usage and perplexity."""

import math

import pytest
import torch

from gen_research.errors import GenResearchError
from gen_research.nets.quantize import VectorQuantizer, code_histogram, codebook_usage, perplexity


def grid(*vectors):
    """Vectors [N, D] as one image's latents [1, D, 1, N]."""
    return torch.tensor(vectors, dtype=torch.float32).t()[None, :, None, :]


def quantizer_with(codebook, **options):
    vq = VectorQuantizer(len(codebook), len(codebook[0]), **options)
    vq.codebook.data.copy_(torch.tensor(codebook, dtype=torch.float32))
    if vq.ema:
        vq.embedding_sum.copy_(vq.codebook)
    return vq


def test_straight_through_gradient_is_the_gradient_at_z_q():
    torch.manual_seed(0)
    vq = VectorQuantizer(8, 3)
    z = torch.randn(2, 3, 4, 4, requires_grad=True)
    z_q, _, codes = vq(z)
    assert torch.allclose(z_q, vq.codebook[codes].permute(0, 3, 1, 2), atol=1e-6)  # forward: the codes themselves
    weights = torch.randn_like(z_q)
    downstream = (z_q * weights).sum() + z_q.pow(2).sum()
    grad_z_q, grad_z = torch.autograd.grad(downstream, [z_q, z])
    assert torch.allclose(grad_z, grad_z_q) and torch.allclose(grad_z_q, weights + 2 * z_q)


def test_beta_is_on_the_commitment_term():
    vq = quantizer_with([[0.0], [1.0]], beta=0.25)
    z = grid([0.2], [0.9]).requires_grad_(True)  # nearest codes 0 and 1
    _, loss, codes = vq(z)
    assert codes.flatten().tolist() == [0, 1]
    # both terms are mean((z - e)^2) = (0.2^2 + 0.1^2) / 2 = 0.025 in value: loss = 0.025 + 0.25 * 0.025
    assert loss.item() == pytest.approx(0.03125, abs=1e-7)
    loss.backward()
    # d/dz: beta * 2 (z - e) / N (taming's legacy order would give 2 (z - e) / N = [0.2, -0.1])
    assert z.grad.flatten().tolist() == pytest.approx([0.05, -0.025], abs=1e-7)
    # d/de: 2 (e - z) / N, unweighted (taming's legacy order would give beta times it)
    assert vq.codebook.grad.flatten().tolist() == pytest.approx([-0.2, 0.1], abs=1e-7)


def test_ema_codebook_has_no_gradient_and_only_the_commitment_loss():
    vq = quantizer_with([[0.0], [1.0]], beta=0.25, ema=True)
    _, loss, _ = vq.eval()(grid([0.2], [0.9]))
    assert loss.item() == pytest.approx(0.25 * 0.025, abs=1e-7)
    assert not any(p.requires_grad for p in vq.parameters()) and "codebook" in dict(vq.named_buffers())


def test_one_ema_step_matches_the_hand_computation():
    decay, eps = 0.9, 1e-5
    vq = quantizer_with([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]], ema=True, decay=decay, eps=eps)
    z = grid([0.1, 0.0], [-0.1, 0.2], [1.0, 0.8], [0.9, 1.3])  # codes 0, 0, 1, 1; code 2 unused
    _, _, codes = vq.train()(z)
    assert codes.flatten().tolist() == [0, 0, 1, 1]
    # cluster sizes start at 1 and sums at the codes: N = 0.9 * 1 + 0.1 * [2, 2, 0], m = 0.9 * e + 0.1 * sum
    sizes = [1.1, 1.1, 0.9]
    sums = [[0.0, 0.9 * 0 + 0.1 * 0.2], [0.9 + 0.1 * 1.9, 0.9 + 0.1 * 2.1], [4.5, 4.5]]
    total = sum(sizes)
    smoothed = [(n + eps) / (total + 3 * eps) * total for n in sizes]  # Laplace smoothing
    expected = torch.tensor([[m / s for m in row] for row, s in zip(sums, smoothed)])
    assert torch.allclose(vq.cluster_size, torch.tensor(sizes), atol=1e-6)
    assert torch.allclose(vq.embedding_sum, torch.tensor(sums), atol=1e-6)
    assert torch.allclose(vq.codebook, expected, atol=1e-6)
    assert vq.codebook[0].tolist() == pytest.approx([0.0, 0.0181818], abs=1e-5)
    assert vq.codebook[1].tolist() == pytest.approx([0.990909, 1.009091], abs=1e-5)
    assert vq.codebook[2].tolist() == pytest.approx([5.0, 5.0], abs=1e-4)  # unused: stays (not divided by ~eps)
    before = vq.codebook.clone()
    vq.eval()(z)
    assert torch.equal(vq.codebook, before)  # evaluation never moves the codebook


@pytest.mark.parametrize("ema", [False, True])
def test_dead_code_restart_fires_after_n_steps_and_the_new_code_is_used(ema):
    vq = quantizer_with([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [100.0, 100.0]], ema=ema, restart_unused_after=3).train()
    torch.manual_seed(0)
    batch = grid([0.1, 0.1], [0.9, 0.1], [0.1, 0.8], [0.6, 0.6], [0.2, 0.9])
    flat = batch[0, :, 0].t()
    for step in (1, 2):
        vq(batch)
        assert vq.codebook[3].tolist() == pytest.approx([100.0, 100.0], abs=0.5) and vq.steps_unused.tolist() == [0, 0, 0, step]
    used_codes = vq.codebook[:3].clone()
    vq.eval()(batch)
    assert vq.steps_unused[3] == 2  # evaluation forwards do not count
    _, _, codes = vq.train()(batch)
    assert 3 not in codes.flatten().tolist()  # chosen before the restart, with the old code
    restarted = vq.codebook[3]
    assert any(torch.equal(restarted, row) for row in flat), restarted  # an encoder output of the batch
    assert vq.steps_unused.tolist() == [0, 0, 0, 0]
    if not ema:
        assert torch.equal(vq.codebook[:3], used_codes)  # only the dead code was replaced
    if ema:
        assert vq.cluster_size[3] == 1.0 and torch.equal(vq.embedding_sum[3], restarted)
    _, _, codes = vq.eval()(batch)
    assert 3 in codes.flatten().tolist()  # the restarted code is the nearest one of the vector it copied


def test_restart_draws_from_the_global_rng_and_resumes_exactly():
    codebook = [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [100.0, 100.0], [-100.0, 50.0]]
    batch = grid(*[[0.1 * i, 1 - 0.1 * i] for i in range(10)])

    def run(steps, vq):
        for _ in range(steps):
            vq(batch)
        return vq

    torch.manual_seed(1)
    straight = run(4, quantizer_with(codebook, restart_unused_after=3).train())
    torch.manual_seed(1)
    first = run(2, quantizer_with(codebook, restart_unused_after=3).train())
    rng, state = torch.get_rng_state(), {k: v.clone() for k, v in first.state_dict().items()}
    assert state["steps_unused"][3:].tolist() == [2, 2]  # the counter is in the state_dict
    resumed = quantizer_with(codebook, restart_unused_after=3).train()
    resumed.load_state_dict(state)
    torch.set_rng_state(rng)
    run(2, resumed)
    assert torch.equal(resumed.codebook, straight.codebook) and torch.equal(resumed.steps_unused, straight.steps_unused)
    torch.manual_seed(2)
    other = run(4, quantizer_with(codebook, restart_unused_after=3).train())
    assert not torch.equal(other.codebook, straight.codebook)  # another seed, other batch vectors


def test_usage_and_perplexity_on_a_hand_example():
    histogram = code_histogram(torch.tensor([[0, 0], [1, 1]]), 4)
    assert histogram.tolist() == [2, 2, 0, 0]
    assert codebook_usage(histogram) == 0.5 and perplexity(histogram) == pytest.approx(2.0)
    skewed = code_histogram(torch.tensor([0, 0, 0, 1]), 4)
    entropy = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert codebook_usage(skewed) == 0.5 and perplexity(skewed) == pytest.approx(math.exp(entropy)) == pytest.approx(1.7548, abs=1e-4)
    assert perplexity(code_histogram(torch.arange(8), 8)) == pytest.approx(8.0)
    assert perplexity(torch.zeros(4, dtype=torch.long)) == 0.0


def test_bad_settings_are_one_line_errors():
    with pytest.raises(GenResearchError, match="decay"):
        VectorQuantizer(8, 2, decay=1.0)
    with pytest.raises(GenResearchError, match="codebook_size"):
        VectorQuantizer(0, 2)
    with pytest.raises(ValueError, match=r"expects \[B, 2, h, w\]"):
        VectorQuantizer(8, 2)(torch.zeros(1, 3, 2, 2))
