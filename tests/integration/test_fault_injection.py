"""The small version of benchmarks/fault_injection.py (20 random SIGKILLs + kills inside checkpoint writes, results
in docs/reliability.md): one run SIGKILLed at a seeded random moment and one killed half-way through writing a
checkpoint, each resumed with --ckpt_path last, end bit-identical to the uninterrupted run."""

import random
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import fault_injection  # noqa: E402


def test_sigkill_at_a_random_moment_and_inside_a_checkpoint_write_resume_identically(tmp_path):
    expected, _, training_seconds = fault_injection.reference(tmp_path)
    assert expected["global_step"] == 15
    random_kill = fault_injection.trial(tmp_path, "random", expected, kill_after=random.Random(3).uniform(0, training_seconds))
    assert random_kill["identical"], random_kill
    write_kill = fault_injection.trial(tmp_path, "write", expected, write_kill_step=7)
    assert write_kill["killed"] and write_kill["killed_during_write"] and write_kill["newest_step_at_kill"] == 6, write_kill
    assert write_kill["identical"], write_kill
