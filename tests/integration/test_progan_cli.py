"""ProGAN through the command line: a fit that crashes in the middle of a fade-in and resumes with
--ckpt_path=last ends with the training state of an uninterrupted run (growth phase and alpha, both optimizers
(restarted at each phase change), EMA of G, RNG), and its checkpoint samples at the data's full resolution."""

import pytest

from .helpers import CRASH, EVERY_STEP, TEST_CONFIGS, SimulatedCrash, assert_same_training_state, last_checkpoint, only_run_dir, run_in_process

pytestmark = pytest.mark.integration
PROGAN = ["--config", str(TEST_CONFIGS / "tiny_progan.yaml")]


def test_progan_crash_in_a_fade_in_and_resume_matches_an_uninterrupted_run(workdir, tmp_path):
    assert run_in_process("fit", *PROGAN, EVERY_STEP, "--name=full") == 0
    with pytest.raises(SimulatedCrash):
        run_in_process("fit", *PROGAN, EVERY_STEP, "--name=split", CRASH.format(5))
    crashed = last_checkpoint(workdir, "split")["state_dict"]
    # 5 batches of 16, in the second epoch: the 5th (64 images seen before it) trained 8x8 at alpha (64 - 32) / 64
    assert int(crashed["growth_level"]) == 1 and 0.0 < float(crashed["growth_alpha"]) < 1.0
    assert float(crashed["growth_alpha"]) == 0.5 and int(crashed["images_seen"]) == 5 * 16
    assert run_in_process("fit", *PROGAN, EVERY_STEP, "--name=split", "--ckpt_path=last") == 0
    full, resumed = last_checkpoint(workdir, "full"), last_checkpoint(workdir, "split")
    assert full["global_step"] == 8 and int(full["state_dict"]["images_seen"]) == 8 * 16
    assert (int(full["state_dict"]["growth_level"]), float(full["state_dict"]["growth_alpha"])) == (1, 1.0)
    # Adam restarted at batch 7 (the 8x8 stabilization): 2 steps since; 4x4's fromRGB, unused since, has no state
    assert [max(p["step"].item() for p in s["state"].values()) for s in full["optimizer_states"]] == [2, 2]
    assert len(full["optimizer_states"][0]["state"]) < len(full["optimizer_states"][0]["param_groups"][0]["params"])
    assert_same_training_state(full, resumed)

    ckpt = str(only_run_dir(workdir, "full") / "checkpoints" / "last.ckpt")
    assert run_in_process("sample", *PROGAN, f"--ckpt_path={ckpt}", "--num-images=4", f"--out={tmp_path / 's'}") == 0
    from PIL import Image

    assert Image.open(tmp_path / "s" / "00000.png").size == (8, 8)
