"""Provenance records: what differs is found and named; --compare refuses mismatches unless --force."""

import json

import pytest

from gen_research.errors import GenResearchError
from gen_research.evaluation.base import EvalOptions
from gen_research.evaluation.extractors import PixelFeatures
from gen_research.evaluation.provenance import build_provenance, check_comparable, compare_results, differences, read_result


def record(num_generated=100, seed=0, sampling=None, weights_extractor=None, subject="a.ckpt", **option_changes):
    extractor = weights_extractor or PixelFeatures(image_shape=(1, 8, 8))
    return build_provenance(extractor, options=EvalOptions(seed=seed, **option_changes), metrics=["fid", "kid"], num_generated=num_generated,
                            num_reference=100, reference={"dataset": "digits", "split": "val", "fingerprint": "abc"},
                            sampling=sampling or {"sampler": "ddim", "steps": 20}, subject={"checkpoint": subject})


def write(path, provenance, **metrics):
    path.write_text(json.dumps({**metrics, **({"provenance": provenance} if provenance is not None else {})}))
    return str(path)


def test_the_record_holds_what_the_issue_lists():
    prov = record()
    assert prov["extractor"]["name"] == "pixels" and "extractor_weights" in prov["extractor"]
    assert {"num_generated", "num_reference", "reference", "seed", "sampling", "metric_options", "versions"} <= set(prov)
    assert prov["reference"]["fingerprint"] == "abc" and prov["sampling"] == {"sampler": "ddim", "steps": 20}
    assert prov["versions"]["torch"] and prov["versions"]["torchmetrics"] and prov["versions"]["gen_research"]
    json.dumps(prov)  # plain JSON


def test_what_was_evaluated_and_when_are_not_compared():
    assert differences(record(subject="a.ckpt"), record(subject="b.ckpt")) == []


@pytest.mark.parametrize(("change", "field"), [
    ({"num_generated": 500}, "num_generated"),
    ({"seed": 1}, "seed"),
    ({"sampling": {"sampler": "ddim", "steps": 50}}, "sampling.steps"),
    ({"kid_subset_size": 50}, "metric_options.kid_subset_size"),
    ({"weights_extractor": PixelFeatures(resize=4, image_shape=(1, 8, 8))}, "extractor.name"),
])
def test_each_difference_is_named(change, field):
    names = [name for name, _, _ in differences(record(), record(**change))]
    assert field in names


def test_library_versions_are_compared():
    other = record()
    other["versions"]["torch"] = "0.0.1"
    assert [name for name, _, _ in differences(record(), other)] == ["versions.torch"]


def test_compare_refuses_in_one_line_naming_the_field(tmp_path, capsys):
    a = write(tmp_path / "a.json", record(), **{"fid/pixels": 10.0})
    b = write(tmp_path / "b.json", record(num_generated=500), **{"fid/pixels": 8.0})
    with pytest.raises(GenResearchError) as error:
        compare_results([a, b])
    message = str(error.value)
    assert "\n" not in message and "num_generated (100 vs 500)" in message and "--force" in message
    assert compare_results([a, b], force=True) == 0
    out = capsys.readouterr().out
    assert "warning (--force)" in out and "10" in out and "8" in out


def test_compare_prints_comparable_results_side_by_side(tmp_path, capsys):
    a = write(tmp_path / "a.json", record(subject="a"), **{"fid/pixels": 10.5, "kid/pixels": 0.25})
    b = write(tmp_path / "b.json", record(subject="b"), **{"fid/pixels": 7.25})
    assert compare_results([a, b]) == 0
    lines = capsys.readouterr().out.splitlines()
    fid = next(line for line in lines if line.startswith("fid/pixels")).split()
    kid = next(line for line in lines if line.startswith("kid/pixels")).split()
    assert fid == ["fid/pixels", "10.5", "7.25"] and kid == ["kid/pixels", "0.25", "-"]
    assert any(line.startswith("comparable:") for line in lines)


def test_results_without_provenance_need_force(tmp_path):
    a = write(tmp_path / "a.json", record(), **{"fid/pixels": 1.0})
    old = write(tmp_path / "old.json", None, **{"fid/pixels": 2.0})
    with pytest.raises(GenResearchError, match="old.json has no provenance"):
        check_comparable([a, old], [read_result(a)[1], read_result(old)[1]], force=False)
    assert len(check_comparable([a, old], [read_result(a)[1], None], force=True)) == 1


def test_files_that_are_not_results_are_refused(tmp_path):
    (tmp_path / "sweep.json").write_text(json.dumps({"context": {}, "rows": []}))
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(GenResearchError, match="sampler-sweep"):
        read_result(str(tmp_path / "sweep.json"))
    with pytest.raises(GenResearchError, match="not JSON"):
        read_result(str(tmp_path / "broken.json"))
    with pytest.raises(GenResearchError, match="cannot read"):
        read_result(str(tmp_path / "missing.json"))
