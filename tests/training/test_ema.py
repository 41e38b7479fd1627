import torch
from lightning.pytorch import Trainer
from lightning.pytorch.demos.boring_classes import BoringModel
from torch.optim.swa_utils import AveragedModel

from gen_research.training.callbacks.ema import EMA


def test_warmup_decay_follows_min_decay_and_one_plus_n_over_ten_plus_n():
    callback = EMA(decay=0.9, warmup=True)
    layer = torch.nn.Linear(1, 1, bias=False)
    average = AveragedModel(layer, **callback._kwargs)
    expected, values = None, []
    for step, value in enumerate([1.0, 2.0, 3.0, 4.0]):
        layer.weight.data.fill_(value)
        average.update_parameters(layer)
        if step == 0:
            expected = value  # the first update copies
        else:
            decay = min(0.9, (1 + step) / (10 + step))
            expected = decay * expected + (1 - decay) * value
        values.append((float(average.module.weight.detach()), expected))
    assert all(abs(got - want) < 1e-6 for got, want in values)


def test_without_warmup_it_is_a_plain_ema():
    callback = EMA(decay=0.5, warmup=False)
    layer = torch.nn.Linear(1, 1, bias=False)
    average = AveragedModel(layer, **callback._kwargs)
    for value in (2.0, 4.0):
        layer.weight.data.fill_(value)
        average.update_parameters(layer)
    assert abs(float(average.module.weight.detach()) - 3.0) < 1e-6


def test_checkpoint_written_after_training_keeps_training_weights(tmp_path):
    torch.manual_seed(0)
    model = BoringModel()
    ema = EMA(decay=0.5)
    trainer = Trainer(max_steps=4, callbacks=[ema], logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, limit_val_batches=0, default_root_dir=tmp_path)
    trainer.fit(model)
    trainer.save_checkpoint(tmp_path / "after.ckpt")
    checkpoint = torch.load(tmp_path / "after.ckpt", weights_only=False)
    training = ema._training_weights_at_end
    assert all(torch.equal(checkpoint["current_model_state"][k], training[k]) for k in training)
    # The model itself now holds the average (Lightning's behaviour), which is also the checkpoint's state_dict.
    assert all(torch.equal(checkpoint["state_dict"][k], v) for k, v in model.state_dict().items())
    assert not torch.equal(checkpoint["state_dict"]["layer.weight"], training["layer.weight"])
