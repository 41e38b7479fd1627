"""evaluate --json records the provenance of its numbers; evaluate --compare checks it before printing them side by side."""

import json

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from .helpers import run_in_process

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """real/: 120 digits; a/, b/: 120 other digits each."""
    root = tmp_path_factory.mktemp("provenance_folders")
    images = (load_digits().images * (255 / 16)).astype(np.uint8)
    for name, block in (("real", images[:120]), ("a", images[120:240]), ("b", images[240:360])):
        (root / name).mkdir()
        for i, image in enumerate(block):
            Image.fromarray(image, mode="L").save(root / name / f"{i:04d}.png")
    return root


def evaluate(folders, out, *extra):
    args = ["evaluate", "--real", str(folders / "real"), "--fake", str(folders / out.stem[0]), "--metrics", "fid,precision",
            "--no-cache", "--json", str(out), *extra]
    assert run_in_process(*args) == 0
    return json.loads(out.read_text())


def test_json_records_provenance_and_compare_checks_it(folders, workdir, capsys):
    a = evaluate(folders, workdir / "a.json")
    prov = a["provenance"]
    assert prov["extractor"]["name"] == "pixels" and prov["extractor"]["extractor_weights"] == "none"
    assert prov["num_generated"] == prov["num_reference"] == 120 and prov["seed"] == 0
    assert prov["reference"]["dataset"].startswith("folder:") and len(prov["reference"]["fingerprint"]) == 32
    assert prov["subject"]["fake"].endswith("/a") and prov["versions"]["torchmetrics"]
    evaluate(folders, workdir / "b.json")
    capsys.readouterr()
    assert run_in_process("evaluate", "--compare", str(workdir / "a.json"), str(workdir / "b.json")) == 0
    out = capsys.readouterr().out
    assert "fid/pixels" in out and "comparable:" in out

    evaluate(folders, workdir / "b_small.json", "--num-images", "60")
    capsys.readouterr()  # the evaluation's progress bars
    assert run_in_process("evaluate", "--compare", str(workdir / "a.json"), str(workdir / "b_small.json")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "num_generated (120 vs 60)" in err and "--force" in err
    assert run_in_process("evaluate", "--compare", str(workdir / "a.json"), str(workdir / "b_small.json"), "--force") == 0
    assert "warning (--force)" in capsys.readouterr().out


def test_compare_takes_no_evaluation_arguments(folders, workdir, capsys):
    assert run_in_process("evaluate", "--compare", "x.json", "y.json", "--real", str(folders / "real")) == 2
    assert "--compare only reads result files" in capsys.readouterr().err
    assert run_in_process("evaluate", "--real", str(folders / "real"), "--fake", str(folders / "a"), "--force") == 2
    assert "--force applies to --compare only" in capsys.readouterr().err


def test_plots_of_the_metrics_curves(folders, workdir, capsys):
    plots = workdir / "plots"
    args = ["evaluate", "--real", str(folders / "real"), "--fake", str(folders / "a"), "--metrics", "fid_infinity,alpha_beta",
            "--no-cache", "--plots", str(plots)]
    assert run_in_process(*args) == 0
    assert sorted(p.name for p in plots.iterdir()) == ["alpha_precision_curve-pixels.png", "fid_vs_n-pixels.png"]
    assert run_in_process(*args) == 2  # never over earlier plots
    assert "holds files" in capsys.readouterr().err
