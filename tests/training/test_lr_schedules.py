"""WarmupCosineLR: the schedule length travels with the checkpoint, and a resume with another budget says so."""

import pytest
import torch

from gen_research.training.lr_schedules import WarmupCosineLR, lr_lambda


def scheduler(total):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    return WarmupCosineLR(optimizer, warmup_steps=2, total_steps=total)


def test_the_saved_state_records_the_length_and_a_same_budget_resume_is_silent(recwarn):
    trained = scheduler(10)
    for _ in range(4):
        trained.optimizer.step(), trained.step()
    state = trained.state_dict()
    assert state["lr_lambdas"][0] == {"warmup_steps": 2, "total_steps": 10, "shape": "cosine", "decay_fraction": 0.5}
    resumed = scheduler(10)
    resumed.load_state_dict(state)
    assert not [w for w in recwarn if "cosine" in str(w.message)]
    assert resumed.get_last_lr() == trained.get_last_lr() == [pytest.approx(lr_lambda(4, 2, 10))]


def test_a_resume_with_another_budget_warns_with_both_multipliers_and_follows_the_new_curve():
    trained = scheduler(5)
    for _ in range(5):
        trained.optimizer.step(), trained.step()
    resumed = scheduler(15)
    with pytest.warns(UserWarning, match=r"was 5 steps long in the checkpoint and is 15 steps .*multiplier 0 -> 0\.87"):
        resumed.load_state_dict(trained.state_dict())
    resumed.optimizer.step(), resumed.step()
    assert resumed.get_last_lr() == [pytest.approx(lr_lambda(6, 2, 15))]


def test_a_resume_with_another_learning_rate_says_the_checkpoint_s_is_used():
    trained = scheduler(10)
    resumed_optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    resumed = WarmupCosineLR(resumed_optimizer, warmup_steps=2, total_steps=10)
    with pytest.warns(UserWarning, match=r"configured learning rate \[0\.5\] is not used on resume.*\[1\.0\]"):
        resumed.load_state_dict(trained.state_dict())


def test_linear_decay_holds_then_falls_to_zero_like_the_reference_policy():
    # pix2pix/CycleGAN's lr_policy linear (100 constant + 100 decaying epochs) per iteration: 10 steps, fraction 0.5.
    multipliers = [lr_lambda(step, 0, 10, "linear", 0.5) for step in range(11)]
    assert multipliers[:6] == [1.0] * 6
    assert multipliers[6:] == pytest.approx([0.8, 0.6, 0.4, 0.2, 0.0])
    assert lr_lambda(3, 4, 14, "linear", 0.5) == pytest.approx(1.0)  # warm-up still first


def test_linear_schedule_position_survives_a_resume():
    """The reference resets its schedule on resume (--epoch_count must be passed by hand); ours is in the state."""
    trained_optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    trained = WarmupCosineLR(trained_optimizer, warmup_steps=0, total_steps=10, shape="linear", decay_fraction=0.5)
    for _ in range(7):
        trained_optimizer.step()
        trained.step()
    resumed_optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    resumed = WarmupCosineLR(resumed_optimizer, warmup_steps=0, total_steps=10, shape="linear", decay_fraction=0.5)
    resumed.load_state_dict(trained.state_dict())
    assert resumed.get_last_lr() == trained.get_last_lr() == [pytest.approx(0.6)]
    resumed_optimizer.step()
    resumed.step()
    assert resumed.get_last_lr() == [pytest.approx(0.4)]
