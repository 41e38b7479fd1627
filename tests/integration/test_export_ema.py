"""export of a model trained with EMA writes the EMA weights (the ones validated and sampled), not the training ones."""

import pytest
import torch
from diffusers import UNet2DModel

from .helpers import TEST_CONFIGS, run_in_process

pytestmark = pytest.mark.integration
TINY = str(TEST_CONFIGS / "tiny_ddpm.yaml")
# A long-memory EMA and a high learning rate: after 3 steps the average is far from the training weights.
EMA = '--trainer.callbacks+={"class_path": "ema", "init_args": {"decay": 0.95, "warmup": false}}'


def test_export_writes_the_ema_weights(workdir):
    assert run_in_process("fit", "--config", TINY, EMA, "--model.init_args.lr=0.01") == 0
    ckpt = next((workdir / "runs" / "tiny_ddpm").glob("*/checkpoints/last.ckpt"))
    assert run_in_process("export", "--config", TINY, "--ckpt_path", str(ckpt), "--out", "pipe") == 0
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=False)
    ema = {k.removeprefix("unet."): v for k, v in checkpoint["state_dict"].items() if k.startswith("unet.")}
    training = {k.removeprefix("unet."): v for k, v in checkpoint["current_model_state"].items() if k.startswith("unet.")}
    exported = UNet2DModel.from_pretrained(workdir / "pipe" / "unet").state_dict()
    assert set(exported) == set(ema) and ema
    assert max((ema[k] - training[k]).abs().max().item() for k in ema) > 1e-3  # the two sets really differ
    for name, value in exported.items():
        torch.testing.assert_close(value, ema[name], rtol=0, atol=0, msg=name)
