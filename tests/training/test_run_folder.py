import os
import time
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback

from gen_research.errors import GenResearchError
from gen_research.training.run_folder import (
    check_checkpoint_matches,
    find_last_checkpoint,
    new_run_dir,
    read_checkpoint,
    remove_empty_run_dirs,
    run_dir_of_checkpoint,
)


SLURM_VARIABLES = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT", "SLURM_STEP_ID",
                   "SLURM_PROCID", "SLURM_JOB_START_TIME", "SLURM_NTASKS", "SLURM_JOB_NAME")


@pytest.fixture(autouse=True)
def _no_inherited_env(monkeypatch):
    for name in ("GEN_RESEARCH_RUN_DIR", *SLURM_VARIABLES):
        monkeypatch.delenv(name, raising=False)


def test_new_run_dirs_never_collide(tmp_path):
    first = new_run_dir(tmp_path, "exp", "fit")
    second = new_run_dir(tmp_path, "exp", "fit")  # same second: gets a suffix, not the same folder
    assert first != second and first.is_dir() and second.is_dir()
    assert first.parent == tmp_path / "exp"
    assert new_run_dir(tmp_path, "exp", "test").name.endswith("-test")




def test_inherited_run_dir_is_used_by_ddp_workers(tmp_path, monkeypatch):
    monkeypatch.setenv("GEN_RESEARCH_RUN_DIR", str(tmp_path / "chosen"))
    assert new_run_dir(tmp_path, "exp", "fit") == tmp_path / "chosen"


def test_remove_empty_run_dirs_keeps_folders_with_files(tmp_path):
    empty = new_run_dir(tmp_path, "a", "fit")
    used = new_run_dir(tmp_path, "b", "fit")
    (used / "config.yaml").write_text("x")
    remove_empty_run_dirs()
    assert not empty.exists() and (used / "config.yaml").exists()


def test_find_last_checkpoint_picks_newest(tmp_path):
    with pytest.raises(GenResearchError, match="no checkpoint under"):
        find_last_checkpoint(tmp_path, "exp")
    paths = []
    for run in ("r1", "r2"):
        path = tmp_path / "exp" / run / "checkpoints" / "last.ckpt"
        path.parent.mkdir(parents=True)
        torch.save({"global_step": 5, "state_dict": {}}, path)
        paths.append(path)
    os.utime(paths[0], (time.time() + 10, time.time() + 10))
    assert find_last_checkpoint(tmp_path, "exp") == paths[0]
    assert run_dir_of_checkpoint(paths[0]) == tmp_path / "exp" / "r1"
    assert run_dir_of_checkpoint(tmp_path / "elsewhere.ckpt") is None


def test_read_checkpoint_errors(tmp_path):
    with pytest.raises(GenResearchError, match="checkpoint not found"):
        read_checkpoint(tmp_path / "missing.ckpt")
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(GenResearchError, match="cannot read checkpoint"):
        read_checkpoint(garbage)
    plain = tmp_path / "plain.ckpt"
    torch.save({"weights": 1}, plain)
    with pytest.raises(GenResearchError, match="not a Lightning checkpoint"):
        read_checkpoint(plain)


def test_checkpoint_mismatch_is_explained():
    model = torch.nn.Linear(3, 2)
    good = {"state_dict": model.state_dict(), "hyper_parameters": {"_class_path": "pkg.Model"}}
    check_checkpoint_matches(good, "x.ckpt", model, "pkg.Model")
    with pytest.raises(GenResearchError, match="written by model pkg.Other"):
        check_checkpoint_matches({**good, "hyper_parameters": {"_class_path": "pkg.Other"}}, "x.ckpt", model, "pkg.Model")
    reshaped = {"state_dict": torch.nn.Linear(4, 2).state_dict()}
    with pytest.raises(GenResearchError, match=r"weight has shape \(2, 4\) in the checkpoint but \(2, 3\)"):
        check_checkpoint_matches(reshaped, "x.ckpt", model, "pkg.Model")
    with pytest.raises(GenResearchError, match="missing from the checkpoint"):
        check_checkpoint_matches({"state_dict": {"weight": model.weight}}, "x.ckpt", model, "pkg.Model")


# ---------------------------------------------------------------------------------- SLURM run folders
def _in_slurm_step(monkeypatch, step: str | None, task: int = 0, restart: int | None = None, job: str = "4242") -> None:
    """The variables srun gives one task of one step (step None: the job script itself, no srun)."""
    monkeypatch.setenv("SLURM_JOB_ID", job)
    monkeypatch.setenv("SLURM_PROCID", str(task))
    for name, value in (("SLURM_STEP_ID", step), ("SLURM_RESTART_COUNT", None if restart is None else str(restart))):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)


FIT_A = ["--config", "a.yaml"]
FIT_B = ["--config", "b.yaml"]


def test_two_invocations_in_one_slurm_job_get_two_folders(tmp_path, monkeypatch):
    _in_slurm_step(monkeypatch, step="0")
    first = new_run_dir(tmp_path, "exp", "fit", FIT_A)
    _in_slurm_step(monkeypatch, step="1")  # the next `srun ... fit` of the job script, same arguments
    second = new_run_dir(tmp_path, "exp", "fit", FIT_A)
    _in_slurm_step(monkeypatch, step=None)  # `python -m gen_research fit` twice in the script itself, no srun
    third, fourth = new_run_dir(tmp_path, "exp", "fit", FIT_A), new_run_dir(tmp_path, "exp", "fit", FIT_A)
    samples = [new_run_dir(tmp_path, "exp", "sample", ["--config", "a.yaml"]) for _ in range(2)]
    assert [p.name for p in (first, second, third, fourth)] == ["slurm-4242", "slurm-4242-1", "slurm-4242-2", "slurm-4242-3"]
    assert [p.name for p in samples] == ["slurm-4242-sample", "slurm-4242-sample-1"]
    assert all(p.is_dir() for p in (first, second, third, fourth, *samples))


def test_requeued_job_gets_the_folder_of_the_same_invocation_of_its_first_start(tmp_path, monkeypatch):
    script = [("0", "fit", FIT_A), ("1", "fit", FIT_A), ("2", "fit", FIT_B), ("3", "sample", FIT_A)]
    first_start = []
    for step, subcommand, args in script:
        _in_slurm_step(monkeypatch, step=step)  # first start: SLURM_RESTART_COUNT unset
        first_start.append(new_run_dir(tmp_path, "exp", subcommand, args))
    assert len(set(first_start)) == 4
    (first_start[0] / "checkpoints").mkdir()  # the folders have files now
    for restart in (1, 2):
        again = []
        for step, subcommand, args in script:
            _in_slurm_step(monkeypatch, step=step, restart=restart)
            again.append(new_run_dir(tmp_path, "exp", subcommand, args))
        assert again == first_start, restart
    # A requeued script that skips the first fit of B (e.g. `[ -f done ] || fit B`): commands map by their own count.
    _in_slurm_step(monkeypatch, step="0", restart=3)
    assert new_run_dir(tmp_path, "exp", "fit", FIT_B) == first_start[2]
    assert new_run_dir(tmp_path, "exp", "fit", FIT_B) not in first_start  # B's second invocation: new in this start
    # Another job never shares them, nor does a reused job id that Slurm >= 23.02 gives another start time.
    _in_slurm_step(monkeypatch, step="0", job="4243")
    assert new_run_dir(tmp_path, "exp", "fit", FIT_A).name == "slurm-4243"
    _in_slurm_step(monkeypatch, step="0")
    monkeypatch.setenv("SLURM_JOB_START_TIME", "1790000000")
    assert new_run_dir(tmp_path, "exp", "fit", FIT_A) not in first_start


def _task_of_step(args: tuple) -> list[str]:
    """One srun task (forked process): waits for the others, then asks for folders as the command would."""
    root, task, barrier = args
    os.environ.update({"SLURM_JOB_ID": "77", "SLURM_STEP_ID": "5", "SLURM_PROCID": str(task)})
    barrier.wait()
    # `srun bash -c "fit; fit"`: every task runs the same command twice in one step
    return [str(new_run_dir(Path(root), "exp", "fit", FIT_A)) for _ in range(2)]


def test_tasks_of_one_step_agree_on_the_folder_without_racing(tmp_path):
    import multiprocessing

    context = multiprocessing.get_context("fork")
    tasks = 4
    barrier = context.Manager().Barrier(tasks)
    with context.Pool(tasks) as pool:
        folders = pool.map(_task_of_step, [(str(tmp_path), task, barrier) for task in range(tasks)])
    assert all(result == folders[0] for result in folders), folders
    assert [Path(p).name for p in folders[0]] == ["slurm-77", "slurm-77-1"]
    assert sorted(p.name for p in (tmp_path / "exp").iterdir() if p.is_dir()) == ["slurm-77", "slurm-77-1"]


def test_a_damaged_invocation_record_is_one_line_error(tmp_path, monkeypatch):
    _in_slurm_step(monkeypatch, step="0")
    new_run_dir(tmp_path, "exp", "fit", FIT_A)
    record = tmp_path / "exp" / ".slurm-4242.invocations.json"
    record.write_text("{half")
    with pytest.raises(GenResearchError, match=r"invocations.json is damaged \(not JSON\); move it away"):
        new_run_dir(tmp_path, "exp", "fit", FIT_A)


def _lightning_checkpoint(path: Path, step: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"global_step": step, "state_dict": {"w": torch.full((2,), float(step))}}, path)
    return path


def _resume_choice(run_dir: Path, ckpt_path=None, given: Path | None = None) -> str | None:
    """What GenResearchCLI._resume_requeued_slurm_job makes of a fit's ckpt_path in ``run_dir``."""
    from types import SimpleNamespace

    from jsonargparse import Namespace

    from gen_research.commands.lightning import GenResearchCLI

    cli = SimpleNamespace(subcommand="fit", run_dir=run_dir, checkpoint_path=given,
                          checkpoint=read_checkpoint(given) if given else None)
    config = Namespace(ckpt_path=str(given) if given else ckpt_path)
    GenResearchCLI._resume_requeued_slurm_job(cli, config)
    assert cli.checkpoint_path is None or str(cli.checkpoint_path) == config.ckpt_path
    return config.ckpt_path


def test_requeued_slurm_fit_resumes_from_the_newest_checkpoint_not_a_stale_hpc_one(tmp_path, monkeypatch):
    run = tmp_path / "exp" / "slurm-4242"
    last = _lightning_checkpoint(run / "checkpoints" / "last.ckpt", 40)
    stale = _lightning_checkpoint(run / "hpc_ckpt_1.ckpt", 10)  # an earlier preemption's; written last here
    os.utime(last, (time.time() - 60, time.time() - 60))
    _in_slurm_step(monkeypatch, step="0", restart=2)
    assert _resume_choice(run) == str(last)  # Lightning alone would take hpc_ckpt_1 (the highest hpc number)
    assert _resume_choice(run, "hpc") == str(last)
    newer_hpc = _lightning_checkpoint(run / "hpc_ckpt_2.ckpt", 50)
    assert _resume_choice(run) == str(newer_hpc)
    # a job begun with --ckpt_path of an older checkpoint continues from its run's newest after a requeue
    assert _resume_choice(run, given=stale) == str(newer_hpc)
    assert _resume_choice(run, given=newer_hpc) == str(newer_hpc)
    # no checkpoint (requeued before the first one was written): a fresh start; outside SLURM: nothing changes
    assert _resume_choice(tmp_path / "exp" / "empty") is None
    monkeypatch.delenv("SLURM_JOB_ID")
    assert _resume_choice(run) is None


def test_first_start_of_a_slurm_job_never_resumes_someone_elses_checkpoints(tmp_path, monkeypatch):
    run = tmp_path / "exp" / "slurm-4242"
    _lightning_checkpoint(run / "checkpoints" / "last.ckpt", 40)
    _in_slurm_step(monkeypatch, step="0")  # SLURM_RESTART_COUNT unset: not a requeue
    with pytest.raises(GenResearchError, match="already holds checkpoints .* never requeued"):
        _resume_choice(run)
    with pytest.raises(GenResearchError, match="--ckpt_path hpc: no checkpoint in"):
        _resume_choice(tmp_path / "exp" / "empty", "hpc")


class PreemptedFirstStart(Callback):
    """Test callback: on a SLURM job's first start only, writes what Lightning's USR1 handler writes
    (``hpc_ckpt_1.ckpt`` in the run folder) at ``hpc_at``, then dies at ``crash_at`` as on a node failure (no USR1,
    no HPC checkpoint). The requeued start has the same arguments, as a requeued job script has."""

    def __init__(self, hpc_at: int, crash_at: int) -> None:
        self.hpc_at, self.crash_at = hpc_at, crash_at

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        from tests.integration.helpers import SimulatedCrash

        if os.environ.get("SLURM_RESTART_COUNT", "0") != "0":
            return
        if trainer.global_step == self.hpc_at:
            trainer.save_checkpoint(Path(trainer.default_root_dir) / "hpc_ckpt_1.ckpt")
        if trainer.global_step == self.crash_at:
            raise SimulatedCrash(f"node failure at step {self.crash_at}")


@pytest.mark.integration
def test_slurm_job_requeued_without_usr1_resumes_from_its_newest_checkpoint(tmp_path, monkeypatch, capsys):
    from tests.integration.helpers import TEST_CONFIGS, SimulatedCrash, run_in_process

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("GEN_RESEARCH_IMPORTS", "tests")
    common = ["--config", str(TEST_CONFIGS / "tiny_vae.yaml"), "--trainer.enable_progress_bar=false", "--trainer.logger=false",
              "--checkpoint.every_n_train_steps=1"]
    preempted = '--trainer.callbacks+={"class_path": "tests.training.test_run_folder.PreemptedFirstStart", "init_args": {"hpc_at": 3, "crash_at": 7}}'
    _in_slurm_step(monkeypatch, step="0", job="31")
    with pytest.raises(SimulatedCrash):
        run_in_process("fit", *common, "--name=job", preempted)
    run_dir = Path("runs") / "job" / "slurm-31"
    assert torch.load(run_dir / "hpc_ckpt_1.ckpt", weights_only=False)["global_step"] == 3  # stale after step 7
    # the crash came in step 7's batch end, before the checkpoint callback (Lightning runs those last)
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 6
    capsys.readouterr()
    _in_slurm_step(monkeypatch, step="0", job="31", restart=1)  # `scontrol requeue`: the same script again
    assert run_in_process("fit", *common, "--name=job", preempted) == 0
    assert f"resuming from {run_dir / 'checkpoints' / 'last.ckpt'} (step 6)" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "runs" / "job").iterdir() if p.is_dir()) == ["slurm-31"]
    assert "last.ckpt" in (run_dir / "config.resume-1.yaml").read_text().split("ckpt_path:")[1].splitlines()[0]
    resumed = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert resumed["global_step"] == 10 and int(resumed["averaging_state"]["n_averaged"]) == 10  # EMA carried over
    # (that a resume from a step checkpoint ends with the uninterrupted weights: tests/integration/test_fit.py, and
    # for a real requeued SLURM job: make test-slurm)
