"""The vq_prior family: seeded sampling (the KV-cached loop against a greedy decoding without cache), labels cycling,
a checkpoint that samples without the first stage's file, and `sample`/`evaluate` through the CLI."""

import json

import pytest
import torch
from PIL import Image

from gen_research.errors import GenResearchError
from gen_research.evaluation.provenance import differences
from gen_research.models.contract import Generates, Quantizes, Reconstructs, can, check_sampling_options
from gen_research.models.vqvae import VQPrior, VQVAE
from gen_research.models.vqvae.prior import top_k_logits

from vq_helpers import TINY_PRIOR, run


@pytest.fixture(scope="module")
def prior(tiny_prior_run):
    folder, _ = tiny_prior_run
    return VQPrior.load_from_checkpoint(folder / "checkpoints" / "last.ckpt", weights_only=True).eval()


def seeded(seed):
    return torch.Generator().manual_seed(seed)


def greedy_without_cache(model, labels):
    """Argmax decoding that recomputes the whole prefix at every position (no KV cache)."""
    tokens = model.start_tokens(labels, len(labels))
    for _ in range(model.sequence_length):
        logits = model.transformer(input_ids=tokens).logits[:, -1, : model.codebook_size]
        tokens = torch.cat([tokens, logits.argmax(-1, keepdim=True)], dim=1)
    return tokens[:, 1:].view(len(labels), *model.code_grid)


def test_contract(prior):
    assert can(prior, Generates) and not can(prior, Reconstructs) and not can(prior, Quantizes)
    assert prior.conditioning_classes == 10 and prior.code_grid == (2, 2) and prior.codebook_size == 16
    assert prior.transformer.config.n_positions == 5 and prior.transformer.config.vocab_size == 16 + 10
    assert check_sampling_options(prior, {"temperature": "0.5", "top_k": "3"}) == {"temperature": 0.5, "top_k": 3}
    with pytest.raises(GenResearchError, match="--top-k '2.5': must be an int"):
        check_sampling_options(prior, {"top_k": "2.5"})
    with pytest.raises(GenResearchError, match="--temperature 0"):
        check_sampling_options(prior, {"temperature": 0})


def test_sampling_is_seeded_and_top_k_1_is_greedy(prior):
    with torch.no_grad():
        a, b, c = (prior.sample(20, generator=seeded(s)) for s in (0, 0, 1))
        assert a.shape == (20, 1, 8, 8) and a.min() >= -1 and a.max() <= 1
        assert torch.equal(a, b) and not torch.equal(a, c)
        labels = torch.arange(20) % 10
        assert torch.equal(prior.sample(20, labels=labels, generator=seeded(0)), a)  # labels cycle 0..9 when None
        greedy = prior.first_stage.decode_codes(greedy_without_cache(prior, labels))
        assert torch.equal(prior.sample(20, generator=seeded(0), top_k=1), greedy)
        assert torch.equal(prior.sample(20, generator=seeded(5), top_k=1), greedy)  # no randomness left
    with pytest.raises(GenResearchError, match="classes 0..9"):
        prior.sample(2, labels=torch.tensor([0, 10]))


def test_top_k_keeps_the_k_largest():
    logits = torch.tensor([[0.1, 3.0, -1.0, 2.0]])
    assert top_k_logits(logits, 2).tolist() == [[float("-inf"), 3.0, float("-inf"), 2.0]]
    assert torch.equal(top_k_logits(logits, 0), logits) and torch.equal(top_k_logits(logits, 9), logits)


def test_checkpoint_samples_without_the_first_stage_file(tiny_prior_run, tiny_vqvae_run):
    folder, first_stage_file = tiny_prior_run
    ckpt = folder / "checkpoints" / "last.ckpt"
    with torch.no_grad():
        before = VQPrior.load_from_checkpoint(ckpt, weights_only=True).eval().sample(12, generator=seeded(3))
        first_stage_file.unlink()
        loaded = VQPrior.load_from_checkpoint(ckpt, weights_only=True).eval()
        assert torch.equal(loaded.sample(12, generator=seeded(3)), before)
    vqvae = VQVAE.load_from_checkpoint(tiny_vqvae_run / "checkpoints" / "last.ckpt", weights_only=True)
    for name, value in vqvae.state_dict().items():  # the frozen first stage is the VQ-VAE, untouched by training and EMA
        assert torch.equal(loaded.first_stage.state_dict()[name], value), name
    state = torch.load(ckpt, weights_only=True)
    assert any(not torch.equal(state["state_dict"][k], state["current_model_state"][k]) for k in state["state_dict"] if k.startswith("transformer."))


def test_missing_first_stage_is_one_line():
    with pytest.raises(GenResearchError, match="model.init_args.first_stage_ckpt"):
        VQPrior(image_shape=(1, 8, 8), num_classes=10)


@pytest.mark.integration
def test_sample_and_evaluate_commands(tiny_prior_run, vq_root, capsys):
    ckpt = str(tiny_prior_run[0] / "checkpoints" / "last.ckpt")
    base = ["sample", "--config", TINY_PRIOR, "--ckpt_path", ckpt, "--num-images", "10", "--batch-size", "4"]
    assert run(*base, "--seed", "3", "--out", str(vq_root / "s_a")) == 0
    assert run(*base, "--seed", "3", "--out", str(vq_root / "s_b")) == 0
    assert run(*base, "--seed", "4", "--out", str(vq_root / "s_c"), "--temperature", "0.7", "--top-k", "4") == 0
    pngs = {name: [Image.open(p).tobytes() for p in sorted((vq_root / name).glob("0*.png"))] for name in ("s_a", "s_b", "s_c")}
    assert len(pngs["s_a"]) == 10 and pngs["s_a"] == pngs["s_b"] and pngs["s_a"] != pngs["s_c"]
    assert Image.open(vq_root / "s_a" / "00000.png").size == (8, 8)
    assert run(*base, "--class", "3", "--out", str(vq_root / "s_class")) == 0
    assert run(*base, "--steps", "5", "--out", str(vq_root / "s_bad")) == 2
    assert "--steps does not apply to VQPrior; it takes: --temperature, --top-k" in capsys.readouterr().err
    args = ["evaluate", "--config", TINY_PRIOR, "--ckpt_path", ckpt, "--num-images", "60", "--metrics", "fid,kid",
            "--kid-subset-size", "30", "--kid-subsets", "5", "--cache-dir", str(vq_root / "cache")]
    assert run(*args, "--json", str(vq_root / "e1.json")) == 0
    assert run(*args, "--json", str(vq_root / "e2.json"), "--top-k", "2") == 0
    first, second = (json.loads((vq_root / name).read_text()) for name in ("e1.json", "e2.json"))
    # the provenance of the two tells them apart by the one setting that differs (evaluate --compare would refuse)
    assert [field for field, _, _ in differences(first.pop("provenance"), second.pop("provenance"))] == ["sampling.top_k"]
    assert first["sampling/temperature"] == 1.0 and first["sampling/top_k"] == 0 and second["sampling/top_k"] == 2
    assert first["fid/pixels"] > 0 and first["fid/pixels"] != second["fid/pixels"]
