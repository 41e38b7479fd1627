"""The text-to-image benchmark's read-outs, calibrated on real captioned_digits test images, and its pieces (grid,
plot, claims, training minutes, measuring loop, arguments) on small fake inputs."""

import colorsys
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gen_research.data import captioned_digits as data
from gen_research.data.captioned_render import digit_alphas
from gen_research.data.embedded import _mnist5k_arrays
from gen_research.data.transforms import to_signed_unit
from gen_research.errors import GenResearchError

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)
    spec.loader.exec_module(module)
    return sys.modules[name]


readout = _load("text2image_readout")
bench = _load("bench_text2image")


@pytest.fixture(scope="module")
def classifier():
    return readout.load_digit_classifier()


@pytest.fixture(scope="module")
def real_test_split():
    """The 1,000 items of captioned_digits' test split (default options), rendered with the module's own draws and
    renderer, item by item (the whole 10,000-item set takes ~50 s here): images [N, 3, 32, 32], labels, attributes."""
    module = data.CaptionedDigits(caption_dropout=0.0)
    digits, labels = _mnist5k_arrays()
    variants = module.variants_per_digit
    _, _, test = module.seeded_split(len(labels), module.test_fraction)
    sources = test.sort().values
    alphas = {thickness: torch.from_numpy(digit_alphas(digits[sources, 0].numpy(), thickness == "thick")) for thickness in data.THICKNESSES}
    images, attributes = [], []
    for row, source in enumerate(sources.tolist()):
        for variant in range(variants):
            index = source * variants + variant
            drawn, geometry, draws = data.draw_item(module.attribute_seed, index, int(labels[source]), module.sizes, False, 0.0)
            if index % 50 == 0:  # the item the data module yields (attributes() is ~16 ms a call)
                assert drawn.items() <= module.attributes(index).items()
            rgb = data.render_item(drawn, geometry, draws, alphas[drawn["thickness"]][row])[:3]
            images.append(to_signed_unit(rgb.clamp(0, 1).mul(255).round().to(torch.uint8)))
            attributes.append(drawn)
    return torch.stack(images), torch.tensor([a["digit"] for a in attributes]), attributes


def test_readouts_agree_with_real_test_images(real_test_split, classifier):
    """The calibration: on the 1,000 real test images, colour 100% and digit 94.8% measured (the classifier itself
    reads 97.8% of the same MNIST digits in greyscale): the ceiling generated images are judged against."""
    images, labels, attributes = real_test_split
    assert images.shape == (1000, 3, 32, 32)
    colour_accuracy = readout.accuracy(readout.colour_of(images), [a["colour"] for a in attributes])
    digit_accuracy = readout.accuracy(readout.digit_of(images, classifier).tolist(), labels.tolist())
    print(f"colour_of {colour_accuracy:.3f}, digit_of {digit_accuracy:.3f} on {len(images)} real test images")
    assert colour_accuracy >= 0.98
    assert digit_accuracy >= 0.90
    small = [i for i, a in enumerate(attributes) if a["size"] == "small"]
    assert readout.accuracy(readout.digit_of(images[small], classifier).tolist(), labels[small].tolist()) >= 0.90


def _flat(rgb, side=8):
    return (torch.tensor(rgb, dtype=torch.float32)[:, None, None].expand(3, side, side) * 2 - 1)


def test_colour_of_names_hues_and_none():
    hues = [(name, colorsys.hsv_to_rgb(hue / 360, 1, 1)) for name, hue in data.COLOURS.items()]
    images = torch.stack([_flat(rgb) for _, rgb in hues])
    assert readout.colour_of(images) == [name for name, _ in hues]
    # a hue 25 degrees past red (towards yellow) is still red; 35 degrees is nearer yellow; circular: 350 is red
    shifted = torch.stack([_flat(colorsys.hsv_to_rgb(h / 360, 1, 1)) for h in (25, 35, 350, 275)])
    assert readout.colour_of(shifted) == ["red", "yellow", "red", "purple"]
    grey, dark, faint = _flat((0.5, 0.5, 0.5)), _flat((0.2, 0.0, 0.0)), _flat((0.8, 0.6, 0.6))  # grey; too dark; saturation 0.25
    assert readout.colour_of(torch.stack([grey, dark, faint])) == [readout.NO_COLOUR] * 3
    # only the saturated pixels count: a small blue stroke on a large grey texture reads blue
    texture = _flat((0.3, 0.3, 0.3), 16).clone()
    texture[:, 6:9, 2:14] = _flat(colorsys.hsv_to_rgb(240 / 360, 1, 1), 16)[:, 6:9, 2:14]
    assert readout.colour_of(texture[None]) == ["blue"]


def test_mnist_normalise_box_and_centre_of_mass():
    stroke = torch.zeros(1, 32, 32)
    stroke[0, 2:12, 20:22] = 1.0  # a 10 x 2 bar at the top right (80 ink once scaled: not thinned)
    canvas = (readout.mnist_normalise(stroke)[0, 0] + 1) / 2
    rows, cols = torch.nonzero(canvas > 0.5, as_tuple=True)
    assert rows.max() - rows.min() + 1 == 20 and cols.max() - cols.min() + 1 == 4  # longer side 20, aspect kept
    mass = canvas.sum()
    assert abs(float((canvas.sum(1) * torch.arange(28)).sum() / mass) - 13.5) <= 0.5
    assert abs(float((canvas.sum(0) * torch.arange(28)).sum() / mass) - 13.5) <= 0.5
    assert torch.equal(readout.mnist_normalise(torch.zeros(2, 16, 16)), -torch.ones(2, 1, 28, 28))  # no stroke: empty


def test_thinning_only_touches_bold_canvases():
    thin = torch.zeros(1, 1, 28, 28)
    thin[0, 0, 4:24, 13:15] = 1.0  # 40 ink: kept
    bold = torch.zeros(1, 1, 28, 28)
    bold[0, 0, 4:24, 10:18] = 1.0  # 160 ink (108 once eroded): thinned to the ceiling
    assert torch.equal(readout.thin_to_mnist_ink(thin), thin)
    assert float(readout.thin_to_mnist_ink(bold).sum()) == pytest.approx(readout.MNIST_INK_CEILING, rel=1e-4)


def test_prompt_grid_parses_back_to_its_digits_and_colours():
    grid = readout.prompt_grid(num_full=60, seed=0)
    colours = list(data.COLOURS)
    assert len(grid["easy"]) == 60 and len(grid["full"]) == 60
    assert [(p.digit, p.colour) for p in grid["easy"]] == [(d, c) for d in range(10) for c in colours]  # rows of the grid
    assert grid["easy"][7 * 6].text == "a large thick red seven on a black background"
    for prompt in grid["easy"] + grid["full"]:
        parsed = data.parse_caption(prompt.text)
        assert (parsed["digit"], parsed["colour"]) == (prompt.digit, prompt.colour)
    full = grid["full"]
    assert full == readout.prompt_grid(60, seed=0)["full"] and full != readout.prompt_grid(60, seed=1)["full"]
    assert {data.parse_caption(p.text)["size"] for p in full} == set(data.SIZES)
    assert {data.parse_caption(p.text)["background"] for p in full} == set(data.BACKGROUNDS)


class RenderingModel:
    """A stand-in for the text2image model: renders each prompt's attributes from a real digit of that class,
    except every third prompt's colour is swapped to the next hue (so the colour read-out must see it)."""

    def __init__(self):
        digits, labels = _mnist5k_arrays()
        first = [int(torch.nonzero(labels == d)[0]) for d in range(10)]
        self.alphas = {t: torch.from_numpy(digit_alphas(digits[first, 0].numpy(), t == "thick")) for t in data.THICKNESSES}
        self.calls, self.count = [], 0

    def sample(self, num_samples, prompts, negative_prompt=None, guidance_scale=1.0, sampler="ddpm", steps=10, generator=None):
        self.calls.append((num_samples, guidance_scale, sampler, steps))
        geometry = data.Geometry((32, 32), (32, 32), (32, 32), (0, 0))
        images = []
        for prompt in prompts:
            attributes = data.parse_caption(prompt)
            self.count += 1
            if self.count % 3 == 0:
                names = list(data.COLOURS)
                attributes["colour"] = names[(names.index(attributes["colour"]) + 1) % len(names)]
            draws = np.full(13, 0.5)
            rgb = data.render_item(attributes, geometry, draws, self.alphas[attributes["thickness"]][attributes["digit"]])[:3]
            images.append(rgb * 2 - 1)
        return torch.stack(images)


@pytest.fixture(scope="module")
def clip_scorer(tmp_path_factory):
    """clip_score's metric on the tiny CLIP of the clip_score tests, loaded as the benchmark loads a CLIP folder."""
    from tests.evaluation.extractors.test_clip import tiny_clip
    from tests.evaluation.specs.test_clip_score import save_tokenizer

    folder = tmp_path_factory.mktemp("bench-clip") / "tiny-clip"
    tiny_clip().save_pretrained(folder)
    save_tokenizer(folder)
    return bench.load_clip_scorer(folder)


def test_measure_reads_out_a_rendering_model(tmp_path, classifier, clip_scorer):
    (tmp_path / "e.yaml").write_text("model: {}\n")
    args = bench.parse_arguments(["--config", str(tmp_path / "e.yaml"), "--guidance-scales", "3,1",
                                  "--images-per-prompt", "1", "--num-full", "6", "--batch-size", "25", "--steps", "2"])
    model = RenderingModel()
    by_scale, grid_images = bench.measure(args, model, classifier, clip_scorer, tmp_path)
    assert sorted(by_scale) == [1.0, 3.0]
    assert [call[0] for call in model.calls] == [25, 25, 16] * 2 and {call[1:] for call in model.calls} == {(1.0, "dpm-solver++", 2), (3.0, "dpm-solver++", 2)}
    for row in by_scale.values():
        assert row["easy"]["colour_accuracy"] == pytest.approx(40 / 60)  # every third colour swapped
        assert row["easy"]["digit_accuracy"] >= 0.9
        assert 0 < row["easy"]["clip_score"] <= 100 and 0 < row["full"]["clip_score"] <= 100
        assert row["all"]["clip_score"] == pytest.approx((60 * row["easy"]["clip_score"] + 6 * row["full"]["clip_score"]) / 66)
    scores = [float(line.rsplit(",", 1)[1]) for line in (tmp_path / "readouts-1.csv").read_text().splitlines()[1:]]
    assert sum(scores) / len(scores) == pytest.approx(by_scale[1.0]["all"]["clip_score"])
    assert grid_images.shape == (60, 3, 32, 32)
    lines = (tmp_path / "readouts-3.csv").read_text().splitlines()
    assert len(lines) == 1 + 66 and lines[1].startswith("easy,a large thick red zero on a black background,0,red,")


def _fake_by_scale(digit, colour, clip):
    return {s: {"easy": {"digit_accuracy": d, "colour_accuracy": c}, "full": {"digit_accuracy": d - 0.1, "colour_accuracy": c},
                "all": {"clip_score": k}} for s, d, c, k in zip((1.0, 2.0, 3.0, 5.0, 7.5), digit, colour, clip)}


def test_claims():
    good = _fake_by_scale([0.3, 0.7, 0.85, 0.9, 0.95], [0.5, 0.8, 0.9, 0.95, 0.97], [20, 22, 23, 23.5, 23.4])
    claims = bench.check_claims(good, {"total_minutes": 80.0})
    assert claims == {"CLIP + first stage + text2image within 90 minutes": True,
                      "easy prompts: digit accuracy >= 80% at every guidance >= 3": True,
                      "easy prompts: colour accuracy >= 80% at every guidance >= 3": True,
                      "full captions: digit accuracy >= 80% at every guidance >= 3": False,  # 0.75 at guidance 3
                      "full captions: colour accuracy >= 80% at every guidance >= 3": True,
                      "CLIP score rises with the guidance scale (1 -> 2 -> 3)": True}
    bad = _fake_by_scale([0.3, 0.7, 0.85, 0.79, 0.95], [0.5, 0.8, 0.9, 0.95, 0.97], [20, 22, 21.9, 23, 24])
    claims = bench.check_claims(bad, {})
    assert "CLIP + first stage + text2image within 90 minutes" not in claims  # no timing: no claim
    assert not claims["easy prompts: digit accuracy >= 80% at every guidance >= 3"]
    assert not claims["CLIP score rises with the guidance scale (1 -> 2 -> 3)"]


def test_figures(tmp_path):
    images = torch.linspace(-1, 1, 60)[:, None, None, None].expand(60, 3, 32, 32)
    bench.write_grid(images, 6, tmp_path / "grid.png")
    grid = np.asarray(Image.open(tmp_path / "grid.png"))
    assert grid.shape == (10 * 34 + 2, 6 * 34 + 2, 3)  # rows: digits, columns: colours (make_grid's 2-px padding)
    assert grid[2 + 34 * 9 + 16, 2 + 34 * 5 + 16, 0] == 255 and grid[2 + 16, 2 + 16, 0] == 0  # last prompt bright, first dark
    with pytest.raises(ValueError, match="10 x 6"):
        bench.write_grid(images[:59], 6, tmp_path / "bad.png")
    bench.write_guidance_plot(_fake_by_scale([0.3, 0.7, 0.85, 0.9, 0.95], [0.5, 0.8, 0.9, 0.95, 0.97], [20, 22, 23, 23.5, 23.4]),
                              tmp_path / "plot" / "guidance.png")
    plot = Image.open(tmp_path / "plot" / "guidance.png")
    assert plot.size == (9 * 120, int(3.6 * 120)) and len(set(plot.convert("RGB").getdata())) > 20  # drawn, not blank


def _finished(run_dir, when):
    run_dir.mkdir(parents=True)
    (run_dir / "fit-finished.json").write_text(json.dumps({"checkpoint": "checkpoints/last.ckpt", "finished_at": when}))


def test_training_minutes_per_stage(tmp_path):
    start = "20250101-100000"
    _finished(tmp_path / "t2i.autoencoder_kl" / start, "2025-01-01T10:20:00+0000")
    _finished(tmp_path / "t2i.clip_captions" / start, "2025-01-01T10:35:00+0000")
    _finished(tmp_path / "t2i.clip_captions" / "20241231-090000", "2024-12-31T09:10:00+0000")  # an older fit: not this one
    _finished(tmp_path / "t2i" / start, "2025-01-01T11:20:00+0000")
    minutes = bench.training_minutes(tmp_path / "t2i" / start / "checkpoints" / "last.ckpt", "t2i")
    assert minutes["autoencoder_kl_minutes"] == pytest.approx(20)
    assert minutes["clip_captions_minutes"] == pytest.approx(15) and minutes["t2i_minutes"] == pytest.approx(45)
    assert minutes["total_minutes"] == pytest.approx(80)
    assert bench.training_minutes(tmp_path / "other" / start / "checkpoints" / "last.ckpt", "other") == {}


def test_argument_errors(tmp_path, capsys):
    experiment = tmp_path / "e.yaml"
    experiment.write_text("model: {}\n")
    cases = {("--guidance-scales", "1,x"): "--guidance-scales '1,x'", ("--guidance-scales", "-1"): ">= 0",
             ("--images-per-prompt", "0"): "--images-per-prompt 0", ("--ckpt", str(tmp_path / "none.ckpt")): "no such checkpoint",
             ("--clip-folder", str(tmp_path)): "no config.json", ("--num-full", "-1"): "--num-full -1"}
    for extra, message in cases.items():
        with pytest.raises(GenResearchError, match=message.replace("(", r"\(")):
            bench.parse_arguments(["--config", str(experiment), *extra])
    with pytest.raises(GenResearchError, match="no such experiment file"):
        bench.parse_arguments(["--config", str(tmp_path / "missing.yaml")])
    assert bench.parse_arguments(["--config", str(experiment)]).guidance_scales == [1.0, 2.0, 3.0, 5.0, 7.5]
    assert bench.main(["--config", str(experiment), "--steps", "0"]) == 2
    assert capsys.readouterr().err.strip() == "bench_text2image.py: error: --steps 0: must be at least 1"
