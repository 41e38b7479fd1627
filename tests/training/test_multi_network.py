"""Multi-network training (gen_research/training/multi_network.py, optimizers.py) on the test-only GAN: one training
iteration is one batch for global_step, max_steps, schedules, EMA cadence, checkpoints, validation and preemption;
each network has its own optimizer, schedule and clipping; EMA can average the generator alone."""

import os
import signal

import pytest
import torch
from jsonargparse import Namespace
from lightning.pytorch import Callback, Trainer, seed_everything

from gen_research.commands.lightning import RANKED_FILENAME, UNRANKED_FILENAME, resolve_checkpoint_monitor
from gen_research.data.embedded import Digits
from gen_research.errors import GenResearchError
from gen_research.training.callbacks.checkpoint import RunCheckpoint
from gen_research.training.callbacks.ema import EMA
from gen_research.training.callbacks.preemption import StepBoundaryRequeue
from gen_research.training.lr_schedules import lr_lambda
from gen_research.training.multi_network import grad_norm
from gen_research.training.optimizers import OptimizerSpec, optimizer_specs
from tests.families.tiny_gan import TinyGAN

BATCHES = 5


def fit(model, callbacks=(), **trainer_args):
    args = dict(max_epochs=1, limit_train_batches=BATCHES, limit_val_batches=0, num_sanity_val_steps=0, logger=False,
                enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1)
    trainer = Trainer(callbacks=list(callbacks), **{**args, **trainer_args})
    trainer.fit(model, datamodule=Digits(batch_size=32))
    return trainer


def adam_steps(trainer):
    """How many updates each optimizer applied (AdamW's own per-parameter step count)."""
    return [int(next(iter(optimizer.state.values()))["step"]) for optimizer in trainer.optimizers]


class Record(Callback):
    """What the run looked like at each batch start, validation start and optimizer step."""

    def __init__(self):
        self.batches, self.lrs, self.validations, self.grad_norms = 0, [], [], {"discriminator": [], "generator": []}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.lrs.append([group["lr"] for optimizer in trainer.optimizers for group in optimizer.param_groups])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.batches += 1

    def on_validation_start(self, trainer, pl_module):
        self.validations.append(trainer.global_step)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        name = "discriminator" if optimizer is trainer.optimizers[0] else "generator"
        self.grad_norms[name].append(grad_norm(pl_module.network(name)))


# ---- one iteration = one batch ----------------------------------------------------------------------
def test_global_step_counts_batches_with_two_optimizers():
    seed_everything(0)
    record = Record()
    trainer = fit(TinyGAN(), [record])
    assert record.batches == BATCHES and trainer.global_step == BATCHES
    assert adam_steps(trainer) == [BATCHES, BATCHES]  # both networks stepped every batch


def test_max_steps_stops_at_that_batch():
    seed_everything(0)
    record = Record()
    trainer = fit(TinyGAN(), [record], max_epochs=10, max_steps=7)  # stops in the second epoch
    assert (record.batches, trainer.global_step) == (7, 7)
    assert adam_steps(trainer) == [7, 7]


def test_validation_checkpoints_and_ema_count_batches(tmp_path):
    seed_everything(0)
    record = Record()
    checkpoints = RunCheckpoint(dirpath=tmp_path, monitor=None, every_n_train_steps=2, save_top_k=-1, filename="{step}", save_last=False)
    ema = EMA(decay=0.5, update_every_n_steps=2, warmup=False, target="generator")
    fit(TinyGAN(), [record, checkpoints, ema], limit_train_batches=6, limit_val_batches=1, val_check_interval=2,
        enable_checkpointing=True)
    assert record.validations == [2, 4, 6]
    assert sorted(p.name for p in tmp_path.glob("*.ckpt")) == ["step=2.ckpt", "step=4.ckpt", "step=6.ckpt"]
    assert int(ema._average_model.n_averaged) == 3  # after batches 1, 3 and 5 (step indices 0, 2, 4)


def test_each_network_follows_its_own_schedule():
    seed_everything(0)
    record = Record()
    optimizers = {"generator": {"lr": 1e-3, "warmup_steps": 3}, "discriminator": {"lr": 4e-3, "lr_schedule": "cosine"}}
    trainer = fit(TinyGAN(optimizers=optimizers), [record], max_epochs=10, max_steps=8)
    want = [[4e-3 * lr_lambda(i, 0, 8), 1e-3 * lr_lambda(i, 3, None)] for i in range(8)]  # discriminator, generator
    assert torch.allclose(torch.tensor(record.lrs), torch.tensor(want), rtol=1e-6, atol=0)
    assert [config.scheduler.last_epoch for config in trainer.lr_scheduler_configs] == [8, 8]  # once per iteration
    assert [optimizer.param_groups[0]["betas"] for optimizer in trainer.optimizers] == [(0.5, 0.999), (0.5, 0.999)]


def test_per_network_gradient_clipping_clips_that_network_only():
    def norms(clip):
        seed_everything(0)
        record = Record()
        fit(TinyGAN(optimizers={"discriminator": {"gradient_clip_val": clip}}), [record])
        return record.grad_norms

    unclipped, clipped = norms(None), norms(0.05)
    assert min(unclipped["discriminator"]) > 0.05  # so clipping has something to do
    assert max(clipped["discriminator"]) <= 0.05 * (1 + 1e-4)
    assert abs(clipped["generator"][0] - unclipped["generator"][0]) < 1e-6  # first step: same weights, generator unclipped
    assert max(clipped["generator"]) > 0.05


def test_trainer_gradient_clipping_is_refused_naming_the_per_network_key():
    with pytest.raises(GenResearchError, match=r"model\.init_args\.optimizers\.<network>\.gradient_clip_val") as error:
        fit(TinyGAN(), gradient_clip_val=1.0)
    assert "\n" not in str(error.value) and "discriminator, generator" in str(error.value)


# ---- optimizer specs from YAML ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("optimizers", "message"),
    [
        ({"generator": {"lr": -1.0}}, r"model\.init_args\.optimizers\.generator\.lr=-1\.0 must be a number in \(0, inf\)"),
        ({"discriminator": {"betas": [0.5]}}, r"model\.init_args\.optimizers\.discriminator\.betas=\[0\.5\] must be two numbers in \[0, 1\)"),
        ({"generator": {"beta1": 0.5}}, r"model\.init_args\.optimizers\.generator\.beta1: unknown optimizer setting; the settings are lr, betas"),
        ({"gen": {"lr": 1e-3}}, r"model\.init_args\.optimizers\.gen: no such network; the networks are discriminator, generator"),
        ({"generator": {"lr_schedule": "step"}}, r"optimizers\.generator\.lr_schedule='step' must be one of constant, cosine, linear"),
        ({"generator": {"decay_fraction": 0}}, r"optimizers\.generator\.decay_fraction=0 must be in \(0, 1\]"),
        ({"generator": {"warmup_steps": 2.5}}, r"optimizers\.generator\.warmup_steps=2\.5 must be an integer >= 0"),
        ({"generator": {"gradient_clip_val": -1}}, r"optimizers\.generator\.gradient_clip_val=-1 must be a number in \[0, inf\)"),
        ({"generator": 1e-3}, r"model\.init_args\.optimizers\.generator=0\.001 must be a mapping of optimizer settings"),
    ],
)
def test_bad_optimizer_settings_name_their_key(optimizers, message):
    with pytest.raises(GenResearchError, match=message) as error:
        TinyGAN(optimizers=optimizers)
    assert "\n" not in str(error.value)


def test_specs_fill_in_defaults_in_network_order():
    specs = optimizer_specs({"generator": {"lr": 1e-3}}, ("discriminator", "generator"), defaults={"discriminator": {"betas": [0.0, 0.9]}})
    assert list(specs) == ["discriminator", "generator"]
    assert specs["discriminator"] == OptimizerSpec(betas=(0.0, 0.9)) and specs["generator"] == OptimizerSpec(lr=1e-3)
    assert specs["generator"].as_config()["betas"] == [0.9, 0.999]


# ---- EMA of the generator only ----------------------------------------------------------------------
class SnapshotAroundValidation(Callback):
    """The weights after the last training batch (after EMA's update) and while validation runs (after EMA's swap)."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.trained = {k: v.clone() for k, v in pl_module.state_dict().items()}

    def on_validation_epoch_start(self, trainer, pl_module):
        self.validated = {k: v.clone() for k, v in pl_module.state_dict().items()}
        self.average_holds = {k: v.clone() for k, v in trainer.callbacks[0]._average_model.module.state_dict().items()}


def test_ema_with_a_target_averages_only_that_submodule(tmp_path):
    seed_everything(0)
    ema, snapshot = EMA(decay=0.8, warmup=False, target="generator"), SnapshotAroundValidation()
    model = TinyGAN()
    trainer = fit(model, [ema, snapshot], limit_val_batches=1)
    average_keys = set(ema._average_model.module.state_dict())
    assert average_keys == set(model.generator.state_dict())  # the discriminator is not averaged
    for key, value in snapshot.validated.items():
        network, name = key.split(".", 1)
        if network == "discriminator":  # untouched by the swap
            assert torch.equal(value, snapshot.trained[key]), key
        else:  # the average is swapped in, the training weights parked in the averaged module
            assert not torch.equal(value, snapshot.trained[key]) and torch.equal(snapshot.average_holds[name], snapshot.trained[key]), key
    # After fit Lightning copies the average in; a checkpoint then holds the averaged generator beside the trained
    # discriminator, and every training weight in current_model_state.
    trainer.save_checkpoint(tmp_path / "after.ckpt")
    checkpoint = torch.load(tmp_path / "after.ckpt", weights_only=True)
    for key, value in checkpoint["state_dict"].items():
        network, name = key.split(".", 1)
        want = ema._average_model.module.state_dict()[name] if network == "generator" else ema._training_weights_at_end[key]
        assert torch.equal(value, want), key
    assert all(torch.equal(checkpoint["current_model_state"][k], v) for k, v in ema._training_weights_at_end.items())
    assert int(checkpoint["averaging_state"]["n_averaged"]) == BATCHES


def test_ema_with_an_unknown_target_lists_the_submodules():
    with pytest.raises(GenResearchError, match=r"ema target 'gen': TinyGAN has no such submodule; its submodules are generator, discriminator$"):
        fit(TinyGAN(), [EMA(target="gen")])


# ---- the preemption boundary is the end of the batch -------------------------------------------------
class SignalDuringDiscriminatorStep(Callback):
    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if optimizer is trainer.optimizers[0] and trainer.global_step == 2:
            os.kill(os.getpid(), signal.SIGUSR1)


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="no SIGUSR1 on this platform")
def test_preemption_is_taken_after_both_networks_stepped():
    calls = []
    trainer_box = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: calls.append((trainer_box[0].global_step, adam_steps(trainer_box[0]))))
    try:
        seed_everything(0)
        trainer = Trainer(max_epochs=1, limit_train_batches=BATCHES, limit_val_batches=0, logger=False, enable_checkpointing=False,
                          enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                          callbacks=[SignalDuringDiscriminatorStep(), StepBoundaryRequeue()])
        trainer_box.append(trainer)
        trainer.fit(TinyGAN(), datamodule=Digits(batch_size=32))
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert calls == [(3, [3, 3])]  # at the end of batch 3: its discriminator and generator steps both done


# ---- the default checkpoint monitor comes from the family --------------------------------------------
def checkpoint_config(class_path, **checkpoint):
    values = {"monitor": "auto", "mode": "auto", "filename": RANKED_FILENAME, **checkpoint}
    return Namespace(model=Namespace(class_path=class_path), checkpoint=Namespace(**values))


def test_default_monitor_is_the_familys_declaration():
    gan = checkpoint_config("tests.families.tiny_gan.TinyGAN")
    resolve_checkpoint_monitor(gan)
    assert (gan.checkpoint.monitor, gan.checkpoint.mode, gan.checkpoint.filename) == (None, "min", UNRANKED_FILENAME)
    vae = checkpoint_config("gen_research.models.autoencoder.VAE")
    resolve_checkpoint_monitor(vae)
    assert (vae.checkpoint.monitor, vae.checkpoint.mode, vae.checkpoint.filename) == ("val/loss", "min", RANKED_FILENAME)


def test_a_configured_monitor_wins_over_the_familys():
    gan = checkpoint_config("tests.families.tiny_gan.TinyGAN", monitor="fid/pixels")
    resolve_checkpoint_monitor(gan)
    assert (gan.checkpoint.monitor, gan.checkpoint.mode, gan.checkpoint.filename) == ("fid/pixels", "min", RANKED_FILENAME)
    explicit_none = checkpoint_config("gen_research.models.autoencoder.VAE", monitor=None, mode="max")
    resolve_checkpoint_monitor(explicit_none)
    assert (explicit_none.checkpoint.monitor, explicit_none.checkpoint.mode) == (None, "max")
