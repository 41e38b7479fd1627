"""The image-to-image families through the command line: each resumes exactly from a crash (CycleGAN with its image
pools full and mixing, the linear LR schedule in its decay), evaluates through the contract, and translates."""

import json

import pytest
import torch

from .helpers import CRASH, EVERY_STEP, TEST_CONFIGS, SimulatedCrash, assert_same_training_state, last_checkpoint, only_run_dir, run_in_process

pytestmark = pytest.mark.integration


def config(name: str) -> list[str]:
    return ["--config", str(TEST_CONFIGS / f"tiny_{name}.yaml")]


@pytest.mark.parametrize("family", ["pix2pix", "cyclegan", "stargan"])
def test_a_crash_resumes_to_the_state_of_an_uninterrupted_run(workdir, family):
    assert run_in_process("fit", *config(family), EVERY_STEP, "--name=full") == 0
    with pytest.raises(SimulatedCrash):
        run_in_process("fit", *config(family), EVERY_STEP, "--name=split", CRASH.format(5))
    assert run_in_process("fit", *config(family), EVERY_STEP, "--name=split", "--ckpt_path=last") == 0
    full, resumed = last_checkpoint(workdir, "full"), last_checkpoint(workdir, "split")
    assert full["global_step"] == 8
    # The linear schedule: constant for 4 iterations, then 4 decaying to 0; the crash at 5 fell in the decay, and the
    # resumed run continued it from there (the reference restarts its schedule unless told --epoch_count).
    lrs = [[group["lr"] for group in state["param_groups"]] for state in full["optimizer_states"]]
    assert lrs == [[group["lr"] for group in state["param_groups"]] for state in resumed["optimizer_states"]] == [[0.0], [0.0]]
    assert [s["last_epoch"] for s in full["lr_schedulers"]] == [s["last_epoch"] for s in resumed["lr_schedulers"]] == [8, 8]
    if family == "cyclegan":  # the pools are full (6 images, 4 a batch) and travel with the checkpoint
        assert int(full["state_dict"]["fake_b_pool.count"]) == 6 and full["state_dict"]["fake_b_pool.images"].abs().sum() > 0
    assert_same_training_state(full, resumed)  # every weight, both optimizers, the pools, BatchNorm statistics, RNG


def test_pix2pix_l1_only_baseline_never_steps_its_discriminator(workdir):
    assert run_in_process("fit", *config("pix2pix"), "--model.init_args.lambda_gan=0", "--name=l1") == 0
    checkpoint = last_checkpoint(workdir, "l1")
    discriminator_state, generator_state = checkpoint["optimizer_states"]
    assert discriminator_state["state"] == {} and generator_state["state"][0]["step"].item() == 8


def test_cyclegan_evaluates_class_preservation_and_cycle_error_and_refuses_paired_metrics(workdir, capsys):
    assert run_in_process("fit", *config("cyclegan"), "--name=cg") == 0
    ckpt = str(only_run_dir(workdir, "cg") / "checkpoints" / "last.ckpt")
    out = workdir / "eval.json"
    args = ["evaluate", *config("cyclegan"), "--ckpt_path", ckpt, "--features", "classifier", "--feature-weights",
            "package://classifier-mnist5k.ckpt", "--num-images", "32", "--no-cache"]
    assert run_in_process(*args, "--metrics", "accuracy,fid,cycle_l1", "--json", str(out)) == 0
    numbers = json.loads(out.read_text())
    assert 0 <= numbers["accuracy/classifier-mnist5k"] <= 1 and numbers["cycle_l1/pixels"] > 0
    capsys.readouterr()
    assert run_in_process(*args, "--metrics", "ssim") == 2  # unpaired: there is no ground truth to compare with
    assert "no target (unpaired data)" in capsys.readouterr().err


def test_stargan_translates_into_every_domain_and_refuses_a_wrong_one(workdir, tmp_path, capsys):
    assert run_in_process("fit", *config("stargan"), "--name=sg") == 0
    ckpt = str(only_run_dir(workdir, "sg") / "checkpoints" / "last.ckpt")
    from PIL import Image

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    Image.new("RGB", (30, 22), (200, 10, 10)).save(inputs / "red.png")  # not a multiple of 4: padded and cropped back
    assert run_in_process("translate", *config("stargan"), "--ckpt_path", ckpt, "--input", str(inputs), "--out", str(tmp_path / "out"),
                          "--target-domain", "all") == 0
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert {"red_red.png", "red_green.png", "red_blue-on-white.png", "red_grid.png"} <= set(written), written
    assert Image.open(tmp_path / "out" / "red_green.png").size == (30, 22)
    capsys.readouterr()
    assert run_in_process("translate", *config("stargan"), "--ckpt_path", ckpt, "--input", str(inputs), "--out", str(tmp_path / "x"),
                          "--target-domain", "purple") == 2
    assert "purple" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_a_model_built_for_other_data_is_refused_before_training(workdir, capsys):
    assert run_in_process("fit", *config("stargan"), "--model.init_args.domains=[a, b, c]", "--name=bad") == 2
    assert "set model.init_args.domains: ['red', 'green', 'blue_on_white']" in capsys.readouterr().err
    assert run_in_process("fit", *config("cyclegan"), "--model.init_args.source_channels=3", "--name=bad2") == 2
    assert "set model.init_args.source_channels: 1" in capsys.readouterr().err
    assert not (workdir / "runs" / "bad").exists() or not any((workdir / "runs" / "bad").rglob("*.ckpt"))
