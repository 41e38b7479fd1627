"""The vqvae family: its contract (Quantizes, Reconstructs), one-line errors, and a tiny fit whose logged codebook
usage and perplexity are those of the whole validation epoch's codes."""

import csv

import pytest
import torch

from gen_research.data.embedded import Digits
from gen_research.errors import GenResearchError
from gen_research.models.contract import FirstStage, Generates, Quantizes, Reconstructs, can
from gen_research.models.vqvae import VQVAE
from gen_research.nets.quantize import code_histogram, codebook_usage, perplexity

SMALL = dict(channels=8, codebook_size=16, embedding_dim=4)


def test_contract_and_code_grid():
    torch.manual_seed(0)
    model = VQVAE(image_shape=(1, 28, 28), **SMALL)
    assert can(model, Quantizes) and can(model, Reconstructs)
    assert not can(model, FirstStage) and not can(model, Generates)
    assert model.code_grid == (7, 7) and model.codebook_size == 16
    images = torch.rand(3, 1, 28, 28) * 2 - 1
    before = model.quantizer.codebook.detach().clone()
    codes = model.train().encode_codes(images)
    assert codes.dtype == torch.int64 and codes.shape == (3, 7, 7) and 0 <= codes.min() and codes.max() < 16
    assert torch.equal(model.quantizer.codebook, before) and model.quantizer.steps_unused.sum() == 0  # no codebook update
    decoded = model.decode_codes(codes)
    assert decoded.shape == (3, 1, 28, 28) and decoded.min() >= -1 and decoded.max() <= 1
    assert torch.equal(model.reconstruct(images), decoded)


def test_bad_settings_name_the_key():
    with pytest.raises(GenResearchError, match="data.init_args.resize"):
        VQVAE(image_shape=(1, 10, 10), **SMALL)
    with pytest.raises(GenResearchError, match="model.init_args.channels"):
        VQVAE(image_shape=(1, 8, 8), channels=1, codebook_size=16, embedding_dim=4)
    with pytest.raises(GenResearchError, match="model.init_args.decay"):
        VQVAE(image_shape=(1, 8, 8), decay=1.5, **SMALL)
    with pytest.raises(GenResearchError, match="model.init_args.restart_unused_after"):
        VQVAE(image_shape=(1, 8, 8), restart_unused_after=-1, **SMALL)


def logged(run_folder):
    """{metric: [values in order]} from the run's metrics.csv."""
    (path,) = run_folder.rglob("metrics.csv")
    columns: dict[str, list[float]] = {}
    for row in csv.DictReader(path.open()):
        for key, value in row.items():
            if value not in ("", None):
                columns.setdefault(key, []).append(float(value))
    return columns


def test_tiny_fit_logs_the_codebook_usage_of_the_whole_validation_epoch(tiny_vqvae_run):
    metrics = logged(tiny_vqvae_run)
    for key in ("val/loss", "val/rec_loss", "val/vq_loss", "val/psnr", "val/codebook_usage", "val/perplexity", "train/perplexity"):
        assert key in metrics, sorted(metrics)
    assert len(metrics["val/codebook_usage"]) == 2  # every validation (2 epochs)
    model = VQVAE.load_from_checkpoint(tiny_vqvae_run / "checkpoints" / "last.ckpt", weights_only=True).eval()
    data = Digits(batch_size=32, val_fraction=0.1, test_fraction=0.1, split_seed=0)
    data.setup("fit")
    batches = [batch["image"] for _, batch in zip(range(2), data.val_dataloader())]  # limit_val_batches: 2
    with torch.no_grad():
        histogram = sum(code_histogram(model.encode_codes(x), 16) for x in batches)
        mse = torch.stack([(model.decoder(model.quantizer.lookup(model.encode_codes(x))) - x).pow(2).mean() for x in batches])
    assert metrics["val/codebook_usage"][-1] == pytest.approx(codebook_usage(histogram))
    assert metrics["val/perplexity"][-1] == pytest.approx(perplexity(histogram), rel=1e-5)
    assert 1.0 < metrics["val/perplexity"][-1] <= 16.0 and 0 < metrics["val/codebook_usage"][-1] <= 1.0
    assert metrics["val/rec_loss"][-1] == pytest.approx(float(mse.mean()), rel=1e-4)  # two full batches: equal weights
    assert metrics["val/rec_loss"][-1] < metrics["val/rec_loss"][0]  # it learns
