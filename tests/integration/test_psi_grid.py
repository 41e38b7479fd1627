"""The truncation grid end to end: a tiny DCGAN on 8x8 digits evaluated at psi 0.5 and 1 with FID and
precision/recall on pixel features; psi 1's row is a plain ``evaluate`` of the same samples."""

import csv
import json
import math

import pytest
from PIL import Image

from gen_research.evaluation.provenance import differences

from .helpers import TEST_CONFIGS, run_in_process

pytestmark = pytest.mark.integration
CONFIG = str(TEST_CONFIGS / "tiny_dcgan.yaml")
METRIC_KEYS = {"fid/pixels", "precision/pixels", "recall/pixels"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(folder, checkpoint of tiny_dcgan), trained once for the module."""
    root = tmp_path_factory.mktemp("psi")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("WANDB_MODE", "disabled")
        patch.delenv("GEN_RESEARCH_RUN_DIR", raising=False)
        assert run_in_process("fit", "--config", CONFIG) == 0
    return root, next((root / "runs" / "tiny_dcgan").glob("*/checkpoints/last.ckpt"))


def evaluate_args(trained, *extra):
    root, ckpt = trained
    return ["evaluate", "--config", CONFIG, "--ckpt_path", str(ckpt), "--metrics", "fid,precision,recall", "--num-images", "64",
            "--features", "pixels", "--seed", "3", "--batch-size", "25", "--cache-dir", str(root / "cache"), *extra]


def test_psi_grid_writes_table_plot_samples_and_psi_1_is_a_plain_evaluate(trained, workdir, capsys):
    root, _ = trained
    plain = workdir / "plain.json"
    assert run_in_process(*evaluate_args(trained, "--json", str(plain))) == 0
    capsys.readouterr()
    assert run_in_process(*evaluate_args(trained, "--truncation-psis", "0.5,1.0")) == 0
    out, = (workdir / "runs" / "tiny_dcgan").glob("*-psi-grid")  # the default run folder
    printed = capsys.readouterr().out
    assert f"Table: {out.relative_to(workdir) / 'psi.csv'}" in printed and "W&B: off" in printed

    with (out / "psi.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert [float(r["truncation_psi"]) for r in table] == [0.5, 1.0] and set(table[0]) == {"truncation_psi"} | METRIC_KEYS
    payload = json.loads((out / "psi.json").read_text())
    rows = {row["truncation_psi"]: row for row in payload["rows"]}
    assert payload["context"]["grid"] == "2 truncation psi value(s): 0.5, 1" and "seed 3" in payload["context"]["generated"]
    for row in rows.values():
        assert all(math.isfinite(row[key]) for key in METRIC_KEYS), row  # (precision rising as psi falls: not for a tiny model)
        assert 0 <= row["precision/pixels"] <= 1 and 0 <= row["recall/pixels"] <= 1
    plain_results = json.loads(plain.read_text())
    plain_provenance = plain_results.pop("provenance")  # the grid's provenance is the plain evaluate's but for its sampling
    differing = {name for name, _, _ in differences(payload["provenance"], plain_provenance)}
    assert differing and all(name.startswith("sampling.") for name in differing), differing
    assert plain_results.pop("sampling/truncation_psi") == 1.0  # a plain evaluate records the psi it drew with
    assert {key: rows[1.0][key] for key in METRIC_KEYS} == plain_results  # the same samples, the same numbers
    assert rows[0.5]["fid/pixels"] != rows[1.0]["fid/pixels"]  # psi reached the samples
    assert len(list((root / "cache").glob("*.pt"))) == 1  # the grid read the plain evaluate's reference entry

    pngs = [out / "metrics_vs_psi.png", out / "samples" / "psi-0.5.png", out / "samples" / "psi-1.png"]
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["psi-0.5.png", "psi-1.png"]
    for png in pngs:
        with Image.open(png) as image:
            image.verify()
    with Image.open(pngs[1]) as grid:
        assert grid.size == (10 * 10 + 2, 2 * 10 + 2)  # 20 samples of 8x8, ten a row, 2-pixel padding


def test_psi_grid_refuses_metrics_it_cannot_compare(trained, workdir, capsys):
    assert run_in_process(*evaluate_args(trained, "--truncation-psis", "0.5,1", "--metrics", "fid,psnr")) == 2
    assert "the truncation grid compares samples; metrics needing pairs (ssim, psnr, lpips) do not apply" in capsys.readouterr().err
    assert not (workdir / "runs").exists()  # refused before a run folder was made
