"""StyleGAN2 through the command line: a fit with G's EMA resumes exactly from a crash across lazy R1 and
path-length steps, and ``sample`` takes the truncation options (psi and cutoff in W) and the noise mode."""

import numpy as np
import pytest
from PIL import Image

from .helpers import CRASH, EVERY_STEP, TEST_CONFIGS, SimulatedCrash, assert_same_training_state, last_checkpoint, only_run_dir, run_in_process

pytestmark = pytest.mark.integration
STYLEGAN = ["--config", str(TEST_CONFIGS / "tiny_stylegan.yaml")]


def test_stylegan_crash_and_resume_matches_an_uninterrupted_run(workdir):
    # R1 every 3 batches (0, 3, 6), path length every 2 (0, 2, 4, 6): the crash at 5 has both on each side.
    assert run_in_process("fit", *STYLEGAN, EVERY_STEP, "--name=full") == 0
    with pytest.raises(SimulatedCrash):
        run_in_process("fit", *STYLEGAN, EVERY_STEP, "--name=split", CRASH.format(5))
    assert run_in_process("fit", *STYLEGAN, EVERY_STEP, "--name=split", "--ckpt_path=last") == 0
    full, resumed = last_checkpoint(workdir, "full"), last_checkpoint(workdir, "split")
    discriminator_steps, generator_steps = (s["state"][0]["step"].item() for s in full["optimizer_states"])
    assert full["global_step"] == 8 and (discriminator_steps, generator_steps) == (8 + 3, 8 + 4)
    assert full["state_dict"]["pl_mean"].item() > 0
    assert_same_training_state(full, resumed)  # both optimizers, EMA of G, w_avg, pl_mean, images seen, RNG


def test_sample_takes_truncation_in_w_and_the_noise_mode(workdir, tmp_path):
    assert run_in_process("fit", *STYLEGAN, "--trainer.max_epochs=1", "--name=psi") == 0
    ckpt = str(only_run_dir(workdir, "psi") / "checkpoints" / "last.ckpt")
    folders = {}
    for psi in ("1", "0.5", "0"):
        folders[psi] = tmp_path / f"psi{psi}"
        assert run_in_process("sample", *STYLEGAN, f"--ckpt_path={ckpt}", "--num-images=8", f"--truncation-psi={psi}",
                              "--noise-mode=const", f"--out={folders[psi]}") == 0
    images = {psi: np.stack([np.asarray(Image.open(folder / f"{i:05d}.png")) for i in range(8)]).astype(float) for psi, folder in folders.items()}
    assert images["0"].std(0).max() == 0  # psi 0 with constant noise: every sample is synthesize(w_avg)
    assert images["0.5"].std(0).mean() < images["1"].std(0).mean()  # truncation narrows the samples
    cut = tmp_path / "cutoff"
    assert run_in_process("sample", *STYLEGAN, f"--ckpt_path={ckpt}", "--num-images=8", "--truncation-psi=0", "--truncation-cutoff=2",
                          "--noise-mode=const", f"--out={cut}") == 0
    assert np.stack([np.asarray(Image.open(cut / f"{i:05d}.png")) for i in range(8)]).astype(float).std(0).max() > 0  # fine styles free
    assert run_in_process("sample", *STYLEGAN, f"--ckpt_path={ckpt}", "--truncation-cutoff=9", f"--out={tmp_path / 'bad'}") == 2
    # The latent grids of the same checkpoint: style mixing (NVlabs' layout) and a walk in W, the same for the same seed.
    layouts = {"style-mixing": ["--columns=3", "--crossover=1"], "interpolation": ["--path-steps=4"]}
    for grid, count in (("style-mixing", (2 + 1) * (3 + 1)), ("interpolation", 2 * 4)):
        for name in ("a", "b"):
            out = tmp_path / f"{grid}-{name}"
            assert run_in_process("sample", *STYLEGAN, f"--ckpt_path={ckpt}", f"--grid={grid}", "--rows=2", *layouts[grid], f"--out={out}") == 0
        first, second = (np.asarray(Image.open(tmp_path / f"{grid}-{name}" / f"{grid}.png")) for name in ("a", "b"))
        assert len(list((tmp_path / f"{grid}-a").glob("0*.png"))) == count and np.array_equal(first, second)
    mixing = [np.asarray(Image.open(tmp_path / "style-mixing-a" / f"{i:05d}.png")).astype(float) for i in range(12)]
    assert mixing[0].max() == 0  # the blank corner
    assert not np.array_equal(mixing[5], mixing[4]) and not np.array_equal(mixing[5], mixing[1])  # a mix is neither source
    assert run_in_process("sample", *STYLEGAN, f"--ckpt_path={ckpt}", "--grid=interpolation", "--crossover=1", f"--out={tmp_path / 'x'}") == 2
