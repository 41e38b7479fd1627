import os
import time

import pytest
import torch

from gen_research.errors import GenResearchError
from gen_research.run_folder import (
    check_checkpoint_matches,
    find_last_checkpoint,
    new_run_dir,
    read_checkpoint,
    remove_empty_run_dirs,
    run_dir_of_checkpoint,
)


@pytest.fixture(autouse=True)
def _no_inherited_env(monkeypatch):
    for name in ("GEN_RESEARCH_RUN_DIR", "SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(name, raising=False)


def test_new_run_dirs_never_collide(tmp_path):
    first = new_run_dir(tmp_path, "exp", "fit")
    second = new_run_dir(tmp_path, "exp", "fit")  # same second: gets a suffix, not the same folder
    assert first != second and first.is_dir() and second.is_dir()
    assert first.parent == tmp_path / "exp"
    assert new_run_dir(tmp_path, "exp", "test").name.endswith("-test")


def test_slurm_tasks_and_requeues_share_the_job_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    first = new_run_dir(tmp_path, "exp", "fit")
    assert first.name == "slurm-4242"
    (first / "marker").write_text("x")
    assert new_run_dir(tmp_path, "exp", "fit") == first


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
    with pytest.raises(GenResearchError, match="no last.ckpt"):
        find_last_checkpoint(tmp_path, "exp")
    paths = []
    for run in ("r1", "r2"):
        path = tmp_path / "exp" / run / "checkpoints" / "last.ckpt"
        path.parent.mkdir(parents=True)
        path.write_bytes(b"x")
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
