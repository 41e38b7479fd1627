"""Checkpoints and weights load with weights_only=True: a file whose unpickling would run code is refused in
one line, and the code does not run (docs/security.md)."""

import pickle

import pytest
import torch

from gen_research.errors import GenResearchError
from gen_research.training.run_folder import read_checkpoint
from gen_research.files.safe_load import load_plain, refused_object
from tests.payloads import write_payload_checkpoint


@pytest.fixture
def payload(tmp_path):
    marker = tmp_path / "code-ran.marker"
    return write_payload_checkpoint(tmp_path / "crafted.ckpt", marker), marker


def assert_refused(error: GenResearchError, path) -> None:
    message = str(error)
    assert "\n" not in message
    assert str(path) in message and "execute code" in message and "plain state dict" in message


def test_the_payload_does_run_code_when_unpickled_unsafely(payload):
    path, marker = payload  # guards the tests below: without weights_only the marker file appears
    torch.load(path, weights_only=False)
    assert marker.is_file()


def test_load_plain_refuses_the_payload_without_running_it(payload):
    path, marker = payload
    with pytest.raises(GenResearchError) as refused:
        load_plain(path, "checkpoint")
    assert_refused(refused.value, path)
    assert "open" in str(refused.value)  # names the object it would have called
    assert not marker.exists()


def test_load_plain_reads_tensors_and_containers(tmp_path):
    plain = {"state_dict": {"w": torch.arange(3.0)}, "global_step": 4, "hyper_parameters": {"lr": 0.1, "shape": (1, 8, 8), "names": ["a"]}}
    torch.save(plain, tmp_path / "plain.ckpt")
    loaded = load_plain(tmp_path / "plain.ckpt")
    assert torch.equal(loaded["state_dict"]["w"], torch.arange(3.0)) and loaded["hyper_parameters"]["shape"] == (1, 8, 8)


def test_a_damaged_file_is_not_reported_as_unsafe(tmp_path):
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1000)}}, good)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[:300])
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"\x80\x02}q\x00X\x01")  # a broken pickle stream: an UnpicklingError that names no object
    for path in (truncated, garbage):
        with pytest.raises(Exception) as error:
            load_plain(path)
        assert not isinstance(error.value, GenResearchError)
        with pytest.raises(GenResearchError, match="cannot read checkpoint"):
            read_checkpoint(path)
    assert refused_object(pickle.UnpicklingError("Weights only load failed. invalid load key")) is None


def test_read_checkpoint_refuses_the_payload(payload):
    path, marker = payload
    with pytest.raises(GenResearchError) as refused:
        read_checkpoint(path)
    assert_refused(refused.value, path)
    assert not marker.exists()


def test_classifier_weights_refuse_the_payload(payload):
    from gen_research.evaluation.extractors import ClassifierFeatures

    path, marker = payload
    with pytest.raises(GenResearchError) as refused:
        ClassifierFeatures(weights=str(path))
    assert_refused(refused.value, path)
    assert not marker.exists()


def test_inception_weights_refuse_the_payload(tmp_path):
    from gen_research.evaluation.extractors import InceptionFeatures

    marker = tmp_path / "code-ran.marker"
    path = write_payload_checkpoint(tmp_path / "weights.pth", marker)
    with pytest.raises(GenResearchError) as refused:  # torch-fidelity itself would unpickle with weights_only=False
        InceptionFeatures(weights=str(path), verify_hash=False)
    assert "InceptionV3 weights" in str(refused.value) and "execute code" in str(refused.value)
    assert not marker.exists()
