"""With EMA on, validation, the sample grids and the evaluation callback use the EMA weights, not the training ones.

A short VAE fit where the two sets of weights differ measurably; each number logged during validation is
recomputed independently from the EMA weights (equal) and from the training weights (different). A callback
that ran outside Lightning's EMA swap, or an EMA that no longer swapped, would log the training weights' numbers.
"""

import copy

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer, seed_everything
from PIL import Image

from gen_research.training.callbacks.ema import EMA
from gen_research.training.callbacks.evaluation import EvaluationCallback
from gen_research.files.image_grid import to_grid_uint8
from gen_research.training.callbacks.sample_grid import SAMPLES_DIR, SampleGridLogger
from gen_research.data.embedded import Digits
from gen_research.models.autoencoder import VAE

VAL_BATCHES = 2


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ema_validation")
    seed_everything(3)
    model = VAE(image_shape=(1, 8, 8), channels=[8, 16], latent_dim=4, lr=1e-2, warmup_steps=0)
    data = Digits(batch_size=32)
    ema = EMA(decay=0.95, warmup=False)  # a long memory: after 6 steps the average is far from the training weights
    grid = SampleGridLogger(num_samples=16, num_reconstructions=0, interpolation_pairs=0, seed=1234)
    evaluation = EvaluationCallback(metrics="fid", features="pixels", num_samples=64, batch_size=32, use_cache=False)
    trainer = Trainer(
        max_epochs=1, limit_train_batches=6, limit_val_batches=VAL_BATCHES, callbacks=[ema, grid, evaluation],
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, default_root_dir=root, accelerator="cpu", devices=1,
    )
    trainer.fit(model, datamodule=data)
    logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
    # Lightning copies the EMA weights into the model at the end of fit: the model now holds the validated weights.
    ema_model = model.eval()
    raw_model = copy.deepcopy(model)
    raw_model.load_state_dict(ema._training_weights_at_end)
    assert max((a - b).abs().max() for a, b in zip(ema_model.state_dict().values(), raw_model.state_dict().values())) > 1e-3
    return {"trainer": trainer, "data": data, "logged": logged, "ema": ema_model, "raw": raw_model.eval(),
            "grid": root / SAMPLES_DIR / "epoch000-samples.png", "evaluation": evaluation}


@torch.no_grad()
def validation_loss(model, data) -> float:
    """val/loss as the VAE logs it: the batch-size-weighted mean over the validation batches, noise from its eval seed."""
    generator = torch.Generator().manual_seed(model.eval_seed)
    total, count = 0.0, 0
    for index, batch in enumerate(data.val_dataloader()):
        if index == VAL_BATCHES:
            break
        images = batch["image"]
        total += float(model.eval_metrics(images, generator)["loss"]) * len(images)
        count += len(images)
    return total / count


def test_validation_loss_is_the_ema_weights_loss(run):
    ema_loss, raw_loss = validation_loss(run["ema"], run["data"]), validation_loss(run["raw"], run["data"])
    assert abs(ema_loss - raw_loss) > 0.005 * abs(raw_loss), (ema_loss, raw_loss)  # 1% apart: 1000x the tolerance below
    assert run["logged"]["val/loss"] == pytest.approx(ema_loss, rel=1e-5)


@torch.no_grad()
def grid_of(model) -> np.ndarray:
    return to_grid_uint8(model.sample(16, generator=torch.Generator().manual_seed(1234)))


def test_sample_grid_is_drawn_from_the_ema_weights(run):
    saved = np.asarray(Image.open(run["grid"]))
    ema_grid, raw_grid = grid_of(run["ema"]), grid_of(run["raw"])
    assert (np.abs(ema_grid.astype(int) - raw_grid.astype(int)) > 8).mean() > 0.05  # visibly different pictures
    np.testing.assert_array_equal(saved, ema_grid)


def test_evaluation_metric_is_the_ema_weights_metric(run):
    evaluation, trainer = run["evaluation"], run["trainer"]
    ema_fid = evaluation.evaluate(trainer, run["ema"])["fid/pixels"]
    raw_fid = evaluation.evaluate(trainer, run["raw"])["fid/pixels"]
    assert abs(ema_fid - raw_fid) > 0.01 * raw_fid, (ema_fid, raw_fid)
    assert run["logged"]["fid/pixels"] == pytest.approx(ema_fid, rel=1e-5)
