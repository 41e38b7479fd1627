"""StopOnNonFinite on its own: which steps it refuses and what it names (the CLI runs are in
tests/integration/test_checkpoint_safety.py)."""

from types import SimpleNamespace

import pytest
import torch

from gen_research.training.callbacks.divergence import StopOnNonFinite, TrainingDiverged


def step(loss: float, grad: float, scaler=None):
    module = torch.nn.Linear(2, 1)
    for p in module.parameters():
        p.grad = torch.full_like(p, grad)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    trainer = SimpleNamespace(world_size=1, global_step=4, precision_plugin=SimpleNamespace(scaler=scaler),
                              checkpoint_callback=None, _results={})
    guard = StopOnNonFinite()
    guard.on_before_backward(trainer, module, torch.tensor(loss))
    guard.on_before_optimizer_step(trainer, module, optimizer)


def test_finite_steps_pass():
    step(1.0, 0.5)


def test_a_non_finite_loss_stops_at_that_step():
    with pytest.raises(TrainingDiverged, match="training diverged at step 5: the training loss is nan"):
        step(float("nan"), 0.5)


def test_a_non_finite_gradient_names_the_parameter():
    with pytest.raises(TrainingDiverged, match="the gradient of weight is not finite"):
        step(1.0, float("inf"))


def test_fp16_loss_scaling_may_skip_an_inf_gradient_step_but_not_a_nan_loss():
    scaler = object()  # a GradScaler skips steps whose gradients overflowed and lowers its scale
    step(1.0, float("inf"), scaler=scaler)
    with pytest.raises(TrainingDiverged):
        step(float("inf"), 0.5, scaler=scaler)


def test_the_hint_names_per_network_settings_under_manual_optimization():
    from types import SimpleNamespace

    from gen_research.training.callbacks.divergence import _message

    def message(automatic):
        return _message(SimpleNamespace(checkpoint_callback=None, lightning_module=SimpleNamespace(automatic_optimization=automatic)), "step 3", "loss nan")

    assert "(model.init_args.lr)" in message(True) and "(trainer.gradient_clip_val)" in message(True)
    assert "model.init_args.optimizers.<network>.lr" in message(False) and "optimizers.<network>.gradient_clip_val" in message(False)
