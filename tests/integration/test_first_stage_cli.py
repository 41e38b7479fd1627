"""The first-stage autoencoders (autoencoder_kl, autoencoder_vq) through the CLI: a run crashed mid-epoch after the
discriminator switched on (disc_start 3 of 8 steps), and one crashed before it, resume bit-identical to an
uninterrupted run (both networks' weights, both optimizers' moments, both LR schedules, the RNG), with no scheduler-
order warning; the VQ config fits, uses its codebook, and its checkpoint is evaluated on pixel pairs (ssim, psnr) and
rFID; ``sample`` refuses a model that only reconstructs; benchmarks/bench_first_stage.py on a tiny checkpoint."""

import csv
import json
import math
import warnings

import pytest
import torch

from .helpers import CRASH, EVERY_STEP, TEST_CONFIGS, SimulatedCrash, assert_same_training_state, last_checkpoint, only_run_dir, run_in_process

pytestmark = pytest.mark.integration
KL = ["--config", str(TEST_CONFIGS / "tiny_autoencoder_kl.yaml")]
VQ = ["--config", str(TEST_CONFIGS / "tiny_autoencoder_vq.yaml")]
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.logger=false"]
STEPS, DISC_START = 8, 3  # the tiny configs: 2 epochs of 4 batches, the discriminator on from global step 3


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny convolutions: one intra-op thread is fastest and immune to a busy CPU (OpenMP spin-waits made a fit 20x
    slower on a loaded 2-core machine). Module scope: it also covers the module-scoped fit below."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("config", [KL, VQ], ids=["autoencoder_kl", "autoencoder_vq"])
def test_crash_after_disc_start_and_resume_matches_an_uninterrupted_run(config, workdir):
    flags = [*config, *QUIET, EVERY_STEP]  # the same flags for all three runs
    assert run_in_process("fit", *flags, "--name=full") == 0
    with pytest.raises(SimulatedCrash):
        run_in_process("fit", *flags, "--name=split", CRASH.format(5))  # mid epoch 1, the discriminator training
    crashed = last_checkpoint(workdir, "split")
    assert crashed["global_step"] == 5
    assert run_in_process("fit", *flags, "--name=split", "--ckpt_path=last") == 0
    full, resumed = last_checkpoint(workdir, "full"), last_checkpoint(workdir, "split")
    assert full["global_step"] == STEPS  # one step a batch, not one per optimizer step
    # Both optimizers and schedules are in the checkpoint; the discriminator's stepped only from disc_start on.
    assert len(full["optimizer_states"]) == 2 and len(full["lr_schedulers"]) == 2
    assert [state["state"][0]["step"].item() for state in full["optimizer_states"]] == [STEPS, STEPS - DISC_START]
    assert [state["state"][0]["step"].item() for state in crashed["optimizer_states"]] == [5, 5 - DISC_START]
    assert [schedule["last_epoch"] for schedule in full["lr_schedulers"]] == [STEPS, STEPS]  # both step every batch
    assert_same_training_state(full, resumed)


def test_crash_before_disc_start_resumes_into_the_adversarial_phase(workdir):
    # The crash leaves a discriminator optimizer with no moments yet; the resumed run must start it at step 3 as the
    # uninterrupted one did. No monitor: under manual optimization Lightning defers step checkpoints until the
    # monitored val/rec_loss exists (after the first validation), so with it no checkpoint would precede the crash.
    flags = [*KL, *QUIET, EVERY_STEP, "--checkpoint.monitor=null"]
    assert run_in_process("fit", *flags, "--name=full") == 0
    with pytest.raises(SimulatedCrash):
        run_in_process("fit", *flags, "--name=split", CRASH.format(2))
    assert last_checkpoint(workdir, "split")["optimizer_states"][1]["state"] == {}
    assert run_in_process("fit", *flags, "--name=split", "--ckpt_path=last") == 0
    assert_same_training_state(last_checkpoint(workdir, "full"), last_checkpoint(workdir, "split"))


def test_no_scheduler_order_warning_before_disc_start(workdir):
    """The discriminator's schedule steps every batch while its optimizer waits for disc_start (on purpose:
    multi_network.py); torch's "lr_scheduler.step() before optimizer.step()" warning would be noise on every run."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert run_in_process("fit", *KL, *QUIET, "--trainer.max_epochs=1") == 0
    assert not [w for w in caught if "lr_scheduler.step()" in str(w.message)]


@pytest.fixture(scope="module")
def vq_run(tmp_path_factory):
    """The tiny autoencoder_vq fitted with the CSV logger: (working folder, run folder)."""
    root = tmp_path_factory.mktemp("vq_run")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("WANDB_MODE", "disabled")
        patch.delenv("GEN_RESEARCH_RUN_DIR", raising=False)
        assert run_in_process("fit", *VQ, "--trainer.enable_progress_bar=false", "--trainer.logger=[{class_path: csv}]") == 0
    return root, only_run_dir(root, "tiny_autoencoder_vq")


def test_vq_fit_logs_finite_losses_and_uses_its_codebook(vq_run):
    _, run = vq_run
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    train = [row for row in rows if row.get("train/rec_loss")]
    assert len(train) == STEPS  # log_every_n_steps 1
    for key in ("train/rec_loss", "train/quant_loss", "train/perplexity", "train/loss"):
        assert all(math.isfinite(float(row[key])) for row in train), key
    adversarial = [row for row in train if row.get("train/disc_loss")]
    assert len(adversarial) == STEPS - DISC_START  # the discriminator's loss only from disc_start on
    assert all(math.isfinite(float(row["train/g_loss"])) and float(row["train/d_weight"]) >= 0 for row in adversarial)
    validation = [row for row in rows if row.get("val/rec_loss")]
    assert len(validation) == 2 and all(math.isfinite(float(row["val/psnr"])) for row in validation)
    assert float(validation[1]["val/rec_loss"]) < float(validation[0]["val/rec_loss"])  # it learns
    # More than a handful of the 16 codes in use on validation batches (a collapsed codebook has perplexity ~1).
    assert float(validation[-1]["val/perplexity"]) > 3.0
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == STEPS and len(list((run / "checkpoints").glob("best-*.ckpt"))) == 1
    assert (run / "samples" / "epoch001-reconstructions.png").is_file()


def test_vq_checkpoint_codes_cover_the_codebook_on_the_test_split(vq_run):
    from gen_research.commands.loading import load_model_and_data
    from gen_research.data.batch import as_fields

    _, run = vq_run
    model, datamodule, _ = load_model_and_data(str(run / "config.yaml"), str(run / "checkpoints" / "last.ckpt"))
    datamodule.setup("test")
    images = torch.stack([as_fields(datamodule.test_set[i])["image"] for i in range(64)])
    with torch.no_grad():
        codes = model.eval().encode_codes(images)
        assert codes.shape == (64, 4, 4)
        assert len(codes.unique()) >= 4  # of 16
        assert torch.allclose(model.decode_codes(codes), model.reconstruct(images), atol=1e-5)


def test_evaluate_a_vq_checkpoint_on_reconstruction_pairs(vq_run, monkeypatch):
    root, run = vq_run
    monkeypatch.chdir(root)
    ckpt = str(run / "checkpoints" / "last.ckpt")
    assert run_in_process("evaluate", *VQ, "--ckpt_path", ckpt, "--features", "pixels", "--metrics", "ssim,psnr",
                          "--split", "test", "--batch-size", "64", "--json", "pairs.json") == 0
    numbers = json.loads((root / "pairs.json").read_text())
    assert numbers.pop("provenance")["sampling"]["mode"] == "reconstructions"
    assert set(numbers) == {"ssim/pixels", "psnr/pixels"}
    assert 5.0 < numbers["psnr/pixels"] < 60.0 and 0.0 < numbers["ssim/pixels"] <= 1.0
    # rFID: the reconstructions of the split are the generated set of a model that only reconstructs.
    assert run_in_process("evaluate", *VQ, "--ckpt_path", ckpt, "--features", "pixels", "--metrics", "fid",
                          "--split", "test", "--batch-size", "64", "--cache-dir", "cache", "--json", "fid.json") == 0
    assert json.loads((root / "fid.json").read_text())["fid/pixels"] > 0


def test_sample_refuses_a_first_stage_that_only_reconstructs(vq_run, monkeypatch, capsys):
    root, run = vq_run
    monkeypatch.chdir(root)
    code = run_in_process("sample", *VQ, "--ckpt_path", str(run / "checkpoints" / "last.ckpt"), "--num-images", "4", "--out", "s")
    assert code == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert "sample needs a model that can generate new images (sample); VQAutoencoder cannot" in message
    assert not (root / "s").exists()


def test_bench_first_stage_reports_psnr_ssim_and_rfid_of_a_tiny_mnist5k_checkpoint(workdir, capsys):
    """benchmarks/bench_first_stage.py on a 2-step KL first stage of 28x28 mnist5k digits (the experiment's data; the
    classifier's features need 28x28): its numbers are the evaluate command's, and the markdown row carries them."""
    import importlib.util

    from .helpers import REPO

    (workdir / "tiny_mnist.yaml").write_text(
        f"defaults: [{TEST_CONFIGS / 'tiny_autoencoder_kl.yaml'}]\n"
        "data: {class_path: mnist5k, init_args: {batch_size: 16}}\n"
        "trainer: {max_epochs: 1, limit_train_batches: 2, limit_val_batches: 1, callbacks: []}\n")
    assert run_in_process("fit", "--config", "tiny_mnist.yaml", *QUIET) == 0
    ckpt = only_run_dir(workdir, "tiny_mnist") / "checkpoints" / "last.ckpt"
    spec = importlib.util.spec_from_file_location("bench_first_stage", REPO / "benchmarks" / "bench_first_stage.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    capsys.readouterr()
    assert bench.main([str(ckpt), "--out", "bench", "--num-images", "48", "--batch-size", "48"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((workdir / "bench" / "summary.json").read_text())
    evaluated = json.loads((workdir / "bench" / "evaluate.json").read_text())
    assert evaluated.pop("provenance")["num_reference"] == 48
    assert set(evaluated) == {"fid/classifier-mnist5k", "ssim/pixels", "psnr/pixels"}
    assert summary["rfid"] == evaluated["fid/classifier-mnist5k"] > 0  # 2 steps: blurry, far from the test images
    assert summary["psnr"] == evaluated["psnr/pixels"] and summary["ssim"] == evaluated["ssim/pixels"]
    assert 0 < summary["psnr"] < 30 and -1 <= summary["ssim"] < 1
    assert summary["trained_steps"] == 2 and summary["num_images"] == 48 and summary["precision"] == "32-true"
    row = f"| autoencoder_kl_mnist5k | 2 | {summary['psnr']:.2f} | {summary['ssim']:.4f} | {summary['rfid']:.3f} | 48 |"
    assert row in printed.splitlines()
    with pytest.raises(SystemExit):  # results are never overwritten
        bench.main([str(ckpt), "--out", "bench"])
