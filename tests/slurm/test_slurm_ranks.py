"""Fast checks (part of `make test`) of what every srun task of a SLURM job does alike; the real-cluster
requeue test is tests/slurm/run_requeue_test.sh (`make test-slurm`), which pytest does not run."""

from lightning.pytorch.utilities.rank_zero import rank_zero_only

from gen_research.training.loggers import RUN_ID_FILE, WandbLogger
from gen_research.training.run_folder import new_run_dir


def test_only_global_rank_zero_records_the_wandb_run_id(tmp_path, monkeypatch):
    # srun sets SLURM_PROCID but no LOCAL_RANK; Lightning touches `experiment` on every rank. A rank > 0 that
    # recorded its own (unused) id made the requeued job continue a W&B run that never existed.
    for name in ("LOCAL_RANK", "NODE_RANK", "WANDB_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURM_PROCID", "1")
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    logger = WandbLogger(save_dir=str(tmp_path), mode="offline")
    logger.experiment  # a dummy on rank 1: no W&B run starts
    assert not (tmp_path / RUN_ID_FILE).exists()


def test_tasks_of_one_step_get_one_folder_even_if_it_appears_meanwhile(tmp_path, monkeypatch):
    for name in ("GEN_RESEARCH_RUN_DIR", "SLURM_ARRAY_JOB_ID", "SLURM_RESTART_COUNT", "SLURM_JOB_START_TIME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_STEP_ID", "0")
    folders = []
    for task in ("0", "1"):  # `srun --ntasks=2 ... fit`: each task runs the command; task 1 finds task 0's folder
        monkeypatch.setenv("SLURM_PROCID", task)
        folders.append(new_run_dir(tmp_path, "exp", "fit", ["--config", "x.yaml"]))
    assert folders[0] == folders[1] == tmp_path / "exp" / "slurm-77"
    assert [p.name for p in (tmp_path / "exp").iterdir() if p.is_dir()] == ["slurm-77"]
