"""benchmarks/gpu_suite.sh (issue 18) without a GPU: its syntax, its refusal where no GPU is visible, its section
loop (own timeout per section, failures recorded, exit 1) against a fake interpreter, and the gpu_precision section
on the CPU with tiny sizes."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SUITE = REPO / "benchmarks" / "gpu_suite.sh"
PYTHON = sys.executable


def _executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def _suite(out: Path, path_dirs: list[Path], **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("GPU_SUITE_", "CUDA_VISIBLE_DEVICES"))}
    clean["PATH"] = os.pathsep.join([*map(str, path_dirs), clean.get("PATH", "/usr/bin:/bin")])
    return subprocess.run(["bash", str(SUITE), str(out)], capture_output=True, text=True, timeout=120,
                          env={**clean, **env}, cwd=REPO)


def _fake_nvidia_smi(folder: Path, gpus: int) -> Path:
    folder.mkdir()
    if gpus:
        listing = "\n".join(f'echo "GPU {i}: NVIDIA H200 (UUID: GPU-{i})"' for i in range(gpus))
        _executable(folder / "nvidia-smi", f'#!/bin/sh\nif [ "$1" = "-L" ]; then\n{listing}\nelse echo "fake nvidia-smi"; fi\n')
    else:  # what a machine whose driver is gone prints
        _executable(folder / "nvidia-smi", "#!/bin/sh\necho \"NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\" >&2\nexit 9\n")
    return folder


def test_the_script_parses():
    assert SUITE.stat().st_mode & stat.S_IXUSR, "gpu_suite.sh must be executable"
    result = subprocess.run(["bash", "-n", str(SUITE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_shellcheck_is_clean():
    result = subprocess.run(["shellcheck", str(SUITE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_driver_refused_in_one_line(tmp_path):
    out = tmp_path / "out"
    result = _suite(out, [_fake_nvidia_smi(tmp_path / "bin", gpus=0)])
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "gpu_suite: no GPU visible: 'nvidia-smi -L' lists none (NVIDIA-SMI has failed because it couldn't communicate "
        "with the NVIDIA driver.). Run the suite on a machine with an NVIDIA GPU."]
    assert not out.exists()  # nothing written


def test_no_nvidia_smi_refused(tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    for tool in ("bash", "dirname", "date", "grep", "head"):  # what the script needs before its GPU check
        (bare / tool).symlink_to(shutil.which(tool))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPU_SUITE_")}
    result = subprocess.run([str(bare / "bash"), str(SUITE), str(tmp_path / "out")], capture_output=True, text=True,
                            env={**env, "PATH": str(bare)}, cwd=REPO, timeout=60)
    assert result.returncode == 2
    assert "no GPU visible: nvidia-smi is not installed here" in result.stderr


def test_torch_without_cuda_refused(tmp_path):
    """nvidia-smi lists a GPU but this torch cannot use it (as on this CPU machine): refused after recording versions."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible here")
    out = tmp_path / "out"
    result = _suite(out, [_fake_nvidia_smi(tmp_path / "bin", gpus=2)], GPU_SUITE_PYTHON=PYTHON)
    assert result.returncode == 2
    assert "gpu_suite: torch sees no CUDA device (torch.cuda.is_available() is False" in result.stderr
    assert "measuring GPU 0 (CUDA_VISIBLE_DEVICES=0)" in result.stdout
    versions = json.loads((out / "versions.json").read_text())
    assert versions["torch"] == torch.__version__ and versions["cuda_available"] is False
    assert (out / "nvidia-smi-L.txt").read_text().splitlines() == ["GPU 0: NVIDIA H200 (UUID: GPU-0)", "GPU 1: NVIDIA H200 (UUID: GPU-1)"]
    assert not (out / "bench-cuda.json").exists()


def test_python_without_torch_refused(tmp_path):
    python = _executable(tmp_path / "python", f'#!/bin/sh\nexec "{PYTHON}" -S "$@"\n')  # no site-packages: no torch
    result = _suite(tmp_path / "out", [_fake_nvidia_smi(tmp_path / "bin", gpus=1)], GPU_SUITE_PYTHON=str(python))
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == ("gpu_suite: the Python environment has no working torch (see the line above): "
                                              "remove .venv and run again (make venv), or set GPU_SUITE_PYTHON")
    assert "cannot import torch: ModuleNotFoundError" in result.stderr


FAKE_SECTION = r'''
import json, os, sys, time
from pathlib import Path
args = sys.argv[1:]
section, out = args[args.index("--sections") + 1], Path(args[args.index("--out") + 1])
assert args[args.index("--device") + 1] == "cuda" and "--no-docs" in args
path = out / "bench-cuda.json"
if section == "training":
    results = json.loads(path.read_text()) if path.exists() else {}
    left = int(os.environ["BENCH_SECTION_DEADLINE"]) - time.time()
    assert abs(left - int(os.environ["BENCH_SECTION_BUDGET_S"])) < 3, left
    results["training"] = {"ok": True, "budget": os.environ["BENCH_SECTION_BUDGET_S"],
                           "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
    path.write_text(json.dumps(results))
    print("== training done")
elif section == "throughput":
    print("Traceback (most recent call last):\nRuntimeError: CUDA error: out of memory", file=sys.stderr)
    sys.exit(3)
else:
    print("compiling ...", flush=True)
    time.sleep(60)
'''

FAKE_CUDA = r'''
import torch  # the versions check sees one "GPU"
torch.cuda.is_available = lambda: True
torch.cuda.device_count = lambda: 1
torch.cuda.get_device_name = lambda device=None: "Fake GPU"
torch.cuda.get_device_capability = lambda device=None: (9, 0)
'''


def test_sections_each_under_their_own_timeout(tmp_path):
    """One section succeeds, one fails, one outlives its budget: the suite goes on, records both errors next to
    the result that ran, exits 1 and prints the docs command."""
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "section.py").write_text(FAKE_SECTION)
    (fake / "sitecustomize.py").write_text(FAKE_CUDA)
    python = _executable(fake / "python", f"""#!/bin/bash
if [[ "$1" == benchmarks/run.py ]]; then shift; exec "{PYTHON}" "{fake}/section.py" "$@"; fi
if [[ "$1" == - && "$2" == */versions.json ]]; then export PYTHONPATH="{fake}"; fi
exec "{PYTHON}" "$@"
""")
    out = tmp_path / "out"
    result = _suite(out, [_fake_nvidia_smi(tmp_path / "bin", gpus=2)], GPU_SUITE_PYTHON=str(python),
                    GPU_SUITE_SECTIONS="gpu_precision,training,throughput", GPU_SUITE_BUDGETS="gpu_precision=5,training=50")
    assert result.returncode == 1, result.stdout + result.stderr
    results = json.loads((out / "bench-cuda.json").read_text())
    training = results.pop("training")  # its share (50 s) plus what the timed-out one before it left: none
    assert training["ok"] and 45 <= int(training["budget"]) <= 50 and training["cuda_visible_devices"] == "0"
    assert results["throughput"]["rc"] == 3 and results["throughput"]["timed_out"] is False
    assert results["throughput"]["error"] == "exit status 3"
    assert results["throughput"]["log_tail"][-1] == "RuntimeError: CUDA error: out of memory"
    assert results["gpu_precision"]["timed_out"] is True and results["gpu_precision"]["rc"] == 124
    assert results["gpu_precision"]["error"] == "timed out after 5 s" and results["gpu_precision"]["log_tail"] == ["compiling ..."]
    assert json.loads((out / "versions.json").read_text())["device"] == "Fake GPU"
    assert "gpu_precision TIMED OUT after 5 s" in result.stdout and "throughput FAILED (exit status 3)" in result.stdout
    assert f"    python benchmarks/run.py --docs-from {out}/bench-cuda.json" in result.stdout.splitlines()
    assert "failed: gpu_precision throughput" in result.stderr
    assert set(results) == {"throughput", "gpu_precision"}  # and nothing else in the file


def test_gpu_precision_quick_on_cpu():
    sys.path.insert(0, str(REPO / "benchmarks"))
    from harness import machine
    from perf import Context, gpu_precision

    result = gpu_precision.run(Context(device="cpu", quick=True, pairs=1, out=Path("unused")))
    json.dumps(result)  # what run.py writes
    assert result["model"]["family"] == "ddpm"
    assert result["model"]["init_args"]["block_out_channels"] == [8, 16]  # the quick UNet over the recipe's arguments
    assert result["model"]["init_args"]["warmup_steps"] == 5000 and result["gradient_clip_val"] == 1.0  # the recipe's
    assert result["gpu"] is None and result["batch_size"] == 2
    assert list(result["variants"]) == ["fp32", "bf16", "bf16_compile", "bf16_channels_last"]
    for name, info in result["variants"].items():
        assert "error" not in info, (name, info.get("traceback"))
        assert info["steps_per_s"] > 0 and info["images_per_s"] == pytest.approx(2 * info["steps_per_s"])
        assert len(info["runs"]) == 1 and info["steps_per_block"] == 1
        assert info["peak_memory_mb"] is None  # no CUDA allocator to ask on a CPU
    assert result["variants"]["fp32"]["vs_fp32"] == 1.0
    assert result["variants"]["bf16_compile"]["compiled"] and result["variants"]["bf16_compile"]["compile_s"] > 0
    assert result["flops"]["per_step"] > 0 and any("convolution" in op for op in result["flops"]["by_op"])
    fp32 = result["variants"]["fp32"]
    assert fp32["tflops"] == pytest.approx(result["flops"]["per_step"] * fp32["steps_per_s"] / 1e12)

    blocks = gpu_precision.tables(result, machine("cpu"))
    assert list(blocks) == ["gpu-precision-cpu"]
    text = blocks["gpu-precision-cpu"]
    assert text.startswith("Measured ") and "no GPU in this run" in text
    for label in ("| fp32 |", "| bf16 autocast |", "| bf16 + compile |", "| bf16 + channels_last |"):
        assert label in text
    assert "--quick" in text

    gpu_machine = {**machine("cpu"), "device": "cuda", "gpu": "NVIDIA H200"}
    failed = {**result, "gpu": "NVIDIA H200", "quick": False,
              "variants": {**result["variants"], "bf16_compile": {"label": "bf16 + compile", "error": "BackendCompilerFailed: no gcc"}}}
    text = gpu_precision.tables(failed, gpu_machine)["gpu-precision-cuda"]
    assert "GPU: NVIDIA H200" in text.splitlines()[0] and "on the GPU (NVIDIA H200)" in text
    assert "| bf16 + compile |  |  |  |  |  | failed: BackendCompilerFailed: no gcc |" in text


def _gpu_precision():
    sys.path.insert(0, str(REPO / "benchmarks"))
    from perf import gpu_precision

    return gpu_precision


def test_interrupt_after_stops_a_slow_block_and_restores_the_alarm():
    import signal
    import time

    gpu_precision = _gpu_precision()
    before = signal.getsignal(signal.SIGALRM)
    start = time.perf_counter()
    with pytest.raises(gpu_precision.OutOfTime, match="within the 0 s left"):
        with gpu_precision.interrupt_after(0.3):
            time.sleep(10)
    assert time.perf_counter() - start < 3
    assert signal.getsignal(signal.SIGALRM) is before and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    with gpu_precision.interrupt_after(5):  # a block that ends in time: nothing raised, the alarm cancelled
        pass
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    with pytest.raises(gpu_precision.OutOfTime, match="no time left"):
        with gpu_precision.interrupt_after(-1):
            pass


def test_a_variant_past_the_deadline_costs_only_itself(monkeypatch):
    """A warm-up (a compile, on a GPU) that runs into BENCH_SECTION_DEADLINE is interrupted and recorded; the variants
    after it that have no time left are recorded as such, and the section still returns and renders."""
    import time

    from perf import Context

    gpu_precision = _gpu_precision()
    gpu_precision.recipe()  # the registry's import time is not the test's deadline
    step = gpu_precision.Trainee.step

    def slow_fp32(self):
        if self.variant == "fp32":
            time.sleep(60)
        step(self)

    monkeypatch.setattr(gpu_precision.Trainee, "step", slow_fp32)
    monkeypatch.setattr(gpu_precision, "WARMUP_RESERVE_S", 0.0)
    monkeypatch.setenv("BENCH_SECTION_DEADLINE", str(time.time() + 3))
    start = time.perf_counter()
    result = gpu_precision.run(Context(device="cpu", quick=True, pairs=1, out=Path("unused")))
    assert time.perf_counter() - start < 30
    variants = result["variants"]
    assert variants["fp32"]["error"].startswith("OutOfTime: did not finish within the ")
    for name in ("bf16", "bf16_compile", "bf16_channels_last"):
        assert variants[name]["error"] == "OutOfTime: no time left before the section's deadline"
        assert "steps_per_s" not in variants[name]
    assert result["flops"] is None and result["model"]["parameters"] is None
    text = gpu_precision.tables(result, {**_machine(), "device": "cpu"})["gpu-precision-cpu"]
    assert "| fp32 |  |  |  |  |  | failed: OutOfTime: did not finish within the " in text


def _machine():
    from harness import machine

    return machine("cpu")
