"""The registered GANs through the command line: a DCGAN fit resumes exactly from a crash, a WGAN-GP variant with
n_critic trains its generator every n-th batch, a class-conditional GAN samples the class asked for, and
``sample``/``evaluate`` take the family's --truncation-psi."""

import json

import pytest

from .helpers import CRASH, EVERY_STEP, TEST_CONFIGS, SimulatedCrash, assert_same_training_state, last_checkpoint, only_run_dir, run_in_process, run_subprocess

pytestmark = pytest.mark.integration
DCGAN = ["--config", str(TEST_CONFIGS / "tiny_dcgan.yaml")]



def test_dcgan_crash_and_resume_matches_an_uninterrupted_run(workdir):
    assert run_in_process("fit", *DCGAN, EVERY_STEP, "--name=full") == 0
    with pytest.raises(SimulatedCrash):
        run_in_process("fit", *DCGAN, EVERY_STEP, "--name=split", CRASH.format(6))
    assert run_in_process("fit", *DCGAN, EVERY_STEP, "--name=split", "--ckpt_path=last") == 0
    full, resumed = last_checkpoint(workdir, "full"), last_checkpoint(workdir, "split")
    assert full["global_step"] == 10 and [s["state"][0]["step"].item() for s in full["optimizer_states"]] == [10, 10]
    assert_same_training_state(full, resumed)  # both optimizers, EMA of G, BatchNorm statistics, RNG


def test_ada_p_resumes_exactly_from_a_crash(workdir):
    ada = "--model.init_args.ada={target: 0.05, interval: 2, kimg: 0.05}"  # an update every 2 D steps
    assert run_in_process("fit", *DCGAN, EVERY_STEP, ada, "--name=full") == 0
    with pytest.raises(SimulatedCrash):
        run_in_process("fit", *DCGAN, EVERY_STEP, ada, "--name=split", CRASH.format(5))
    assert run_in_process("fit", *DCGAN, EVERY_STEP, ada, "--name=split", "--ckpt_path=last") == 0
    full, resumed = last_checkpoint(workdir, "full"), last_checkpoint(workdir, "split")
    assert int(full["state_dict"]["ada.observations"]) == 0  # 10 D steps: 5 updates of p, the last at the end
    assert_same_training_state(full, resumed)


def test_wgan_gp_steps_the_generator_every_n_critic_batches(workdir):
    settings = ["--model.init_args.loss=wasserstein", "--model.init_args.gradient_penalty=10", "--model.init_args.n_critic=5",
                "--model.init_args.optimizers={discriminator: {lr: 1.0e-4, betas: [0.0, 0.9]}, generator: {lr: 1.0e-4, betas: [0.0, 0.9]}}"]
    assert run_in_process("fit", *DCGAN, *settings, "--name=wgan") == 0
    state = last_checkpoint(workdir, "wgan")
    discriminator_steps, generator_steps = (s["state"][0]["step"].item() for s in state["optimizer_states"])
    assert state["global_step"] == 10 and (discriminator_steps, generator_steps) == (10, 2)


def test_sample_and_evaluate_take_the_truncation_option(workdir, tmp_path):
    assert run_in_process("fit", *DCGAN, "--name=psi") == 0
    ckpt = str(only_run_dir(workdir, "psi") / "checkpoints" / "last.ckpt")
    folders = {}
    for psi in ("1", "0.5", "0"):
        folders[psi] = tmp_path / f"psi{psi}"
        assert run_in_process("sample", *DCGAN, f"--ckpt_path={ckpt}", "--num-images=8", f"--truncation-psi={psi}", f"--out={folders[psi]}") == 0
    from PIL import Image
    import numpy as np

    images = {psi: np.stack([np.asarray(Image.open(folder / f"{i:05d}.png")) for i in range(8)]).astype(float) for psi, folder in folders.items()}
    assert images["0"].std(0).max() == 0  # psi 0: every sample is G(mean latent)
    assert images["0.5"].std(0).mean() < images["1"].std(0).mean()  # truncation narrows the samples
    assert run_in_process("sample", *DCGAN, f"--ckpt_path={ckpt}", "--truncation-psi=2", f"--out={tmp_path / 'bad'}") == 2
    results = {}
    for psi in ("1", "0.5"):
        out = tmp_path / f"eval{psi}.json"
        assert run_in_process("evaluate", *DCGAN, f"--ckpt_path={ckpt}", "--metrics=fid", "--num-images=64", "--no-cache",
                              f"--truncation-psi={psi}", f"--json={out}") == 0
        results[psi] = json.loads(out.read_text())["fid/pixels"]
    assert results["1"] != results["0.5"]


def test_conditional_gan_trains_on_labels_and_samples_the_class(workdir, tmp_path):
    assert run_in_process("fit", *DCGAN, "--model=cgan", "--model.init_args.latent_dim=8", "--model.init_args.base_channels=8",
                          "--model.init_args.conditioning=projection", "--name=cond") == 0
    ckpt = str(only_run_dir(workdir, "cond") / "checkpoints" / "last.ckpt")
    config = str(only_run_dir(workdir, "cond") / "config.yaml")
    assert run_in_process("sample", "--config", config, f"--ckpt_path={ckpt}", "--num-images=4", "--class=3", f"--out={tmp_path / 's'}") == 0
    assert run_in_process("sample", "--config", config, f"--ckpt_path={ckpt}", "--class=12", f"--out={tmp_path / 'bad'}") == 2


def test_a_monitor_measured_every_n_epochs_ranks_checkpoints_when_measured(workdir):
    """The evaluation callback computes FID every 2nd epoch: the validations in between do not fail the checkpoint
    callback (Lightning raises on a missing monitor), and the best checkpoint is one where FID was measured."""
    evaluation = '--trainer.callbacks+={"class_path": "evaluation", "init_args": {"metrics": "fid", "num_samples": 64, "every_n_epochs": 2}}'
    assert run_in_process("fit", *DCGAN, evaluation, "--trainer.max_epochs=4", "--checkpoint.monitor=fid/pixels", "--name=every2") == 0
    best = sorted((only_run_dir(workdir, "every2") / "checkpoints").glob("best-*.ckpt"))
    assert best and all("epoch001" in p.name or "epoch003" in p.name for p in best), best
    typo = '--checkpoint.monitor=fid/pixel'  # a monitor nobody produces still fails, as in Lightning
    assert run_in_process("fit", *DCGAN, evaluation, "--trainer.max_epochs=2", typo, "--name=typo") != 0


def test_sample_grids_of_a_dcgan_interpolate_label_with_the_classifier_and_refuse_what_it_cannot_draw(workdir, tmp_path, capsys):
    assert run_in_process("fit", *DCGAN, "--name=grids") == 0
    ckpt = f"--ckpt_path={only_run_dir(workdir, 'grids') / 'checkpoints' / 'last.ckpt'}"
    from PIL import Image
    import numpy as np

    for name in ("a", "b"):
        assert run_in_process("sample", *DCGAN, ckpt, "--grid=interpolation", "--rows=3", "--path-steps=4", f"--out={tmp_path / name}") == 0
    assert len(list((tmp_path / "a").glob("0*.png"))) == 12 and (tmp_path / "a" / "interpolation.png").is_file()
    a, b = (np.asarray(Image.open(tmp_path / name / "interpolation.png")) for name in ("a", "b"))
    assert np.array_equal(a, b)  # the seed fixes the grid
    # The shipped 28x28 MNIST classifier labels the 8x8 samples (resized): the pool's classes and the results' are recorded.
    assert run_in_process("sample", *DCGAN, ckpt, "--grid=arithmetic", "--arithmetic=1-0+0", "--pool=64", "--columns=1",
                          f"--out={tmp_path / 'arith'}") in (0, 2)
    summary_file = tmp_path / "arith" / "arithmetic.json"
    if summary_file.is_file():  # a 10-step GAN may draw no 0 or 1 at all: then the one-line error below is the answer
        summary = json.loads(summary_file.read_text())
        assert summary["space"] == "z" and sum(summary["pool_counts"].values()) == 64 and len(summary["results_classes"]) == 1
    else:
        assert "samples read as class" in capsys.readouterr().err
    assert run_in_process("sample", *DCGAN, ckpt, "--grid=style-mixing", f"--out={tmp_path / 'mix'}") == 2
    assert "needs a model with a style space" in capsys.readouterr().err
    assert run_in_process("sample", *DCGAN, ckpt, "--grid=arithmetic", f"--out={tmp_path / 'x'}") == 2
    assert not (tmp_path / "mix").exists() and not (tmp_path / "x").exists()  # refused before any folder is made


def test_a_gan_trains_under_plain_ddp_on_two_cpu_processes(workdir):
    """DDP's default refuses a step that leaves parameters without gradients (a D step never touches G's): the
    multi-network mixin switches find_unused_parameters on, so the GPU experiments' plain `strategy: ddp` works."""
    result = run_subprocess("fit", *DCGAN, "--trainer.strategy=ddp", "--trainer.accelerator=cpu", "--trainer.devices=2",
                            "--name=ddp", cwd=workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    state = last_checkpoint(workdir, "ddp")
    assert state["global_step"] == 10 and [s["state"][0]["step"].item() for s in state["optimizer_states"]] == [10, 10]
    assert int(state["state_dict"]["images_seen"]) == 10 * 32 * 2  # 10 batches of 32 on each of the 2 ranks
