"""Truncation grid pieces: parsing --truncation-psis, the model's declaration deciding what may be swept, one-line
refusals before anything is loaded, and the psi table and plot."""

import csv
import json
import math

import pytest
import torch
from PIL import Image

from gen_research.commands.evaluate import build_parser
from gen_research.commands.main import main
from gen_research.errors import GenResearchError
from gen_research.evaluation.sampler_grid import report
from gen_research.evaluation.sampler_grid.grid import parse_truncation_psis
from gen_research.evaluation.sampler_grid.psi_grid import check_psis_alone, grid_points, slug
from gen_research.models.diffusion import DDPM
from gen_research.models.gan import DCGAN


def parse(*argv):
    return build_parser().parse_args(["--config", "x.yaml", "--ckpt_path", "x.ckpt", *argv])


@pytest.fixture(scope="module")
def dcgan():
    torch.manual_seed(0)
    return DCGAN(image_shape=(1, 8, 8), latent_dim=8, base_channels=8).eval()


def test_psis_are_parsed_deduplicated_and_absent_without_the_option():
    assert parse_truncation_psis(parse()) is None
    assert parse_truncation_psis(parse("--truncation-psi", "0.5")) is None  # one value is not a grid
    assert parse_truncation_psis(parse("--truncation-psis", "0.5, 0.7,0.5,1")) == (0.5, 0.7, 1.0)
    assert parse_truncation_psis(parse("--truncation-psis", "1")) == (1.0,)


@pytest.mark.parametrize("value, message", [
    ("0.5,x", "--truncation-psis: 'x' is not"),
    ("0.5,nan", "--truncation-psis: 'nan' is not"),
    (" , ", "--truncation-psis is empty"),
])
def test_bad_psi_lists_are_one_line_errors(value, message):
    with pytest.raises(GenResearchError, match=message):
        parse_truncation_psis(parse("--truncation-psis", value))


def test_grid_points_are_the_models_declared_options(dcgan):
    assert grid_points(dcgan, (0.5, 0.7, 1.0), {}) == [{"truncation_psi": 0.5}, {"truncation_psi": 0.7}, {"truncation_psi": 1.0}]
    assert grid_points(dcgan, (0.0,), {}) == [{"truncation_psi": 0.0}]  # the declaration's range is inclusive
    assert [slug(p) for p in (0.5, 1.0, 0.75)] == ["psi-0.5", "psi-1", "psi-0.75"]


@pytest.mark.parametrize("psis", [(0.5, 1.5), (-0.1,)])
def test_psis_outside_the_declaration_are_refused_naming_the_grid_flag(dcgan, psis):
    with pytest.raises(GenResearchError, match=r"^--truncation-psis -?[\d.]+: must be a finite number in \[0, 1\]$"):
        grid_points(dcgan, psis, {})
    with pytest.raises(GenResearchError, match=r"--truncation-psis .*\[0, 1\]"):
        check_psis_alone(psis)  # the registered declaration, before a checkpoint is read
    check_psis_alone((0.0, 0.5, 1.0))


def test_models_without_truncation_are_refused():
    torch.manual_seed(0)
    ddpm = DDPM(image_shape=(1, 8, 8), block_out_channels=[8, 16], num_train_timesteps=100)
    with pytest.raises(GenResearchError, match="DDPM declares no truncation_psi; leave out --truncation-psis"):
        grid_points(ddpm, (0.5, 1.0), {})
    with pytest.raises(GenResearchError, match="Linear declares no truncation_psi"):
        grid_points(torch.nn.Linear(2, 2), (1.0,), {})


def test_contradicting_options_fail_before_anything_is_loaded(tmp_path, capsys):
    def error(*argv):
        assert main(["evaluate", *argv]) == 2
        message = capsys.readouterr().err.strip()
        assert "\n" not in message
        return message

    ckpt = ["--config", str(tmp_path / "none.yaml"), "--ckpt_path", str(tmp_path / "none.ckpt")]
    grid = ["--truncation-psis", "0.5,1"]
    assert "cannot be combined with --samplers/--steps/--guidance-scales" in error(*ckpt, *grid, "--steps", "4")
    assert "cannot be combined with --samplers" in error(*ckpt, *grid, "--samplers", "ddim")
    assert "cannot be combined with --samplers" in error(*ckpt, *grid, "--guidance-scales", "1,2")
    assert "--truncation-psi (one value) and --truncation-psis (a grid) together" in error(*ckpt, *grid, "--truncation-psi", "0.7")
    assert "the truncation grid samples a checkpoint" in error("--real", "a", "--fake", "b", *grid)
    assert "the truncation grid writes psi.json" in error(*ckpt, *grid, "--json", str(tmp_path / "x.json"))
    assert "--eta only applies to the sampler sweep" in error(*ckpt, *grid, "--eta", "0.5")
    assert "--truncation-psis 2.0: must be a finite number in [0, 1]" in error(*ckpt, "--truncation-psis", "0.5,2")
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    assert "is not an empty folder" in error(*ckpt, *grid, "--out", str(full))
    assert [p.name for p in full.iterdir()] == ["keep.txt"] and not (tmp_path / "x.json").exists()
    assert "--out only apply to the sampler sweep or the truncation grid" in error(*ckpt, "--out", str(tmp_path / "new"))


def psi_rows(*metrics):
    values = {"fid": (40.0, 25.0, 20.0), "precision": (0.9, 0.8, 0.6), "recall": (0.1, 0.3, 0.5), "kid": (0.1, 0.05, 0.04)}
    return [{"truncation_psi": psi, **{f"{m}/pixels": values[m][i] for m in metrics}} for i, psi in enumerate((0.5, 0.7, 1.0))]


def test_psi_table_has_the_psi_column_then_every_metric(tmp_path):
    rows = psi_rows("fid", "precision", "recall")
    rows[2]["recall/pixels"] = math.nan
    csv_path, json_path = report.write_table(tmp_path, rows, {"checkpoint": "g.ckpt"}, report.PSI_LAYOUT)
    assert (csv_path.name, json_path.name) == ("psi.csv", "psi.json")
    with csv_path.open() as handle:
        table = list(csv.DictReader(handle))
    assert list(table[0]) == ["truncation_psi", "fid/pixels", "precision/pixels", "recall/pixels"]  # no NFE columns
    assert [float(r["truncation_psi"]) for r in table] == [0.5, 0.7, 1.0] and float(table[1]["fid/pixels"]) == 25.0
    payload = json.loads(json_path.read_text())
    assert payload["context"] == {"checkpoint": "g.ckpt"} and "1 = off" in payload["columns"]["truncation_psi"]
    assert payload["rows"][2]["recall/pixels"] is None and payload["rows"][0] == rows[0]


def test_metrics_vs_psi_plot_is_written_or_skipped_with_a_note(tmp_path):
    assert report.plot_metrics_vs_psi(psi_rows("fid", "precision", "recall"), tmp_path / "both.png", "64 samples") is None
    assert report.plot_metrics_vs_psi(psi_rows("fid"), tmp_path / "fid.png") is None
    with Image.open(tmp_path / "both.png") as both, Image.open(tmp_path / "fid.png") as fid:
        assert both.format == "PNG" and both.size[0] > 1.7 * fid.size[0]  # two panels: fid, precision/recall
    assert "none of fid, precision, recall" in report.plot_metrics_vs_psi(psi_rows("kid"), tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()


def test_write_outputs_with_the_psi_layout_prints_and_writes_the_psi_files(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    report.write_outputs(tmp_path, psi_rows("fid", "precision"), {"generated": "3 samples"}, {}, "exp", layout=report.PSI_LAYOUT,
                         plot_files=(("metrics_vs_psi.png", report.plot_metrics_vs_psi),))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics_vs_psi.png", "psi.csv", "psi.json"]
    printed = capsys.readouterr().out
    header = next(line for line in printed.splitlines() if line.startswith("truncation_psi"))
    assert header.split() == ["truncation_psi", "fid/pixels", "precision/pixels"] and "nfe" not in printed


def test_truncation_is_off_unless_asked_for(dcgan):
    """A plain evaluate passes no truncation_psi and the evaluation callback none by default: the GAN samples at psi 1."""
    from gen_research.commands.sampling_options import sampling_plan
    from gen_research.models.contract import SamplingContext
    from gen_research.training.callbacks.evaluation import EvaluationCallback

    assert EvaluationCallback().sample_options == {}
    assert dcgan.sampling_defaults() == {"truncation_psi": 1.0}
    args = parse("--metrics", "fid")
    assert args.truncation_psi is None
    assert sampling_plan(dcgan, args, args.family_options, SamplingContext(num_images=4)).options == {}  # what evaluate samples with
    draw = lambda **options: dcgan.sample(6, generator=torch.Generator().manual_seed(1), **options)  # noqa: E731
    assert torch.equal(draw(), draw(truncation_psi=1.0)) and not torch.equal(draw(), draw(truncation_psi=0.5))
