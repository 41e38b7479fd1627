"""Speed options (issue 18): compile, channels_last, the AdamW implementation, TF32.

Each option must change speed only: the same state_dict keys (checkpoints and exact resume unchanged), the same
outputs to float rounding, a training step that works, and one-line errors for bad values. Most compile tests use
torch's ``aot_eager`` backend (dynamo + AOT autograd, the whole compile path except inductor's C++ code
generation, which costs ~30 s cold on 2 cores); one test runs the real inductor backend on a tiny module.
"""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer, seed_everything
from torch import nn

from gen_research.errors import GenResearchError
from gen_research.training import speed
from gen_research.training.callbacks.ema import EMA
from gen_research.training.callbacks.sample_grid import SAMPLES_DIR, SampleGridLogger
from gen_research.training.callbacks.speed import ChannelsLast, CompileNetworks, _explain_backend_failures
from gen_research.training.optimizers import (
    AdamW,
    OptimizerSpec,
    build_adamw,
    choose_implementation,
    configure_adamw,
    optimizer_implementation,
)

TINY = dict(image_shape=(1, 8, 8), block_out_channels=[8, 16], num_train_timesteps=100, sampling_steps=3)


def _ddpm(seed: int = 0):
    from gen_research.models.diffusion import DDPM

    torch.manual_seed(seed)
    return DDPM(**TINY)


def _vae(seed: int = 0):
    """The compile tests' family: dynamo traces its small conv nets in ~2 s (a diffusers UNet, even tiny: ~15 s)."""
    from gen_research.models.autoencoder import VAE

    torch.manual_seed(seed)
    return VAE(image_shape=(1, 8, 8), channels=[8, 16], latent_dim=4, lr=1e-2, warmup_steps=0)


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


@pytest.fixture
def aot_eager(monkeypatch):
    """torch.compile with the aot_eager backend (what nn.Module.compile calls)."""
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    yield
    torch._dynamo.reset()


@pytest.fixture
def tf32_restored():
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


class Holder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.GroupNorm(4, 8), nn.SiLU(), nn.Conv2d(8, 3, 3, padding=1))
        self.frozen = nn.Linear(2, 2).requires_grad_(False)
        self.empty = nn.Identity()

    def forward(self, x):
        return self.net(x)


# ----------------------------------------------------------------------------------------------- compile
def test_trainable_networks_are_the_children_with_trainable_parameters():
    assert speed.trainable_networks(Holder()) == ["net"]
    assert speed.trainable_networks(_ddpm()) == ["unet"]
    assert speed.trainable_networks(_vae()) == ["encoder", "decoder"]  # not its metric module


def test_compile_in_place_keeps_keys_modules_and_outputs(aot_eager):
    model = _vae()
    reference = copy.deepcopy(model)
    keys = list(model.state_dict())
    decoder = model.decoder
    x = torch.randn(4, 1, 8, 8)
    assert speed.compile_networks(model) == ["encoder", "decoder"]
    assert model.decoder is decoder and not isinstance(model.decoder, torch._dynamo.eval_frame.OptimizedModule)
    assert list(model.state_dict()) == keys  # no _orig_mod. prefixes: checkpoints unchanged
    assert model.decoder._compiled_call_impl is not None
    out = model.decode(model.encode(x))
    torch.testing.assert_close(out, reference.decode(reference.encode(x)), rtol=1e-5, atol=1e-5)
    out.square().mean().backward()
    assert all(p.grad is not None for p in model.decoder.parameters())
    assert speed.compile_networks(model, names=["decoder"]) == ["decoder"]  # compiled already: left as it is
    speed.uncompile_networks(model)
    assert model.decoder._compiled_call_impl is None


def test_compile_named_networks_and_bad_inputs():
    holder = Holder()
    with pytest.raises(GenResearchError) as error:
        speed.compile_networks(holder, names=["nett"])
    assert "'nett' is not a network of Holder; its networks are net, frozen, empty" in _one_line(error)
    with pytest.raises(GenResearchError) as error:
        speed.compile_networks(holder, mode="fastest")
    assert "mode='fastest' is not a torch.compile mode" in _one_line(error) and "max-autotune" in str(error.value)
    with pytest.raises(GenResearchError) as error:
        speed.compile_networks(holder, names="net")
    assert "must be a list of network names" in _one_line(error)
    with pytest.raises(GenResearchError) as error:
        speed.compile_networks(nn.Sequential(nn.ReLU()))
    assert "no child module with trainable parameters" in _one_line(error)
    with pytest.raises(GenResearchError):
        CompileNetworks(mode="turbo")
    assert speed.compile_networks(holder, names=["net.0", "frozen"]) == ["net.0", "frozen"]  # dotted paths; frozen by name
    speed.uncompile_networks(holder)


def test_compile_with_inductor_matches_eager():
    """The real backend (C++ code generation on CPU): needs g++, which check_compiler finds."""
    speed.check_compiler("cpu")
    holder = nn.Module()
    holder.net = nn.Sequential(nn.Linear(4, 4), nn.Tanh())
    x = torch.randn(3, 4)
    with torch.no_grad():
        expected = holder.net(x)
        speed.compile_networks(holder)
        torch.testing.assert_close(holder.net(x), expected, rtol=1e-5, atol=1e-6)
    torch._dynamo.reset()


def test_missing_compiler_is_a_one_line_error(monkeypatch):
    monkeypatch.setattr(speed.shutil, "which", lambda name: None)
    monkeypatch.delenv("CXX", raising=False)
    with pytest.raises(GenResearchError) as error:
        speed.check_compiler("cpu")
    assert "needs a C++ compiler" in _one_line(error) and "apt-get install g++" in str(error.value)
    with pytest.raises(GenResearchError) as error:
        speed.check_compiler("cuda")
    assert "needs a C compiler for Triton" in _one_line(error)


def test_backend_failures_become_one_line_errors_and_model_errors_pass_through():
    InductorError = type("InductorError", (RuntimeError,), {})

    def failing(*args, **kwargs):
        raise InductorError("CppCompileError: C++ compile error\nlong compiler output\n...")

    with pytest.raises(GenResearchError) as error:
        _explain_backend_failures(failing, "unet", None)(1)
    assert "could not build 'unet' (InductorError: CppCompileError: C++ compile error)" in _one_line(error)
    assert "remove the compile callback" in str(error.value)

    def shape_bug(*args, **kwargs):
        raise ValueError("the model's own bug")

    with pytest.raises(ValueError, match="own bug"):
        _explain_backend_failures(shape_bug, "unet", None)()


def _fit(root, callbacks, max_steps, ckpt_path=None, model=None, **trainer_kwargs):
    from gen_research.data.embedded import Digits

    seed_everything(0)
    model = model or _ddpm()
    trainer = Trainer(max_steps=max_steps, limit_train_batches=2, limit_val_batches=1, val_check_interval=2, num_sanity_val_steps=0,
                      callbacks=callbacks, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, default_root_dir=root, accelerator="cpu", devices=1, **trainer_kwargs)
    trainer.fit(model, datamodule=Digits(batch_size=16), ckpt_path=ckpt_path)
    return trainer, model


def test_compiled_fit_with_ema_and_sampling_resumes_exactly(tmp_path, aot_eager):
    """compile + EMA (swapped in for validation) + sample grids in validation; the checkpoint's keys are those of
    a run without compile, a run resumed from it without compile continues exactly as one resumed with it."""
    grid = SampleGridLogger(num_samples=4, num_reconstructions=2, interpolation_pairs=1, interpolation_steps=3)
    trainer, model = _fit(tmp_path / "a", [CompileNetworks(), EMA(decay=0.9), grid], 2, model=_vae())
    assert (tmp_path / "a" / SAMPLES_DIR / "epoch000-samples.png").is_file()  # sampled through the compiled UNet
    compiled_ckpt = tmp_path / "compiled.ckpt"
    trainer.save_checkpoint(compiled_ckpt)
    plain, _ = _fit(tmp_path / "b", [EMA(decay=0.9)], 2, model=_vae())
    plain.save_checkpoint(tmp_path / "plain.ckpt")
    saved = torch.load(compiled_ckpt, weights_only=False)
    reference = torch.load(tmp_path / "plain.ckpt", weights_only=False)
    assert list(saved["state_dict"]) == list(reference["state_dict"])
    assert list(saved["callbacks"]) == list(reference["callbacks"])
    for key, value in saved["state_dict"].items():  # aot_eager runs the same kernels as eager
        torch.testing.assert_close(value, reference["state_dict"][key], rtol=1e-5, atol=1e-6)
    resumed_plain, model_plain = _fit(tmp_path / "c", [EMA(decay=0.9)], 4, ckpt_path=compiled_ckpt, model=_vae())
    resumed_compiled, model_compiled = _fit(tmp_path / "d", [CompileNetworks(), EMA(decay=0.9)], 4, ckpt_path=compiled_ckpt, model=_vae())
    assert resumed_plain.global_step == resumed_compiled.global_step == 4
    for (key, a), b in zip(model_plain.state_dict().items(), model_compiled.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=key)


def test_compile_callback_refuses_a_bad_name_before_any_step(tmp_path):
    with pytest.raises(GenResearchError) as error:
        _fit(tmp_path, [CompileNetworks(names=["unet", "vae"])], 1)
    assert "'vae' is not a network of DDPM; its networks are unet" in _one_line(error)


# ------------------------------------------------------------------------------------------ channels_last
def test_channels_last_weights_and_batches_keep_values():
    holder = Holder()
    reference = copy.deepcopy(holder)
    x = torch.randn(2, 3, 8, 8)
    assert speed.to_channels_last(holder) is holder
    assert holder.net[0].weight.is_contiguous(memory_format=torch.channels_last) and not holder.net[0].weight.is_contiguous()
    assert holder.frozen.weight.is_contiguous()  # 2-D: untouched
    batch = {"image": x.clone(), "label": torch.arange(2), "mask": torch.ones(2, 8, 8), "index": torch.zeros(2, 1, 2, 2, dtype=torch.long)}
    same = speed.batch_to_channels_last(batch)
    assert same is batch  # a dict batch is converted in place (what a callback needs)
    assert batch["image"].is_contiguous(memory_format=torch.channels_last) and not batch["image"].is_contiguous()
    assert batch["label"].is_contiguous() and batch["mask"].is_contiguous() and batch["index"].is_contiguous()
    assert isinstance(speed.batch_to_channels_last((x, 1)), tuple)
    torch.testing.assert_close(holder(batch["image"]), reference(x), rtol=1e-5, atol=1e-5)
    assert list(holder.state_dict()) == list(reference.state_dict())


def test_channels_last_fit_and_optimizer_state(tmp_path):
    trainer, model = _fit(tmp_path, [ChannelsLast(), EMA(decay=0.9)], 2)
    conv = next(p for p in model.unet.parameters() if p.ndim == 4 and not p.is_contiguous())
    assert conv.is_contiguous(memory_format=torch.channels_last)
    optimizer = trainer.optimizers[0]
    assert optimizer.state[conv]["exp_avg"].is_contiguous(memory_format=torch.channels_last)
    # state restored from a plain checkpoint arrives contiguous; train start gives it the weights' format
    optimizer.state[conv]["exp_avg"] = optimizer.state[conv]["exp_avg"].contiguous()
    assert speed.optimizer_state_to_channels_last(optimizer) == 1
    trainer.save_checkpoint(tmp_path / "cl.ckpt")
    _, plain = _fit(tmp_path / "plain", [EMA(decay=0.9)], 2)
    saved = torch.load(tmp_path / "cl.ckpt", weights_only=False)["state_dict"]
    assert list(saved) == list(plain.state_dict())
    # Compare what the networks compute, not each weight: a conv bias just before a one-channel-per-group GroupNorm
    # has a zero gradient up to rounding, which Adam normalises into +-lr steps in either memory format.
    x, t = torch.randn(4, 1, 8, 8), torch.tensor([0, 10, 50, 99])
    restored = _ddpm()
    restored.load_state_dict(saved)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(speed.batch_to_channels_last(x), t), plain.eval()(x, t), rtol=1e-3, atol=1e-4)
        torch.testing.assert_close(restored.eval()(x, t), plain(x, t), rtol=1e-3, atol=1e-4)


# -------------------------------------------------------------------------------------------------- AdamW
def test_implementation_setting_is_checked_in_one_line():
    with pytest.raises(GenResearchError) as error:
        OptimizerSpec.from_config({"implementation": "apex"}, "model.init_args.optimizers.generator")
    assert _one_line(error) == "model.init_args.optimizers.generator.implementation='apex' must be one of auto, fused, foreach, for_loop"
    assert OptimizerSpec.from_config({"implementation": "foreach"}, "x").implementation == "foreach"
    assert OptimizerSpec().as_config()["implementation"] == "auto"


def test_auto_is_fused_where_torch_has_fused_kernels():
    floats = [nn.Parameter(torch.randn(3))]
    assert choose_implementation("auto", floats) == "fused"
    assert choose_implementation("for_loop", floats) == "for_loop"
    complex_params = [nn.Parameter(torch.randn(3, dtype=torch.complex64))]
    assert choose_implementation("auto", complex_params) == "foreach"
    with pytest.raises(GenResearchError) as error:
        choose_implementation("fused", complex_params, "model.init_args.optimizer_implementation")
    assert "model.init_args.optimizer_implementation=fused: torch has no fused AdamW for torch.complex64" in _one_line(error)


def _steps(implementation: str, steps: int = 3, state: dict | None = None):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    optimizer, _ = build_adamw(net.parameters(), OptimizerSpec(lr=1e-2, weight_decay=0.1, implementation=implementation), LightningModule())
    if state is not None:
        net.load_state_dict(state["net"])
        optimizer.load_state_dict(state["optimizer"])
    x = torch.randn(8, 1, 8, 8)
    for _ in range(steps):
        optimizer.zero_grad()
        net(x).square().mean().backward()
        optimizer.step()
    return net, optimizer


@pytest.mark.parametrize("implementation", ["fused", "foreach", "auto"])
def test_each_implementation_trains_like_the_for_loop(implementation):
    reference, _ = _steps("for_loop")
    net, optimizer = _steps(implementation)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert optimizer_implementation(optimizer) == ("fused" if implementation == "auto" else implementation)
    for a, b in zip(net.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_a_resume_keeps_the_configured_implementation():
    """torch would take fused/foreach from the saved param groups: a for_loop checkpoint resumed as fused stays fused
    (step counters where the fused kernel wants them) and continues as the uninterrupted run."""
    net, optimizer = _steps("for_loop", steps=2)
    state = {"net": copy.deepcopy(net.state_dict()), "optimizer": copy.deepcopy(optimizer.state_dict())}
    assert state["optimizer"]["param_groups"][0]["fused"] in (None, False)
    resumed_net, resumed = _steps("fused", steps=2, state=state)
    assert isinstance(resumed, AdamW) and optimizer_implementation(resumed) == "fused"
    assert resumed.state_dict()["state"][0]["step"].item() == 4
    straight, _ = _steps("for_loop", steps=4)
    for a, b in zip(resumed_net.parameters(), straight.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_one_network_families_read_optimizer_implementation():
    module = LightningModule()
    module.save_hyperparameters({"lr": 1e-3, "weight_decay": 0.0, "warmup_steps": 0, "lr_schedule": "constant"})
    module.layer = nn.Linear(2, 2)
    assert optimizer_implementation(configure_adamw(module)["optimizer"]) == "fused"  # auto on CPU
    module.hparams.optimizer_implementation = "for_loop"
    assert optimizer_implementation(configure_adamw(module)["optimizer"]) == "for_loop"


def test_fused_adamw_clips_under_mixed_precision(tmp_path):
    """Lightning refuses to clip an optimizer that unscales inside its step (fused) under bf16/16-mixed; build_adamw
    hands the unscaling back to the GradScaler when the network clips, so trainer.gradient_clip_val works."""
    trainer, _ = _fit(tmp_path, [], 1, precision="bf16-mixed", gradient_clip_val=1.0)
    optimizer = trainer.optimizers[0]
    assert optimizer_implementation(optimizer) == "fused" and optimizer._step_supports_amp_scaling is False
    assert trainer.global_step == 1


# --------------------------------------------------------------------------------------------------- TF32
def test_tf32_switch_never_changes_cpu_numerics(tf32_restored):
    a, b = torch.randn(64, 64), torch.randn(64, 64)
    w, x = torch.randn(4, 3, 3, 3), torch.randn(2, 3, 8, 8)
    speed.set_tf32(False)
    plain = (a @ b, nn.functional.conv2d(x, w))
    assert not speed.tf32_enabled() and torch.get_float32_matmul_precision() == "highest"
    speed.set_tf32(True)
    assert speed.tf32_enabled() and torch.backends.cudnn.allow_tf32 and torch.get_float32_matmul_precision() == "high"
    # oneDNN's CPU matmuls stay full fp32: "none" (never set) or "ieee" (an earlier test in this process called
    # set_float32_matmul_precision("highest")); never "tf32"
    assert torch.backends.mkldnn.matmul.fp32_precision in ("none", "ieee")
    assert torch.equal(a @ b, plain[0]) and torch.equal(nn.functional.conv2d(x, w), plain[1])
    with pytest.raises(GenResearchError) as error:
        speed.set_tf32("yes")
    assert "must be true, false or auto" in _one_line(error)


def test_tf32_auto_is_off_on_cpu_and_explicit_values_apply(tf32_restored):
    from jsonargparse import Namespace

    from gen_research.config.precision import choose_tf32, resolve_tf32

    on, reason = choose_tf32("cpu")
    assert on is False and "CUDA GPUs only" in reason
    assert choose_tf32("cuda", strategy="ddp_fork")[0] is True  # fork: flags set without initialising CUDA
    config = Namespace(tf32="auto", trainer=Namespace(accelerator="cpu", devices=1, strategy="auto"))
    assert resolve_tf32(config) is False and not speed.tf32_enabled()
    config.tf32 = True
    assert resolve_tf32(config) is True and speed.tf32_enabled()
    config.tf32 = "sometimes"
    with pytest.raises(GenResearchError) as error:
        resolve_tf32(config)
    assert _one_line(error) == "tf32='sometimes' must be auto, true or false"
    assert speed.tf32_supported() is torch.cuda.is_available() and (not torch.cuda.is_available() or speed.tf32_supported() == (torch.cuda.get_device_capability()[0] >= 8))


# ---------------------------------------------------------------------------------------------------- CLI
def test_command_line_names_the_callbacks_and_tf32(capsys, tf32_restored):
    from gen_research.config.files import expand_argv
    from tests.integration.helpers import run_in_process

    argv, _ = expand_argv(["--trainer.callbacks+=compile", "--trainer.callbacks+=channels_last"])
    assert argv == ["--trainer.callbacks+=gen_research.training.callbacks.speed.CompileNetworks",
                    "--trainer.callbacks+=gen_research.training.callbacks.speed.ChannelsLast"]
    code = run_in_process("fit", "--config", "experiments/ddpm_digits_tiny.yaml", "--trainer.callbacks+=compile",
                          "--trainer.callbacks.mode=max-autotune", "--trainer.callbacks+=channels_last", "--tf32=false", "--print_config")
    out = capsys.readouterr().out
    assert code == 0
    assert "class_path: gen_research.training.callbacks.speed.CompileNetworks" in out and "mode: max-autotune" in out
    assert "class_path: gen_research.training.callbacks.speed.ChannelsLast" in out
    assert "tf32: false" in out
    assert "class_path: gen_research.training.callbacks.ema.EMA" in out  # appended to the experiment's callbacks
