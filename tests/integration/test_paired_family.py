"""The test-only paired family (tests/families/paired.py) through the CLI: fit learns the translation, flips keep
pairs aligned in real training batches, a crashed run resumes bit-identically, evaluate scores translations against
targets, and data without pairs is refused before training."""

import json

import pytest
import torch
from lightning.pytorch import Callback

from tests.families.paired import PairedDigits, TinyTranslator, invert

from .helpers import TEST_CONFIGS, SimulatedCrash, assert_same_training_state, last_checkpoint, only_run_dir, run_in_process

pytestmark = pytest.mark.integration
CONFIG = str(TEST_CONFIGS / "tiny_translator.yaml")
# 2 epochs of 5 batches, a checkpoint after every step (the crash below comes mid-epoch).
FIT = ["--config", CONFIG, "--trainer.enable_progress_bar=false", "--trainer.logger=false", "--checkpoint.every_n_train_steps=1"]
CRASH = '--trainer.callbacks+={"class_path": "tests.integration.helpers.CrashAtStep", "init_args": {"step": 7}}'



def validation_l1(model: TinyTranslator) -> float:
    """Mean L1 between translations and targets over the whole validation split (no flips outside training)."""
    data = PairedDigits(batch_size=64)
    data.setup("fit")
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in data.val_dataloader():
            total += float((model.translate(batch["source"]) - batch["target"]).abs().sum())
            count += batch["target"].numel()
    return total / count


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One uninterrupted run: (its folder, its last checkpoint)."""
    root = tmp_path_factory.mktemp("translator")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("WANDB_MODE", "disabled")
        assert run_in_process("fit", *FIT, "--name=full") == 0
    return root, last_checkpoint(root, "full")


def test_fit_lowers_the_l1_loss_and_logs_val_loss(trained):
    _, checkpoint = trained
    assert checkpoint["global_step"] == 10
    assert checkpoint["hyper_parameters"]["image_shape"] == (1, 8, 8)  # linked in from the data module
    model = TinyTranslator(**{k: v for k, v in checkpoint["hyper_parameters"].items() if not k.startswith("_")})
    torch.manual_seed(7)
    untrained = validation_l1(TinyTranslator(hidden=16, lr=0.01))  # a freshly initialised translator
    model.load_state_dict(checkpoint["state_dict"])
    after = validation_l1(model)
    assert after < 0.5 * untrained, (untrained, after)  # 10 AdamW steps: about 0.7 -> 0.18 here
    # val/loss is what the checkpoint callback ranked by: the L1 of the first 2 validation batches of 32
    scores = [state["best_model_score"] for key, state in checkpoint["callbacks"].items() if key.startswith("ModelCheckpoint")]
    assert scores and all(0 < float(score) < untrained for score in scores), scores


class RecordBatches(Callback):
    """Keeps every training batch as the training step receives it (after the data module's flips)."""

    def __init__(self) -> None:
        self.batches: list[dict[str, torch.Tensor]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.batches.append({name: value.clone() for name, value in batch.items()})


def test_flips_keep_pairs_aligned_in_real_training_batches(tmp_path, monkeypatch):
    import lightning.pytorch as pl

    monkeypatch.chdir(tmp_path)
    pl.seed_everything(3, verbose=False)
    recorder = RecordBatches()
    trainer = pl.Trainer(max_steps=6, limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", devices=1, callbacks=[recorder])
    data = PairedDigits(batch_size=64, random_flip=True)
    trainer.fit(TinyTranslator(), data)
    assert len(recorder.batches) == 6
    originals = {bytes(image.numpy()) for image in data.train_set.dataset.images}  # unflipped sources
    mirrored = {bytes(image.flip(-1).numpy()) for image in data.train_set.dataset.images}
    flipped = kept = 0
    for batch in recorder.batches:
        assert set(batch) == set(data.batch_fields)
        assert torch.equal(batch["target"], invert(batch["source"])) and torch.equal(batch["image"], batch["target"])
        for source in batch["source"]:
            key = bytes(source.numpy())
            kept += key in originals and key not in mirrored
            flipped += key in mirrored and key not in originals
    assert kept > 60 and flipped > 60, (kept, flipped)  # both happen (384 items, p = 0.5 each; symmetric digits aside)


def test_resumed_mid_epoch_crash_gives_the_weights_of_the_uninterrupted_run(trained, workdir):
    _, full = trained
    with pytest.raises(SimulatedCrash):
        run_in_process("fit", *FIT, "--name=split", CRASH)  # in the middle of the second epoch (5 batches an epoch)
    assert last_checkpoint(workdir, "split")["global_step"] == 7
    assert run_in_process("fit", *FIT, "--name=split", "--ckpt_path=last") == 0
    resumed = last_checkpoint(workdir, "split")
    assert resumed["global_step"] == 10
    assert_same_training_state(full, resumed)


def test_evaluate_scores_a_trained_translator_above_an_untrained_one(trained, workdir):
    root, checkpoint = trained
    untrained_path = workdir / "untrained.ckpt"
    torch.manual_seed(0)
    torch.save({**checkpoint, "state_dict": TinyTranslator(hidden=16).state_dict()}, untrained_path)
    results = {}
    for name, path in (("trained", only_run_dir(root, "full") / "checkpoints" / "last.ckpt"), ("untrained", untrained_path)):
        out = workdir / f"{name}.json"
        assert run_in_process("evaluate", "--config", CONFIG, "--ckpt_path", str(path), "--metrics", "ssim,psnr,fid",
                              "--features", "pixels", "--no-cache", "--json", str(out)) == 0
        results[name] = json.loads(out.read_text())
        results[name].pop("provenance")
    for name, numbers in results.items():
        assert set(numbers) >= {"ssim/pixels", "psnr/pixels", "fid/pixels"}, numbers
        assert all(torch.isfinite(torch.tensor(float(value))) for value in numbers.values()), (name, numbers)
    trained_numbers, untrained_numbers = results["trained"], results["untrained"]
    assert trained_numbers["psnr/pixels"] > untrained_numbers["psnr/pixels"] + 3, results  # dB
    assert trained_numbers["ssim/pixels"] > untrained_numbers["ssim/pixels"], results
    assert trained_numbers["fid/pixels"] < untrained_numbers["fid/pixels"], results


def test_data_without_pairs_is_refused_before_training(workdir, capsys):
    assert run_in_process("fit", *FIT, "--data=digits") == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("gen_research: error:")]
    assert len(lines) == 1, lines
    assert "TinyTranslator trains on batch fields source, target, but digits provides image, label (no source, target)" in lines[0]
    assert not (workdir / "runs").exists()  # nothing written: no run folder, no config, no checkpoint
