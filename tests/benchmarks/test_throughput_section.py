"""The ``throughput`` section of ``make bench`` (benchmarks/perf/throughput.py) in --quick mode: a row per declared
diffusion sampler, the guided and one-shot rows, NFE counted equal to what each scheduler steps through (a guided call
counted twice per image), every extractor with its resize mode and feature size, the end-to-end evaluate, and the
generated tables. --quick measures nothing: the numbers are only checked to be positive and finite."""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

from harness import machine, machine_line  # noqa: E402
from perf import Context  # noqa: E402
from perf import throughput  # noqa: E402

PAIRS = 2


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return tmp_path_factory.mktemp("bench")


@pytest.fixture(scope="module")
def result(out):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # --quick measures nothing; one thread keeps it quick beside other processes
    try:
        return throughput.run(Context(quick=True, pairs=PAIRS, out=out))
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ddpm(out):
    """The section's diffusion model, built the section's way (for the schedulers it declares)."""
    ckpt = throughput.random_checkpoint(throughput.DIFFUSION, out / "ddpm-test.ckpt")
    return throughput.load(throughput.DIFFUSION, ckpt, "cpu")[0]


def positive(value) -> bool:
    return isinstance(value, float) and math.isfinite(value) and value > 0


def test_a_row_per_declared_sampler_then_guidance_and_the_one_shot_families(result, ddpm):
    rows = result["sampling"]["rows"]
    assert [row["name"] for row in rows] == [f"ddpm/{name}" for name in type(ddpm).SAMPLERS] + ["cfg/dpm-solver++", "vae", "dcgan"]
    assert len(type(ddpm).SAMPLERS) >= 7  # ddpm, ddim, dpm-solver++, euler, euler-ancestral, heun, pndm
    for row in rows:
        assert len(row["runs"]) == PAIRS and all(positive(value) for value in row["runs"]), row["name"]
        assert positive(row["images_per_s"]) and row["images_per_s"] == statistics.median(row["runs"])
        assert row["image_shape"] == [1, 28, 28] and row["finite"], row["name"]
        assert math.isclose(row["seconds_per_batch"], row["batch"] / row["images_per_s"])
    diffusion = [row for row in rows if row["kind"].startswith("diffusion")]
    assert all(row["steps"] == throughput.QUICK_STEPS and row["images"] == 2 for row in diffusion)
    assert {row["guidance_scale"] for row in diffusion} == {1.0, 2.0}  # ddpm_mnist5k unguided, cfg_mnist5k at its scale 2
    default = next(row for row in rows if row["name"] == result["sampling"]["default_sampler"])
    assert default["sampler"] == "dpm-solver++" and default["vs_default_sampler"] == 1.0


def test_nfe_is_counted_and_equals_the_steps_each_scheduler_takes(result, ddpm):
    from gen_research.sampling.diffusion import make_scheduler

    rows = {row["name"]: row for row in result["sampling"]["rows"]}
    for name in type(ddpm).SAMPLERS:
        scheduler = make_scheduler(name, ddpm.noise_scheduler.config)
        scheduler.set_timesteps(throughput.QUICK_STEPS)
        row = rows[f"ddpm/{name}"]
        assert row["nfe_calls"] == len(scheduler.timesteps), name  # one UNet call per scheduler timestep
        assert row["nfe_per_image"] == row["nfe_calls"], name  # unguided: one image row per call
    steps = throughput.QUICK_STEPS
    assert rows["ddpm/ddim"]["nfe_calls"] == steps and rows["ddpm/dpm-solver++"]["nfe_calls"] == steps
    assert rows["ddpm/heun"]["nfe_calls"] == 2 * steps - 1  # 2 calls a step, 1 on the last
    assert rows["ddpm/pndm"]["nfe_calls"] == steps + 1  # PLMS: one more call at the start
    guided = rows["cfg/dpm-solver++"]
    assert guided["nfe_calls"] == steps and guided["nfe_per_image"] == 2 * steps  # cond + uncond in one doubled batch
    assert rows["vae"]["nfe_calls"] is None and rows["dcgan"]["nfe_calls"] is None  # not counted: never estimated


def test_every_extractor_with_its_resize_mode_input_size_and_features(result):
    rows = {row["name"]: row for row in result["evaluation"]["rows"]}
    assert list(rows) == ["pixels", "classifier", "inception", "clip-vitb32", "dinov2-vits14", "clean-resize-224"]  # no ViT-L in --quick
    expected = {  # name: (resize mode, network input, feature shape)
        "pixels": (None, "1x28x28 (no network)", [784]),
        "classifier": (None, "1x28x28", [128]),
        "inception": ("legacy_tensorflow", "3x299x299", [2048]),
        "clip-vitb32": ("clean", "3x32x32", [16]),  # the tiny --quick CLIP
        "dinov2-vits14": ("clean", "3x224x224", [384]),
        "clean-resize-224": ("clean", "1x224x224", [1, 224, 224]),
    }
    for name, (mode, network, features) in expected.items():
        row = rows[name]
        assert (row["resize_mode"], row["network_input"], row["feature_shape"]) == (mode, network, features), name
        assert row["input"] == "1x28x28" and row["images"] == throughput.QUICK_EXTRACTOR_IMAGES and row["finite"], name
        assert len(row["runs"]) == PAIRS and positive(row["images_per_s"]), name
        assert math.isclose(row["ms_per_image"], 1000 / row["images_per_s"])
    assert rows["classifier"]["extractor"] == "classifier-mnist5k"
    # random weights never carry a published network's plain name
    assert rows["dinov2-vits14"]["extractor"].startswith("dinov2-vits14-") and rows["clip-vitb32"]["extractor"] == "clip-tiny"
    assert rows["dinov2-vits14"]["parameters"] > 20_000_000  # the published ViT-S/14 (22M), not a toy


def test_end_to_end_evaluate_of_the_quickstart_protocol(result):
    e2e = result["evaluation"]["end_to_end"]
    assert len(e2e["runs"]) == PAIRS and all(value > 0 for value in e2e["runs"]) and positive(e2e["seconds"])
    assert sorted(e2e["metrics"]) == ["fid/classifier-mnist5k", "kid/classifier-mnist5k", "kid_std/classifier-mnist5k",
                                      "precision/classifier-mnist5k", "recall/classifier-mnist5k", "sampling/temperature"]
    assert e2e["metrics"]["sampling/temperature"] == 1.0  # the VAE's default: plain prior samples
    assert all(math.isfinite(value) for value in e2e["metrics"].values())
    assert e2e["num_generated"] == e2e["num_real"] == throughput.QUICK_END_TO_END["num_images"]


def test_scratch_is_removed_and_the_result_is_json(result, out):
    assert not list(out.glob("throughput-*"))  # the checkpoints and random model folders are gone
    assert json.loads(json.dumps(result))["quick"] is True


def test_tables_name_the_machine_and_the_device(result):
    info = machine("cpu")
    blocks = throughput.tables(result, info)
    assert sorted(blocks) == ["evaluation-throughput-cpu", "sampling-cpu"]
    for body in blocks.values():
        assert body.splitlines()[0] == machine_line(info)
    sampling = blocks["sampling-cpu"]
    heun = next(line for line in sampling.splitlines() if line.startswith("| ddpm_mnist5k.yaml | heun |"))
    assert heun.split("|")[5].strip() == str(2 * throughput.QUICK_STEPS - 1)  # the counted UNet calls column
    vae = next(line for line in sampling.splitlines() if line.startswith("| quickstart.yaml | vae |"))
    assert vae.split("|")[5].strip() == ""  # not counted: an empty cell, never an estimate
    evaluation = blocks["evaluation-throughput-cpu"]
    assert "| inception | random (FID InceptionV3 architecture) | 1x28x28 -> 3x299x299 | legacy_tensorflow |" in evaluation
    assert "End to end, `evaluate --config experiments/quickstart.yaml" in evaluation
    cuda = throughput.tables(result, {**info, "device": "cuda", "gpu": "Some GPU"})
    assert sorted(cuda) == ["evaluation-throughput-cuda", "sampling-cuda"]
    assert all("GPU: Some GPU" in body.splitlines()[0] for body in cuda.values())
