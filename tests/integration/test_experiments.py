"""Every shipped experiment YAML parses: defaults resolve, class names exist, keys and types are right.

The GPU-scale ones (cifar10, bf16, DDP) are never trained here; this is what keeps them from rotting."""

import pytest

from .helpers import REPO, run_in_process

pytestmark = pytest.mark.integration
EXPERIMENTS = sorted((REPO / "experiments").glob("*.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS, ids=[path.stem for path in EXPERIMENTS])
def test_experiment_parses(experiment, workdir, capsys):
    assert run_in_process("fit", "--config", str(experiment), "--print_config") == 0
    printed = capsys.readouterr().out
    assert "class_path: gen_research." in printed and "trainer:" in printed
    assert not (workdir / "runs").exists() or not any((workdir / "runs").rglob("*.ckpt"))
