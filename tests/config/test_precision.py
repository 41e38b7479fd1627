"""``precision: auto``: bf16-mixed only on devices that compute bf16 natively, 32-true elsewhere, recorded.

The CPU flags and CUDA queries are replaced by fakes, so both branches run on any machine."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch
import yaml
from jsonargparse import Namespace
from lightning.pytorch import Trainer
from lightning.pytorch.accelerators import CUDAAccelerator
from lightning.pytorch.cli import LightningArgumentParser

from gen_research.config import precision
from gen_research.config.files import load_experiment
from gen_research.errors import GenResearchError
from gen_research.registry import load_builtins

REPO = Path(__file__).resolve().parents[2]
SAPPHIRE_RAPIDS = {"cpu_name": "Intel Xeon", "amx_bf16": True, "avx512_bf16": True, "avx2": True}
ZEN3 = {"cpu_name": "AMD EPYC", "amx_bf16": False, "avx512_bf16": False, "avx2": True}


@pytest.fixture
def fake_cpu(monkeypatch):
    """fake_cpu(capabilities, model name): what torch.cpu.get_capabilities() and lscpu would say."""

    def install(capabilities: dict, name: str) -> None:
        monkeypatch.setattr(precision, "_torch_cpu_capabilities", lambda: dict(capabilities))
        monkeypatch.setattr(precision, "cpu_model_name", lambda: name)

    return install


@pytest.fixture
def fake_gpus(monkeypatch):
    """fake_gpus([(name, native bf16), ...]): CUDA devices that answer is_bf16_supported for the current device."""

    def install(gpus: list[tuple[str, bool]]) -> list[int]:
        current = [0]
        asked: list[int] = []

        @contextlib.contextmanager
        def device(index):
            previous, current[0] = current[0], index
            try:
                yield
            finally:
                current[0] = previous

        def is_bf16_supported(including_emulation=True):
            assert including_emulation is False  # emulated bf16 is what auto must not pick
            asked.append(current[0])
            return gpus[current[0]][1]

        monkeypatch.setattr(torch.cuda, "is_available", lambda: bool(gpus))
        monkeypatch.setattr(torch.cuda, "device_count", lambda: len(gpus))
        monkeypatch.setattr(torch.cuda, "device", device)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: gpus[index][0])
        monkeypatch.setattr(CUDAAccelerator, "is_available", staticmethod(lambda: bool(gpus)))
        return asked

    return install


# ---------------------------------------------------------------------------------------------- CPU
def test_cpu_with_amx_gets_bf16(fake_cpu):
    fake_cpu(SAPPHIRE_RAPIDS, "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz")
    choice = precision.choose_precision("cpu")
    assert choice.precision == "bf16-mixed"
    assert "Platinum 8481C" in choice.reason and "amx_bf16" in choice.reason


def test_cpu_with_avx512_bf16_only_gets_bf16(fake_cpu):
    fake_cpu({"amx_bf16": False, "avx512_bf16": True}, "AMD EPYC 9B14 96-Core Processor")  # Zen 4
    assert precision.choose_precision("cpu").precision == "bf16-mixed"


def test_cpu_without_bf16_units_gets_fp32(fake_cpu):
    fake_cpu(ZEN3, "AMD EPYC 7B13 64-Core Processor")
    choice = precision.choose_precision("cpu")
    assert choice.precision == "32-true"
    assert choice.line() == ("precision auto -> 32-true: CPU AMD EPYC 7B13 64-Core Processor has no AMX/AVX-512-BF16 "
                             "(bf16 would be emulated, several times slower)")


def test_cpu_flags_fall_back_to_proc_cpuinfo(monkeypatch):
    cpuinfo = "processor\t: 0\nmodel name\t: AMD EPYC 7B13 64-Core Processor\nflags\t\t: fpu sse2 avx2 fma\n"
    monkeypatch.setattr(precision, "_torch_cpu_capabilities", lambda: {})
    monkeypatch.setattr(precision, "_read_proc_cpuinfo", lambda: cpuinfo)
    assert precision.cpu_bf16_flags() == [] and precision.cpu_model_name() == "AMD EPYC 7B13 64-Core Processor"
    monkeypatch.setattr(precision, "_read_proc_cpuinfo", lambda: cpuinfo.replace("fma", "fma avx512_bf16 amx_bf16"))
    assert precision.cpu_bf16_flags() == ["amx_bf16", "avx512_bf16"]


def test_describe_cpu_for_benchmarks(fake_cpu):
    fake_cpu(ZEN3, "AMD EPYC 7B13")
    assert precision.describe_cpu() == {"cpu": "AMD EPYC 7B13", "bf16_native": False, "bf16_flags": [], "precision_auto": "32-true"}


# ---------------------------------------------------------------------------------------------- GPU
@pytest.mark.parametrize("accelerator", ["gpu", "cuda", "auto"])
def test_gpu_with_bf16_gets_bf16(fake_gpus, fake_cpu, accelerator):
    fake_cpu(ZEN3, "AMD EPYC 7B13")  # the host CPU must not matter when the GPU trains
    asked = fake_gpus([("NVIDIA A100-SXM4-80GB", True), ("NVIDIA A100-SXM4-80GB", True)])
    choice = precision.choose_precision(accelerator, devices=2)
    assert choice.precision == "bf16-mixed" and "A100" in choice.reason
    assert asked == [0, 1]  # every device that will train was asked, each as the current device


def test_gpu_without_bf16_gets_fp32_and_names_the_device(fake_gpus):
    asked = fake_gpus([("NVIDIA A100", True), ("Tesla V100-SXM2-16GB", False)])
    choice = precision.choose_precision("gpu", devices="auto")
    assert choice.precision == "32-true" and "1 (Tesla V100-SXM2-16GB)" in choice.reason and "A100" not in choice.reason
    assert asked == [0, 1]
    assert precision.choose_precision("gpu", devices=[0]).precision == "bf16-mixed"  # only the A100 trains
    assert precision.choose_precision("gpu", devices=[1]).precision == "32-true"


def test_auto_accelerator_without_cuda_asks_the_cpu(fake_gpus, fake_cpu):
    fake_gpus([])
    fake_cpu(SAPPHIRE_RAPIDS, "Intel Xeon")
    assert precision.choose_precision("auto").precision == "bf16-mixed"
    fake_cpu(ZEN3, "AMD EPYC 7B13")
    assert precision.choose_precision("auto").precision == "32-true"


def test_fork_strategy_with_gpu_is_a_one_line_error(fake_gpus):
    fake_gpus([("NVIDIA A100", True)])
    with pytest.raises(GenResearchError, match="ddp_fork.*--trainer.precision="):
        precision.choose_precision("gpu", devices=1, strategy="ddp_fork")


def test_unknown_accelerators_get_fp32(fake_gpus):
    fake_gpus([])
    assert precision.choose_precision("mps").precision == "32-true"
    assert precision.choose_precision(Namespace(class_path="my.Accelerator")).precision == "32-true"


# ------------------------------------------------------------------------------------------- config
def _config(value, **trainer) -> Namespace:
    return Namespace(trainer=Namespace(precision=value, accelerator="cpu", devices=1, strategy="auto", **trainer),
                     precision_auto="auto -> bf16-mixed: an earlier run's record")


@pytest.mark.parametrize("value", ["32-true", "bf16-mixed", "16-mixed", "bf16", 32, "64-true", None])
def test_explicit_precision_is_never_changed(fake_cpu, value, capsys):
    fake_cpu(SAPPHIRE_RAPIDS, "Intel Xeon")
    config = _config(value)
    assert precision.resolve_auto_precision(config) is None
    assert config.trainer.precision == value
    assert config.precision_auto is None  # a reused config.yaml's record does not describe this run
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(("capabilities", "expected"), [(SAPPHIRE_RAPIDS, "bf16-mixed"), (ZEN3, "32-true")])
def test_auto_is_replaced_recorded_and_printed(fake_cpu, capabilities, expected, capsys):
    fake_cpu(capabilities, "Some CPU")
    config = _config("auto")
    choice = precision.resolve_auto_precision(config)
    assert config.trainer.precision == expected == choice.precision
    assert config.precision_auto == f"auto -> {expected}: {choice.reason}"
    assert capsys.readouterr().out == choice.line() + "\n"


def test_parser_accepts_auto_and_still_rejects_nonsense():
    parser = LightningArgumentParser(exit_on_error=False)
    parser.add_lightning_class_args(Trainer, "trainer")
    precision.accept_auto_precision(parser)
    assert parser.parse_args(["--trainer.precision=auto"]).trainer.precision == "auto"
    assert parser.parse_args(["--trainer.precision=bf16-mixed"]).trainer.precision == "bf16-mixed"
    assert parser.parse_args(["--precision_auto=x"]).precision_auto == "x"
    with pytest.raises(Exception, match="precision"):
        parser.parse_args(["--trainer.precision=bf17-mixed"])


def test_cpu_presets_and_cpu_experiments_say_auto():
    load_builtins()  # the experiments name registered classes
    for preset in ("cpu", "cpu-ddp"):
        assert load_experiment(REPO / "configs" / "trainer" / f"{preset}.yaml")["trainer"]["precision"] == "auto"
    on_cpu = {path.stem: load_experiment(path)["trainer"] for path in sorted((REPO / "experiments").glob("*.yaml"))}
    on_cpu = {name: trainer for name, trainer in on_cpu.items() if trainer.get("accelerator") == "cpu"}
    assert {"cfg_mnist5k", "ddpm_mnist5k", "quickstart"} <= set(on_cpu)
    # fp32 on purpose, with the reason in the experiment: StyleGAN's regularizers (R1, path length) take a double
    # backward, where reduced precision is where NVlabs see divergence; its measured numbers are fp32 ones. The
    # digit_domains classifiers are shipped extractors (gen_research/assets): the same weights on every CPU kind.
    fp32_by_design = {"stylegan_mnist5k", "classifier_digit_domains", "domain_classifier_digit_domains"}
    assert {name: on_cpu[name]["precision"] for name in fp32_by_design} == dict.fromkeys(fp32_by_design, "32-true")
    rest = {name: trainer for name, trainer in on_cpu.items() if name not in fp32_by_design}
    assert {name: trainer["precision"] for name, trainer in rest.items()} == dict.fromkeys(rest, "auto")


# -------------------------------------------------------------------------------------- end to end
@pytest.mark.integration
@pytest.mark.parametrize(("capabilities", "expected"), [(SAPPHIRE_RAPIDS, "bf16-mixed"), (ZEN3, "32-true")])
def test_fit_with_auto_trains_in_the_choice_and_records_it(tmp_path, monkeypatch, fake_cpu, capsys, capabilities, expected):
    from gen_research.commands.main import main
    from gen_research.commands.lightning import GenResearchCLI

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.delenv("GEN_RESEARCH_RUN_DIR", raising=False)
    fake_cpu(capabilities, "Test CPU 9000")
    used = {}
    after_fit = GenResearchCLI.after_fit

    def spy(self):
        used["precision"] = self.trainer.precision
        after_fit(self)

    monkeypatch.setattr(GenResearchCLI, "after_fit", spy)
    assert main(["fit", "--config", str(REPO / "tests" / "configs" / "tiny_vae.yaml"), "--trainer.precision=auto",
                 "--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
                 "--trainer.enable_progress_bar=false"]) == 0
    assert used["precision"] == expected  # what the Trainer actually ran in
    printed = capsys.readouterr().out
    assert f"precision auto -> {expected}: CPU Test CPU 9000 " in printed
    (run,) = (tmp_path / "runs" / "tiny_vae").iterdir()
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["trainer"]["precision"] == expected
    assert config["precision_auto"].startswith(f"auto -> {expected}: CPU Test CPU 9000 ")
