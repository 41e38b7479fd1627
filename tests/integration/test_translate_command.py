"""`python -m gen_research translate` end to end: tiny translators fitted through the CLI, then your own PNGs (8x8 and
40x24, grey and RGB, in a subfolder) translated whole and tiled, into one domain, by id or name, or into all of
them, with targets in the grids; and every bad input refused in one line with nothing written."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gen_research.commands.loading import load_model_and_data
from gen_research.commands.translate import grid_row

from .helpers import TEST_CONFIGS, run_in_process

pytestmark = pytest.mark.integration
ONE_WAY = str(TEST_CONFIGS / "tiny_translator.yaml")
DOMAINS = str(TEST_CONFIGS / "tiny_domain_translator.yaml")
VAE = str(TEST_CONFIGS / "tiny_vae.yaml")
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.logger=false", "--trainer.enable_model_summary=false"]
INPUTS = {"small.png": (8, 8), "colour.png": (8, 8), "sub/big.png": (24, 40)}  # (height, width)


def write_inputs(folder: Path) -> None:
    """Digit-like grey images (a bright blob on black), one stored as RGB: translate reads it in the model's mode."""
    rng = np.random.default_rng(0)
    for name, (height, width) in INPUTS.items():
        y, x = np.mgrid[:height, :width]
        blob = np.exp(-((y - height / 2) ** 2 + (x - width / 3) ** 2) / (0.1 * height * width)) * 255
        grey = np.clip(blob + rng.integers(0, 40, (height, width)), 0, 255).astype(np.uint8)
        image = Image.fromarray(np.stack([grey, grey // 2, grey], -1)) if name == "colour.png" else Image.fromarray(grey)
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        image.save(folder / name)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Checkpoints of a one-way translator, a three-domain translator and a VAE (few steps each), and the inputs."""
    root = tmp_path_factory.mktemp("translate")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("WANDB_MODE", "disabled")
        patch.delenv("GEN_RESEARCH_RUN_DIR", raising=False)
        assert run_in_process("fit", "--config", ONE_WAY, *QUIET, "--trainer.max_epochs=1", "--trainer.limit_val_batches=1") == 0
        assert run_in_process("fit", "--config", DOMAINS, *QUIET) == 0
        assert run_in_process("fit", "--config", VAE, *QUIET, "--trainer.max_steps=1", "--trainer.limit_val_batches=0") == 0
    checkpoints = {name: str(next((root / "runs" / name).glob("*/checkpoints/last.ckpt"))) for name in ("tiny_translator", "tiny_domain_translator", "tiny_vae")}
    write_inputs(root / "inputs")
    for name in INPUTS:  # the paired ground truth: the inverted grey image
        target = 255 - np.asarray(Image.open(root / "inputs" / name).convert("L"))
        (root / "targets" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(target).save(root / "targets" / name)
    return {"root": root, "inputs": str(root / "inputs"), "targets": str(root / "targets"),
            "one_way": ["--config", ONE_WAY, "--ckpt_path", checkpoints["tiny_translator"]],
            "domains": ["--config", DOMAINS, "--ckpt_path", checkpoints["tiny_domain_translator"]],
            "vae": ["--config", VAE, "--ckpt_path", checkpoints["tiny_vae"]]}


def png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path)).astype(np.int16)


def expected_png(model_args: list[str], input_path: Path, target: int | None = None) -> np.ndarray:
    """The model's translation of ``input_path`` read as grey, rounded to uint8 like the command's PNGs."""
    model, _, _ = load_model_and_data(model_args[1], model_args[3])
    image = torch.from_numpy(np.array(Image.open(input_path).convert("L"))).float().div(127.5).sub(1)[None, None]
    with torch.no_grad():
        output = model.eval().translate(image, None if target is None else torch.tensor([target]))
    return ((output.clamp(-1, 1) + 1) / 2 * 255).round()[0, 0].numpy().astype(np.int16)


def test_one_way_translator_writes_each_output_at_its_input_size_and_a_grid_per_input(setup, workdir, capsys):
    assert run_in_process("translate", *setup["one_way"], "--input", setup["inputs"], "--out", "plain") == 0
    assert "translated 3 images: 3 translations and 3 grids in plain" in capsys.readouterr().out
    files = sorted(str(p.relative_to(workdir / "plain")) for p in (workdir / "plain").rglob("*.png"))
    assert files == ["colour.png", "colour_grid.png", "small.png", "small_grid.png", "sub/big.png", "sub/big_grid.png"]  # sizes differ: no grid.png
    for name, (height, width) in INPUTS.items():
        output = png(workdir / "plain" / name)
        assert output.shape == (height, width)  # grey, like the model's source channels
        np.testing.assert_array_equal(output, expected_png(setup["one_way"], Path(setup["inputs"]) / name))  # the RGB file read as grey
    assert Image.open(workdir / "plain" / "sub" / "big_grid.png").size == (2 * 42 + 2, 28)  # input | output, padding 2
    assert run_in_process("translate", *setup["one_way"], "--input", setup["inputs"], "--out", "atob", "--direction", "AtoB") == 0
    assert all((png(workdir / "atob" / name) == png(workdir / "plain" / name)).all() for name in INPUTS)


def test_tiles_blended_with_overlap_quarter_at_the_receptive_radius_equal_the_whole_translation(setup, workdir):
    # both tiny nets are two 3x3 convolutions (receptive radius 2): overlap 8 leaves the 2 inexact pixels out
    for model, extra in (("one_way", []), ("domains", ["--target-domain", "C"])):
        assert run_in_process("translate", *setup[model], *extra, "--input", setup["inputs"], "--out", f"{model}-whole") == 0
        assert run_in_process("translate", *setup[model], *extra, "--input", setup["inputs"], "--out", f"{model}-tiled",
                              "--tile", "16", "--overlap", "8", "--batch-size", "5") == 0
        for name in INPUTS:  # the 40x24 image is 3x4 tiles of 16; the 8x8 ones fit one tile
            whole, tiled = png(workdir / f"{model}-whole" / name), png(workdir / f"{model}-tiled" / name)
            assert tiled.shape == whole.shape == INPUTS[name]
            assert np.abs(tiled - whole).max() <= 1 and (tiled != whole).mean() < 0.02, (model, name)  # uint8 rounding only


def test_target_domain_by_name_by_id_and_all(setup, workdir, capsys):
    base = ["translate", *setup["domains"], "--input", setup["inputs"]]
    assert run_in_process(*base, "--target-domain", "B", "--out", "by-name") == 0
    assert run_in_process(*base, "--target-domain", "1", "--out", "by-id") == 0
    assert run_in_process(*base, "--direction", "AtoB", "--out", "by-direction") == 0
    for name in INPUTS:
        assert (png(workdir / "by-name" / name) == png(workdir / "by-id" / name)).all()
        assert (png(workdir / "by-name" / name) == png(workdir / "by-direction" / name)).all()
    np.testing.assert_array_equal(png(workdir / "by-name" / "small.png"), expected_png(setup["domains"], Path(setup["inputs"]) / "small.png", target=1))
    capsys.readouterr()
    assert run_in_process(*base, "--target-domain", "all", "--out", "all") == 0
    assert "translated 3 images into A, B, C: 9 translations and 3 grids in all" in capsys.readouterr().out
    for name in INPUTS:
        stem = name[: -len(".png")]
        outputs = {domain: png(workdir / "all" / f"{stem}_{domain}.png") for domain in "ABC"}
        assert all(output.shape == INPUTS[name] for output in outputs.values())
        assert (outputs["B"] == png(workdir / "by-name" / name)).all()
        assert np.abs(outputs["A"] - outputs["C"]).mean() > 5  # a learned bias per domain: the domains differ
        assert not (workdir / "all" / name).exists()
    assert Image.open(workdir / "all" / "small_grid.png").size == (4 * 10 + 2, 12)  # input | A | B | C


def test_targets_join_the_grids_and_same_size_inputs_get_one_grid_of_all(setup, workdir, capsys):
    small = workdir / "small_inputs"
    small.mkdir()
    for name in ("small.png", "colour.png"):
        (small / name).write_bytes((Path(setup["inputs"]) / name).read_bytes())
    assert run_in_process("translate", *setup["one_way"], "--input", str(small), "--targets", setup["targets"], "--out", "with-targets") == 0
    assert "2 translations, 2 grids and grid.png" in capsys.readouterr().out
    grid = png(workdir / "with-targets" / "small_grid.png")
    assert grid.shape == (12, 3 * 10 + 2)  # input | output | target, grey like the model
    np.testing.assert_array_equal(grid[2:10, 22:30], png(Path(setup["targets"]) / "small.png"))  # the target, unchanged
    np.testing.assert_array_equal(grid[2:10, 12:20], png(workdir / "with-targets" / "small.png"))
    assert Image.open(workdir / "with-targets" / "grid.png").size == (32, 2 * 10 + 2)  # colour.png's row, then small.png's
    np.testing.assert_array_equal(png(workdir / "with-targets" / "grid.png")[10:, :], grid)  # rows share their padding


def test_a_grey_input_beside_a_colour_output_is_shown_in_colour():
    grey, colour = torch.full((1, 1, 4, 4), 0.5), torch.rand(2, 3, 4, 4)
    row = grid_row([grey, colour])
    assert row.shape == (3, 3, 4, 4) and torch.equal(row[0], grey[0].expand(3, -1, -1)) and torch.equal(row[1:], colour)
    assert grid_row([grey, grey]).shape == (2, 1, 4, 4)


BAD = [
    ("one_way", ["--input", "missing"], "--input missing does not exist"),
    ("one_way", ["--input", "empty"], "holds no images"),
    ("one_way", ["--input", "broken"], "cannot read image"),
    ("one_way", ["--input", "INPUTS", "--out", "full"], "--out full is not empty"),
    ("one_way", ["--input", "INPUTS", "--out", "a_file"], "--out a_file is a file"),
    ("one_way", ["--input", "INPUTS", "--tile", "4"], "at least 8 pixels"),
    ("one_way", ["--input", "INPUTS", "--tile", "16", "--overlap", "9"], "[0, tile // 2 = 8]"),
    ("one_way", ["--input", "INPUTS", "--tile", "16", "--overlap", "2"], "tiling needs overlap >= 4"),
    ("one_way", ["--input", "INPUTS", "--overlap", "4"], "--overlap applies to tiled translation; pass --tile N"),
    ("one_way", ["--input", "INPUTS", "--batch-size", "0"], "--batch-size 0: must be at least 1"),
    ("one_way", ["--input", "INPUTS", "--targets", "partial_targets"], "has no sub/big.png"),
    ("one_way", ["--input", "INPUTS", "--direction", "BtoA"], "translates one way, the way it was trained; train on data with direction BtoA"),
    ("one_way", ["--input", "INPUTS", "--target-domain", "B"], "translates in one fixed direction and has no domains"),
    ("domains", ["--input", "INPUTS"], "translates into one of 3 domains; pass --target-domain with an id, a name or all (0=A, 1=B, 2=C)"),
    ("domains", ["--input", "INPUTS", "--target-domain", "Z"], "--target-domain Z is not a domain of TinyDomainTranslator; choose an id or a name (0=A, 1=B, 2=C)"),
    ("domains", ["--input", "INPUTS", "--target-domain", "3"], "--target-domain 3 is not a domain"),
    ("domains", ["--input", "INPUTS", "--direction", "DtoA"], "--direction DtoA is not XtoY for two different domains of TinyDomainTranslator (A, B, C)"),
    ("domains", ["--input", "INPUTS", "--direction", "AtoB", "--target-domain", "B"], "pass one of them"),
    ("vae", ["--input", "INPUTS"], "translate needs a model that can translate images (image-to-image); VAE cannot"),
]


@pytest.mark.parametrize(("model", "arguments", "message"), BAD, ids=[message[:40] for _, _, message in BAD])
def test_bad_input_is_one_line_and_writes_nothing(setup, workdir, capsys, model, arguments, message):
    (workdir / "empty").mkdir()
    (workdir / "broken").mkdir()
    (workdir / "broken" / "a.png").write_bytes(b"not a png")
    (workdir / "full").mkdir()
    (workdir / "full" / "keep.txt").write_text("mine")
    (workdir / "a_file").write_text("mine")
    (workdir / "partial_targets").mkdir()
    (workdir / "partial_targets" / "small.png").write_bytes((Path(setup["targets"]) / "small.png").read_bytes())
    (workdir / "partial_targets" / "colour.png").write_bytes((Path(setup["targets"]) / "colour.png").read_bytes())
    arguments = [setup["inputs"] if value == "INPUTS" else value for value in arguments]
    if "--out" not in arguments:
        arguments += ["--out", "out"]
    capsys.readouterr()
    assert run_in_process("translate", *setup[model], *arguments) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("gen_research: error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert message in errors[0], errors[0]
    assert not (workdir / "out").exists() and not (workdir / "runs").exists()
    assert (workdir / "full" / "keep.txt").read_text() == "mine" and (workdir / "a_file").read_text() == "mine"
    assert sorted(p.name for p in (workdir / "full").iterdir()) == ["keep.txt"]


def test_default_folder_is_a_new_run_folder_and_a_failed_translation_leaves_none(setup, workdir, capsys):
    assert run_in_process("translate", *setup["domains"], "--input", setup["inputs"], "--target-domain", "A") == 0
    runs = list((workdir / "runs" / "tiny_domain_translator").iterdir())
    assert len(runs) == 1 and runs[0].name.endswith("-translate") and (runs[0] / "sub" / "big.png").is_file()
    capsys.readouterr()
    assert run_in_process("translate", *setup["domains"], "--input", setup["inputs"], "--target-domain", "Q") == 2
    assert list((workdir / "runs" / "tiny_domain_translator").iterdir()) == runs
