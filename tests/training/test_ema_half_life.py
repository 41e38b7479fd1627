"""The ``ema`` callback with ``half_life_kimg``: the beta of every update is NVlabs' formula (with and without the
ramp, at batch 32 and 64, with update_every_n_steps and gradient accumulation), it is logged as ``ema/beta``, the
decay per image is the same at any batch size, conflicting settings fail in one line, and a GAN resumed from a
crash ends bit-identical to an uninterrupted run."""

import pytest
import torch
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer
from lightning.pytorch.loggers import Logger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from gen_research.errors import GenResearchError
from gen_research.training.callbacks.ema import EMA
from tests.integration.helpers import TEST_CONFIGS, SimulatedCrash, assert_same_training_state, only_run_dir, run_in_process

HALF_LIFE_KIMG = 0.2  # 200 images: several updates per half-life at batch 32 and 64


class Regression(LightningModule):
    def __init__(self, lr: float = 0.1) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 1)
        self.lr = lr

    def training_step(self, batch, batch_idx):
        (x,) = batch
        return self.layer(x).square().mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class Points(LightningDataModule):
    def __init__(self, batch_size: int, count: int = 640) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.x = torch.randn(count, 4, generator=torch.Generator().manual_seed(0))

    def train_dataloader(self):
        return DataLoader(TensorDataset(self.x), batch_size=self.batch_size)


class RecordingLogger(Logger):
    def __init__(self) -> None:
        super().__init__()
        self.metrics: list[dict] = []

    @property
    def name(self) -> str:
        return "recording"

    @property
    def version(self) -> int:
        return 0

    def log_metrics(self, metrics, step=None) -> None:
        self.metrics.append({**metrics, "step": step})

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass


class RecordWeightsAtSteps(Callback):
    """The training weights after each optimizer step (runs before the EMA, which sees the same weights)."""

    def __init__(self) -> None:
        self.steps: list[int] = []
        self.weights: list[torch.Tensor] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step > (self.steps[-1] if self.steps else 0):  # not the batches that only accumulate
            self.steps.append(trainer.global_step)
            self.weights.append(torch.cat([p.detach().flatten().clone() for p in pl_module.parameters()]))


class OnesUntilImages(Callback):
    """Sets every weight to 1 while at most ``images`` have been trained on, to 0 after: the EMA's final value is
    then the share the weights of the first ``images`` images still hold (the model has lr 0 and never moves)."""

    def __init__(self, images: int) -> None:
        self.images = images

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        value = 1.0 if trainer.global_step * trainer.datamodule.batch_size <= self.images else 0.0
        with torch.no_grad():
            for parameter in pl_module.parameters():
                parameter.fill_(value)


def fit(model, data, callbacks, max_steps, logger=False, **trainer_args) -> Trainer:
    trainer = Trainer(max_steps=max_steps, callbacks=callbacks, logger=logger, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1,
                      accelerator="cpu", **trainer_args)
    trainer.fit(model, datamodule=data)
    return trainer


def averaged_weights(ema: EMA) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in ema._average_model.module.parameters()])


@pytest.mark.parametrize(
    "batch_size, rampup, every_n_steps, accumulate",
    [(32, None, 1, 1), (64, None, 1, 1), (32, 0.5, 1, 1), (64, 0.5, 1, 1), (32, 0.5, 2, 1), (32, 0.5, 1, 2)],
)
def test_each_update_uses_nvlabs_beta_and_logs_it(batch_size, rampup, every_n_steps, accumulate):
    torch.manual_seed(0)
    ema = EMA(half_life_kimg=HALF_LIFE_KIMG, rampup=rampup, update_every_n_steps=every_n_steps)
    record, logger = RecordWeightsAtSteps(), RecordingLogger()
    fit(Regression(), Points(batch_size), [record, ema], max_steps=8, logger=logger, accumulate_grad_batches=accumulate)

    per_step = batch_size * accumulate  # images per optimizer step (one process)
    updates = [(s, w) for s, w in zip(record.steps, record.weights) if (s - 1) % every_n_steps == 0]
    assert [s for s, _ in updates] == list(range(1, 9, every_n_steps))
    expected_betas, average = [0.0], updates[0][1].clone()  # the first update copies the weights
    for step, weights in updates[1:]:
        half_life_images = HALF_LIFE_KIMG * 1000
        if rampup is not None:
            half_life_images = min(half_life_images, (step - 1) * per_step * rampup)
        beta = 0.5 ** (per_step * every_n_steps / half_life_images)
        expected_betas.append(beta)
        average = beta * average + (1 - beta) * weights
    # Logged at the step of each update (the logger's step is the zero-based step index; Lightning repeats the last
    # value at the steps between updates)
    logged = {m["step"]: m["ema/beta"] for m in logger.metrics if "ema/beta" in m}
    assert [logged[step - 1] for step, _ in updates] == pytest.approx(expected_betas, rel=1e-6)
    assert torch.allclose(averaged_weights(ema), average, atol=1e-6)
    assert not torch.allclose(average, updates[-1][1], atol=1e-3)  # the average lags the training weights


def test_beta_by_hand_at_batch_64():
    torch.manual_seed(0)
    ema, logger = EMA(half_life_kimg=0.2), RecordingLogger()
    fit(Regression(), Points(64), [ema], max_steps=3, logger=logger)
    assert [m["ema/beta"] for m in logger.metrics if "ema/beta" in m] == pytest.approx([0.0, 0.80107, 0.80107], abs=1e-5)


@pytest.mark.parametrize("rampup", [None, 1.0])  # the ramp (200 images at 200 seen) is over before image 256
def test_the_decay_per_image_does_not_depend_on_the_batch_size(rampup):
    shares = {}
    for batch_size in (32, 64):
        ema = EMA(half_life_kimg=HALF_LIFE_KIMG, rampup=rampup)
        fit(Regression(lr=0.0), Points(batch_size), [OnesUntilImages(256), ema], max_steps=640 // batch_size)
        shares[batch_size] = averaged_weights(ema)
    # 384 images after the first 256: the first weights keep 0.5 ** (384 / 200) of the average at either batch size
    for share in shares.values():
        assert torch.allclose(share, torch.full_like(share, 0.5 ** (384 / 200)), rtol=1e-5)
    assert torch.allclose(shares[32], shares[64], rtol=1e-5)


def test_a_fixed_decay_per_update_does_depend_on_the_batch_size():
    shares = {}
    for batch_size in (32, 64):
        ema = EMA(decay=0.9, warmup=False)
        fit(Regression(lr=0.0), Points(batch_size), [OnesUntilImages(256), ema], max_steps=640 // batch_size)
        shares[batch_size] = float(averaged_weights(ema)[0])
    assert shares[32] == pytest.approx(0.9**12) and shares[64] == pytest.approx(0.9**6)


@pytest.mark.parametrize(
    "settings, words",
    [
        ({"decay": 0.99, "half_life_kimg": 10}, "not both"),
        ({"decay": 0.999, "half_life_kimg": 10}, "not both"),  # an explicit default is still a second setting
        ({"rampup": 0.05}, "set half_life_kimg"),
        ({"half_life_kimg": -1}, "kimg must be a finite number >= 0"),
        ({"half_life_kimg": 10, "rampup": 0}, "rampup=0 must be a positive number"),
        ({"half_life_kimg": 10, "update_starting_at_epoch": 1}, "drop update_starting_at_epoch"),
    ],
)
def test_conflicting_or_bad_settings_fail_in_one_line(settings, words):
    with pytest.raises(GenResearchError, match=words) as error:
        EMA(**settings)
    assert "\n" not in str(error.value)


def test_decay_is_0999_when_unset_and_kept_when_set():
    assert EMA().decay == 0.999 and EMA(decay=0.9).decay == 0.9 and EMA(half_life_kimg=10).half_life_kimg == 10


@pytest.mark.integration
def test_a_gan_with_a_half_life_resumes_bit_identical(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.delenv("GEN_RESEARCH_RUN_DIR", raising=False)
    config = ["--config", str(TEST_CONFIGS / "tiny_dcgan_half_life.yaml"), "--checkpoint.every_n_train_steps=1"]
    crash = '--trainer.callbacks+={"class_path": "tests.integration.helpers.CrashAtStep", "init_args": {"step": 6}}'
    assert run_in_process("fit", *config, "--name=full") == 0
    with pytest.raises(SimulatedCrash):
        run_in_process("fit", *config, "--name=split", crash)
    assert run_in_process("fit", *config, "--name=split", "--ckpt_path=last") == 0

    def last(name):
        return torch.load(only_run_dir(tmp_path, name) / "checkpoints" / "last.ckpt", weights_only=True)

    full, resumed = last("full"), last("split")
    assert full["global_step"] == 10 and int(full["averaging_state"]["n_averaged"]) == 10
    assert_same_training_state(full, resumed)  # EMA of G (its beta sequence), both optimizers, RNG
    averaged = [k for k in full["state_dict"] if k.startswith("generator.") and k.endswith("weight")]
    assert any(not torch.equal(full["state_dict"][k], full["current_model_state"][k]) for k in averaged)
