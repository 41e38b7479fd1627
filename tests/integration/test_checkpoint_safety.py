"""Which checkpoint a command takes, and what is never written: --ckpt_path last|best on every subcommand, the
newest by global step whatever Lightning named it, no last-v1.ckpt on resume, damaged files reported, diverged
runs stopped before a checkpoint, and checkpoint writes that survive a kill on any TMPDIR."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from .helpers import TEST_CONFIGS, only_run_dir, run_in_process, snapshot

pytestmark = pytest.mark.integration
TINY = ["--config", str(TEST_CONFIGS / "tiny_vae.yaml"), "--trainer.enable_progress_bar=false", "--trainer.logger=false"]


def ckpts(run_dir):
    return sorted(p.name for p in (run_dir / "checkpoints").glob("*.ckpt"))


@pytest.fixture
def trained(workdir):
    """One finished 2-epoch run (best at epoch 0 or 1, last at step 10)."""
    assert run_in_process("fit", *TINY) == 0
    return only_run_dir(workdir, "tiny_vae")


@pytest.mark.parametrize("subcommand", ["validate", "test", "predict"])
def test_evaluation_subcommands_resolve_last_and_best_like_fit(trained, subcommand, capsys):
    best = next((trained / "checkpoints").glob("best-*.ckpt"))
    for name, expected in (("last", trained / "checkpoints" / "last.ckpt"), ("best", best)):
        loaded = []
        original = torch.load

        def spy(path, *args, **kwargs):
            loaded.append(os.path.abspath(path) if isinstance(path, (str, os.PathLike)) else path)
            return original(path, *args, **kwargs)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(torch, "load", spy)
            assert run_in_process(subcommand, *TINY, f"--ckpt_path={name}") == 0
        assert str(expected.resolve()) in loaded, (name, loaded)


@pytest.mark.parametrize("subcommand", ["validate", "test", "predict"])
def test_evaluation_subcommands_refuse_to_run_without_trained_weights(workdir, subcommand, capsys):
    assert run_in_process(subcommand, *TINY) == 2
    assert "needs trained weights: pass --ckpt_path last" in capsys.readouterr().err
    assert run_in_process(subcommand, *TINY, "--ckpt_path=last") == 2  # no run yet
    assert "no checkpoint under" in capsys.readouterr().err
    assert not (workdir / "runs").exists() or not any((workdir / "runs").rglob("*.ckpt"))


def test_last_is_the_highest_global_step_whatever_its_name(trained, capsys):
    # A copy named like Lightning's versioned files, holding a later step than last.ckpt: it wins.
    checkpoint = torch.load(trained / "checkpoints" / "last.ckpt", weights_only=True)
    checkpoint["global_step"] = 99
    torch.save(checkpoint, trained / "checkpoints" / "last-v1.ckpt")
    os.utime(trained / "checkpoints" / "last.ckpt")  # the older step written later: mtime must not decide
    from gen_research.training.run_folder import find_last_checkpoint, newest_valid_checkpoint

    assert newest_valid_checkpoint(trained).name == "last-v1.ckpt"
    assert find_last_checkpoint(trained.parents[1], "tiny_vae").name == "last-v1.ckpt"


def test_a_damaged_newest_checkpoint_is_reported_with_the_previous_valid_one(trained, capsys):
    before = snapshot(trained)
    (trained / "checkpoints" / "last-v1.ckpt").write_bytes((trained / "checkpoints" / "last.ckpt").read_bytes()[:5000])
    assert run_in_process("fit", *TINY, "--ckpt_path=last", "--trainer.max_epochs=3") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "last-v1.ckpt cannot be read (truncated" in err[0] and "last.ckpt (step 10)" in err[0], err
    assert all(snapshot(trained)[path] == stat for path, stat in before.items())  # nothing rewritten


def test_resume_by_another_spelling_of_the_run_folder_keeps_writing_last_ckpt(workdir):
    assert run_in_process("fit", *TINY, "--trainer.max_epochs=1") == 0
    run_dir = only_run_dir(workdir, "tiny_vae")
    absolute = (run_dir / "checkpoints" / "last.ckpt").resolve()  # the run used a relative path
    assert run_in_process("fit", *TINY, f"--ckpt_path={absolute}") == 0
    names = ckpts(run_dir)
    assert "last-v1.ckpt" not in names and "last.ckpt" in names, names
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 10


def test_a_diverged_run_fails_and_keeps_its_last_finite_checkpoint(workdir, capsys):
    # A checkpoint every step; lr 1e8 makes the weights explode after the first updates and the loss non-finite.
    code = run_in_process("fit", *TINY, "--model.init_args.lr=1e8", "--checkpoint.every_n_train_steps=1", "--checkpoint.monitor=null")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    # Names what went non-finite: a logged loss term (train/...), or the first parameter whose gradient overflowed.
    assert "training diverged at step" in err[0] and ("train/" in err[0] or "the gradient of encoder." in err[0]), err[0]
    diverged_step = int(err[0].split("training diverged at step ")[1].split(":")[0])
    run_dir = only_run_dir(workdir, "tiny_vae")
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == diverged_step - 1 and str((run_dir / "checkpoints" / "last.ckpt").relative_to(workdir)) in err[0]
    for key in ("state_dict", "current_model_state"):  # never overwritten by the non-finite update
        assert all(bool(v.isfinite().all()) for v in last[key].values() if v.is_floating_point()), key


def test_a_fresh_diverging_run_writes_no_checkpoint_and_exits_non_zero(workdir, capsys):
    assert run_in_process("fit", *TINY, "--model.init_args.lr=1e8") == 2
    assert "training diverged" in capsys.readouterr().err
    assert not list((workdir / "runs").rglob("*.ckpt"))


KILL_DURING_WRITE = textwrap.dedent("""
    import os, signal, sys, torch
    from gen_research.training.callbacks.checkpoint import AtomicCheckpointIO

    class Dying:
        # torch.save calls write() many times; die half-way through the new checkpoint.
        def __reduce_ex__(self, protocol):
            os.kill(os.getpid(), signal.SIGKILL)

    AtomicCheckpointIO().save_checkpoint({"weights": torch.ones(1000, 1000), "late": Dying()}, sys.argv[1])
""")


def test_a_checkpoint_write_killed_midway_leaves_the_previous_file_with_tmpdir_on_another_filesystem(tmp_path):
    shm = "/dev/shm"
    if not os.path.isdir(shm) or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs a TMPDIR on another filesystem than the test folder (/dev/shm here)")
    from gen_research.training.callbacks.checkpoint import AtomicCheckpointIO

    target = tmp_path / "checkpoints" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"global_step": 1, "weights": torch.zeros(3)}, target)
    env = {**os.environ, "TMPDIR": shm}
    result = subprocess.run([sys.executable, "-c", KILL_DURING_WRITE, str(target)], env=env, capture_output=True, timeout=300)
    assert result.returncode == -signal.SIGKILL
    previous = torch.load(target, weights_only=True)
    assert previous["global_step"] == 1 and torch.equal(previous["weights"], torch.zeros(3))
    leftovers = [p.name for p in target.parent.iterdir() if p != target]
    assert all(name.startswith(".tmp-last.ckpt.") for name in leftovers), leftovers  # the half-written temp, never the target


def test_sample_and_evaluate_read_last_and_best_like_fit(trained, workdir, monkeypatch):
    config = str(TEST_CONFIGS / "tiny_vae.yaml")
    loaded, original = [], torch.load
    def spy(path, *args, **kwargs):
        if isinstance(path, (str, os.PathLike)):
            loaded.append(os.path.abspath(path))
        return original(path, *args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    assert run_in_process("sample", "--config", config, "--ckpt_path", "last", "--num-images", "4", "--out", "from-last") == 0
    assert str((trained / "checkpoints" / "last.ckpt").resolve()) in loaded
    assert len(list((workdir / "from-last").glob("*.png"))) >= 1
    loaded.clear()
    assert run_in_process("evaluate", "--config", config, "--ckpt_path", "best", "--metrics", "fid", "--num-images", "20") == 0
    assert str(next((trained / "checkpoints").glob("best-*.ckpt")).resolve()) in loaded
