"""DDPM through the command line: fit, then sample with samplers, guidance (both kinds), inpainting and img2img,
and the class-conditional metrics of evaluate."""

import json

import numpy as np
import pytest
from PIL import Image

from .helpers import TEST_CONFIGS, run_in_process

pytestmark = pytest.mark.integration
UNCONDITIONAL = str(TEST_CONFIGS / "tiny_ddpm.yaml")
CONDITIONAL = str(TEST_CONFIGS / "tiny_cfg_ddpm.yaml")
CLASSIFIER = str(TEST_CONFIGS / "tiny_noisy_classifier.yaml")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Checkpoints of the unconditional and class-conditional tiny DDPMs and of a noisy classifier (one fit each)."""
    root = tmp_path_factory.mktemp("ddpm_cli")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("WANDB_MODE", "disabled")
        patch.delenv("GEN_RESEARCH_RUN_DIR", raising=False)
        for config in (UNCONDITIONAL, CONDITIONAL, CLASSIFIER):
            assert run_in_process("fit", "--config", config) == 0
    last = lambda name: str(next((root / "runs" / name).glob("*/checkpoints/last.ckpt")))  # noqa: E731
    return {"root": root, "ddpm": last("tiny_ddpm"), "cfg": last("tiny_cfg_ddpm"), "classifier": last("tiny_noisy_classifier")}


def images(folder):
    return np.stack([np.asarray(Image.open(p)) for p in sorted(folder.glob("0*.png"))])


def sample(workdir, config, ckpt, out, *options):
    return run_in_process("sample", "--config", config, "--ckpt_path", ckpt, "--out", str(workdir / out), "--num-images", "4", "--steps", "3", *options)


@pytest.mark.parametrize("sampler", ["ddpm", "dpm-solver++", "euler-ancestral", "heun"])
def test_class_conditional_sampling_is_reproducible(trained, workdir, sampler):
    options = ("--sampler", sampler, "--guidance-scale", "2", "--class", "3")
    assert sample(workdir, CONDITIONAL, trained["cfg"], "a", *options, "--seed", "1") == 0
    assert sample(workdir, CONDITIONAL, trained["cfg"], "b", *options, "--seed", "1") == 0
    assert sample(workdir, CONDITIONAL, trained["cfg"], "c", *options, "--seed", "2") == 0
    a, b, c = images(workdir / "a"), images(workdir / "b"), images(workdir / "c")
    assert a.shape == (4, 8, 8) and (workdir / "a" / "grid.png").is_file()
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_guidance_scale_changes_the_samples(trained, workdir):
    for scale in ("0", "1", "4"):
        assert sample(workdir, CONDITIONAL, trained["cfg"], f"w{scale}", "--guidance-scale", scale, "--class", "5") == 0
    w0, w1, w4 = (images(workdir / f"w{s}") for s in ("0", "1", "4"))
    assert not np.array_equal(w0, w1) and not np.array_equal(w1, w4)


def test_inpainting_keeps_the_known_half(trained, workdir):
    assert sample(workdir, UNCONDITIONAL, trained["ddpm"], "inpaint", "--input", "test", "--mask", "right") == 0
    out = images(workdir / "inpaint")

    from gen_research.files.image_grid import to_grid_uint8
    from gen_research.commands.loading import load_model_and_data

    _, datamodule, _ = load_model_and_data(UNCONDITIONAL, trained["ddpm"])
    datamodule.setup("test")
    for index in range(4):
        original = to_grid_uint8(datamodule.test_set[index][0][None], nrow=1, padding=0)
        original = original[..., 0] if original.ndim == 3 else original
        assert np.array_equal(out[index][:, :4], original[:, :4])  # left half: the input, pixel for pixel
    assert (workdir / "inpaint" / "input.png").is_file()


def test_img2img_low_strength_stays_near_the_input(trained, workdir):
    for strength in ("0.2", "1.0"):
        assert sample(workdir, UNCONDITIONAL, trained["ddpm"], f"s{strength}", "--input", "test", "--strength", strength, "--steps", "10") == 0
    inputs = np.asarray(Image.open(workdir / "s0.2" / "input.png"))
    near, far = images(workdir / "s0.2").astype(float), images(workdir / "s1.0").astype(float)
    from gen_research.files.image_grid import to_grid_uint8
    from gen_research.commands.loading import load_model_and_data

    _, datamodule, _ = load_model_and_data(UNCONDITIONAL, trained["ddpm"])
    datamodule.setup("test")
    original = np.stack([to_grid_uint8(datamodule.test_set[i][0][None], nrow=1, padding=0) for i in range(4)]).astype(float)
    original = original[..., 0] if original.ndim == 4 else original
    assert inputs.size > 0
    assert np.abs(near - original).mean() < 0.5 * np.abs(far - original).mean()


def test_classifier_guidance_from_the_command_line(trained, workdir):
    options = ("--classifier-ckpt", trained["classifier"], "--class", "2")
    assert sample(workdir, UNCONDITIONAL, trained["ddpm"], "s0", *options, "--classifier-scale", "0") == 0
    assert sample(workdir, UNCONDITIONAL, trained["ddpm"], "plain") == 0
    assert sample(workdir, UNCONDITIONAL, trained["ddpm"], "s5", *options, "--classifier-scale", "5") == 0
    assert np.array_equal(images(workdir / "s0"), images(workdir / "plain"))  # scale 0: the unguided sampler
    assert not np.array_equal(images(workdir / "s5"), images(workdir / "plain"))


@pytest.mark.parametrize(
    "options, message",
    [
        (("--strength", "0.5"), "need --input"),
        (("--input", "test"), "--input needs one of them"),
        (("--input", "test", "--mask", "nowhere.png"), "no such file"),
        (("--classifier-scale", "2"), "needs --classifier-ckpt"),
        (("--guidance-scale", "2"), "needs a class-conditional model"),
        (("--input", "test", "--strength", "0.01"), "leaves no step"),
    ],
)
def test_bad_sampling_options_are_one_line_errors(trained, workdir, capsys, options, message):
    assert sample(workdir, UNCONDITIONAL, trained["ddpm"], "bad", *options) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_classifier_of_another_model_is_refused(trained, workdir, capsys):
    assert sample(workdir, UNCONDITIONAL, trained["ddpm"], "bad", "--classifier-ckpt", trained["cfg"]) == 2
    assert "needs a noisy_classifier checkpoint" in capsys.readouterr().err


def test_class_conditional_metrics_of_a_diffusion_model(trained, workdir):
    out = workdir / "metrics.json"
    assert run_in_process("evaluate", "--config", CONDITIONAL, "--ckpt_path", trained["cfg"], "--split", "test", "--features", "pixels",
                          "--metrics", "fid,intra_fid,cas", "--num-images", "100", "--json", str(out)) == 0
    results = json.loads(out.read_text())
    assert set(results) >= {"fid/pixels", "intra_fid/pixels"} and any(key.startswith("cas/") for key in results)
    provenance = results.pop("provenance")
    assert provenance["sampling"]["mode"] == "samples" and provenance["num_generated"] == 100
    assert all(np.isfinite(value) for value in results.values())
    # class-conditional samples of a 3-batch model are far from the data, but each class is measured
    assert results["intra_fid/pixels"] > 0
