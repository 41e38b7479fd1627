"""Sampler sweep pieces: grid parsing and expansion, one-line errors, NFE counting, table files and plots."""

import csv
import json
import math

import pytest
import torch
from PIL import Image

from gen_research.commands.main import main
from gen_research.errors import GenResearchError
from gen_research.commands.evaluate import build_parser
from gen_research.models.contract import conditioning_classes
from gen_research.models.diffusion import DDPM
from gen_research.sampling.diffusion import make_scheduler
from gen_research.evaluation.sampler_grid import grid as sweep_grid
from gen_research.evaluation.sampler_grid import report
from gen_research.evaluation.sampler_grid.grid import ForwardCounter, GridPoint, SweepAxes, check_model, expand_grid, parse_axes
from gen_research.evaluation.sampler_grid.run import PointStats, generate


def parse(*argv):
    return build_parser().parse_args(["--config", "x.yaml", "--ckpt_path", "x.ckpt", *argv])


@pytest.fixture(scope="module")
def conditional():
    torch.manual_seed(0)
    return DDPM(image_shape=(1, 8, 8), block_out_channels=[8, 16], num_train_timesteps=100, num_classes=10,
                class_conditional=True, sampler="dpm-solver++", sampling_steps=7, guidance_scale=3.0, eta=0.5).eval()


@pytest.fixture(scope="module")
def unconditional():
    torch.manual_seed(0)
    return DDPM(image_shape=(1, 8, 8), block_out_channels=[8, 16], num_train_timesteps=100, num_classes=10).eval()


def test_axes_are_parsed_deduplicated_and_absent_without_options():
    assert parse_axes(parse()) is None
    axes = parse_axes(parse("--samplers", "ddim, dpm-solver++,ddim", "--steps", "10,20,10", "--guidance-scales", "1,2.5"))
    assert axes == SweepAxes(("ddim", "dpm-solver++"), (10, 20), (1.0, 2.5))
    assert parse_axes(parse("--steps", "4")) == SweepAxes(None, (4,), None)


@pytest.mark.parametrize("option, value, message", [
    ("--samplers", "ddim,ddin", "unknown diffusion sampler 'ddin'; did you mean ddim"),
    ("--steps", "10,x", "--steps: 'x' is not"),
    ("--steps", "0", "positive integers"),
    ("--guidance-scales", "1,nan", "--guidance-scales: 'nan' is not"),
    ("--samplers", " , ", "--samplers is empty"),
])
def test_bad_axis_values_are_one_line_errors(option, value, message):
    with pytest.raises(GenResearchError, match=message.replace("(", r"\(")):
        parse_axes(parse(option, value))


def test_grid_fills_in_the_models_defaults(conditional):
    defaults = sweep_grid.model_defaults(conditional)
    assert defaults == {"sampler": "dpm-solver++", "steps": 7, "guidance_scale": 3.0, "eta": 0.5}
    points = expand_grid(SweepAxes(samplers=("ddim", "heun"), steps=(2, 4)), defaults)
    assert points == [GridPoint("ddim", 2, 3.0, 0.5), GridPoint("ddim", 4, 3.0, 0.5), GridPoint("heun", 2, 3.0, 0.5), GridPoint("heun", 4, 3.0, 0.5)]
    full = expand_grid(SweepAxes(("ddim", "euler"), (10, 20, 50), (1.0, 2.0, 4.0)), defaults, eta=0.0)
    assert len(full) == 18 and len(set(full)) == 18 and all(p.eta == 0.0 for p in full)
    assert [p.slug for p in full[:4]] == ["ddim-10-w1", "ddim-20-w1", "ddim-50-w1", "ddim-10-w2"]  # sampler, scale, steps
    assert expand_grid(SweepAxes(guidance_scales=(1.5,)), defaults) == [GridPoint("dpm-solver++", 7, 1.5, 0.5)]
    with pytest.raises(GenResearchError, match="no default for --steps"):
        expand_grid(SweepAxes(samplers=("ddim",)), {"sampler": None, "steps": None})


def test_models_that_cannot_be_swept_are_refused(conditional, unconditional):
    class Autoencoder(torch.nn.Module):
        pass

    with pytest.raises(GenResearchError, match="needs a model with declared sampler and steps options.*Autoencoder"):
        check_model(Autoencoder(), SweepAxes(samplers=("ddim",)))
    # num_classes alone is not conditional
    assert conditioning_classes(conditional) == 10 and conditioning_classes(unconditional) is None
    with pytest.raises(GenResearchError, match="unconditional, so classifier-free guidance does not apply"):
        check_model(unconditional, SweepAxes(guidance_scales=(1.0, 2.0)))
    check_model(unconditional, SweepAxes(guidance_scales=(1.0,)))  # its default: allowed
    check_model(conditional, SweepAxes(("ddim", "heun"), (2,), (0.0, 1.0, 4.0)))
    x0_model = DDPM(image_shape=(1, 8, 8), block_out_channels=[8, 16], num_train_timesteps=100, prediction_type="sample")
    with pytest.raises(GenResearchError, match="'pndm' does not support prediction_type 'sample'"):
        check_model(x0_model, SweepAxes(samplers=("ddim", "pndm")))


def test_contradicting_options_fail_before_anything_is_loaded(tmp_path, capsys):
    def error(*argv):
        assert main(["evaluate", *argv]) == 2
        return capsys.readouterr().err.strip()

    ckpt = ["--config", str(tmp_path / "none.yaml"), "--ckpt_path", str(tmp_path / "none.ckpt")]
    assert "samples a checkpoint" in error("--real", "a", "--fake", "b", "--samplers", "ddim")
    assert "--eta only apply to the sampler sweep" in error(*ckpt, "--eta", "0.5")
    assert "writes sweep.json" in error(*ckpt, "--steps", "4", "--json", "x.json")
    assert "--plots is for a single evaluation" in error(*ckpt, "--steps", "4", "--plots", "p")
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    assert "is not an empty folder" in error(*ckpt, "--steps", "4", "--out", str(full))
    assert (full / "keep.txt").read_text() == "mine" and len(list(full.iterdir())) == 1
    assert "unknown diffusion sampler 'dpm'" in error(*ckpt, "--samplers", "dpm")


def test_forward_counter_counts_calls_and_rows():
    net = torch.nn.Linear(3, 2)
    with ForwardCounter(net) as counter:
        net(torch.zeros(4, 3))
        net(input=torch.zeros(8, 3))
    net(torch.zeros(4, 3))  # after exit: not counted, hook removed
    assert (counter.calls, counter.rows) == (2, 12) and not net._forward_pre_hooks


@pytest.mark.parametrize("sampler, steps", [("ddim", 6), ("dpm-solver++", 4), ("euler", 3), ("heun", 3), ("pndm", 4)])
def test_nfe_is_the_schedulers_trajectory_length(conditional, sampler, steps):
    scheduler = make_scheduler(sampler, conditional.noise_scheduler.config)
    scheduler.set_timesteps(steps)
    expected = {"heun": 2 * steps - 1, "pndm": steps + 1}.get(sampler, steps)  # heun: 2 calls a step, 1 on the last
    assert len(scheduler.timesteps) == expected
    for scale, doubled in ((1.0, 1), (2.0, 2)):  # guided steps: one call on a doubled batch
        stats = PointStats()
        batches = list(generate(conditional, GridPoint(sampler, steps, scale, 0.0), 3, 2, 0, 10, stats))
        assert [len(images) for images, _ in batches] == [2, 1]  # only the first batch is counted: one trajectory
        assert stats.nfe == expected and stats.nfe_weighted == doubled * expected


def test_every_grid_point_starts_from_the_same_noise_and_classes_in_turn(conditional, unconditional):
    point = GridPoint("ddim", 3, 2.0, 0.0)
    first = list(generate(conditional, point, 5, 2, 7, 10, PointStats()))
    again = list(generate(conditional, point, 5, 2, 7, 10, PointStats()))
    assert torch.cat([l for _, l in first]).tolist() == [0, 1, 2, 3, 4]
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, again))
    other_seed = list(generate(conditional, point, 5, 2, 8, 10, PointStats()))
    assert not torch.equal(first[0][0], other_seed[0][0])
    (images, labels), = generate(unconditional, GridPoint("ddim", 3, 1.0, 0.0), 3, 4, 7, None, PointStats())
    assert labels is None and images.shape == (3, 1, 8, 8) and images.abs().max() <= 1


def rows_with(*metrics):
    rows = []
    for sampler in ("ddim", "heun"):
        for scale in (1.0, 3.0):
            for steps, nfe in ((2, 2), (4, 4)):
                nfe = 2 * nfe - 1 if sampler == "heun" else nfe
                row = {"sampler": sampler, "steps": steps, "guidance_scale": scale, "eta": 0.0, "nfe": nfe,
                       "nfe_weighted": float(nfe * (2 if scale != 1 else 1)), "sampling_seconds": 0.5}
                row.update({f"{m}/classifier-digits8": 1.0 / nfe + scale for m in metrics})
                rows.append(row)
    return rows


def test_table_files_have_one_row_per_point_and_every_metric(tmp_path):
    rows = rows_with("fid", "precision", "recall")
    rows[0]["recall/classifier-digits8"] = math.nan
    csv_path, json_path = report.write_table(tmp_path, rows, {"checkpoint": "x.ckpt"})
    with csv_path.open() as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == 8 and list(table[0]) == [*report.SETTING_COLUMNS, "fid/classifier-digits8", "precision/classifier-digits8",
                                                  "recall/classifier-digits8"]
    assert table[5]["sampler"] == "heun" and table[5]["nfe"] == "7" and float(table[5]["fid/classifier-digits8"]) == rows[5]["fid/classifier-digits8"]
    payload = json.loads(json_path.read_text())  # strict JSON: nan is written as null
    assert set(payload) == {"context", "provenance", "columns", "rows"} and len(payload["rows"]) == 8
    assert payload["rows"][0]["recall/classifier-digits8"] is None and payload["rows"][1] == {k: rows[1][k] for k in table[0]}
    assert "counts as 1 call" in payload["columns"]["nfe"]


def test_plots_are_written_or_skipped_with_a_note(tmp_path):
    rows = rows_with("fid", "precision", "recall", "is", "accuracy")
    assert report.plot_fid_vs_nfe(rows, tmp_path / "fid_vs_nfe.png", "32 samples") is None
    assert report.plot_guidance(rows, tmp_path / "guidance.png") is None
    for name in ("fid_vs_nfe.png", "guidance.png"):
        with Image.open(tmp_path / name) as image:
            assert image.format == "PNG" and image.size[0] > 300
    with Image.open(tmp_path / "guidance.png") as wide, Image.open(tmp_path / "fid_vs_nfe.png") as narrow:
        assert wide.size[0] > 3 * narrow.size[0]  # five panels: fid, precision, recall, is, accuracy
    assert "no fid in --metrics" in report.plot_fid_vs_nfe(rows_with("precision"), tmp_path / "a.png")
    assert "none of fid" in report.plot_guidance(rows_with("kid"), tmp_path / "b.png")
    one_scale = [r for r in rows if r["guidance_scale"] == 1.0]
    assert "one guidance scale only" in report.plot_guidance(one_scale, tmp_path / "c.png")
    assert not any((tmp_path / n).exists() for n in ("a.png", "b.png", "c.png"))


def test_wandb_disabled_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert report.log_to_wandb(tmp_path, "exp", rows_with("fid"), {}, [], {}) == "disabled"
    assert not any(tmp_path.iterdir())
