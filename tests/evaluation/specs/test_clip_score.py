"""clip_score on a tiny CLIPModel + tokenizer saved to a temp folder: value, batching, reals, errors, folder lookup."""

import json
import os

import pytest
import torch

from gen_research.errors import GenResearchError
from gen_research.evaluation.base import EvalOptions, FeatureExtractor
from gen_research.evaluation.extractors.clip import CLIP_MEAN, CLIP_STD
from gen_research.evaluation.specs.clip_score import ENV_VAR, CLIPScore
from gen_research.registry import METRICS
from tests.evaluation.extractors.test_clip import normalise, tiny_clip

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CAPTIONS = ["a cat", "a dog", "cat on a mat", "dog and cat", "a big dog", "the cat sat", "mat", "dog dog dog", "zz", "a cat and a dog on a mat"]


def save_tokenizer(folder):
    """A byte-level BPE vocabulary small enough for the tiny text tower (vocab_size 99; eos = pad = 1)."""
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for token in letters + [f"{l}</w>" for l in letters] + ["at</w>", "cat</w>", "og</w>", "dog</w>"]:
        vocab[token] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\na t</w>\nc at</w>\no g</w>\nd og</w>\n")


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    model = tiny_clip()
    folder = tmp_path_factory.mktemp("clipscore") / "tiny-clip"
    model.save_pretrained(folder)
    save_tokenizer(folder)
    return model, folder


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)


def images(n, seed):
    generator = torch.Generator().manual_seed(seed)
    # uint8-valued, as images read from files are: the clip extractor quantises before its (here: no-op) resize
    return torch.randint(0, 256, (n, 3, 32, 32), generator=generator).float() / 127.5 - 1


def run(folder, batches, real_batches=()):
    spec = CLIPScore()
    metric = spec.build(FeatureExtractor(), EvalOptions(clip_model=str(folder)))
    for x, texts in real_batches:
        spec.update_images(metric, x, None, texts, real=True)
    for x, texts in batches:
        spec.update_images(metric, x, None, texts, real=False)
    return spec, spec.compute(metric)["clip_score"]


def test_equals_hand_computation(clip_folder, no_env):
    from transformers import AutoTokenizer

    model, folder = clip_folder
    x = images(len(CAPTIONS), 0)
    spec, score = run(folder, [(x, CAPTIONS)])
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    tokens = tokenizer(CAPTIONS, padding=True, truncation=True, max_length=16, return_tensors="pt")
    with torch.no_grad():
        image = model.get_image_features(pixel_values=normalise((x + 1) / 2, CLIP_MEAN, CLIP_STD)).pooler_output
        text = model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]).pooler_output
    cos = (image / image.norm(dim=1, keepdim=True) * (text / text.norm(dim=1, keepdim=True))).sum(1)
    expected = (100 * cos.clamp(min=0)).double().mean().item()
    assert score == pytest.approx(expected, abs=1e-5)
    assert spec.feature_name(FeatureExtractor()) == "clip-tiny-clip"
    assert METRICS.get("clip_score") is CLIPScore
    assert CLIPScore.needs_images and CLIPScore.needs_texts and not CLIPScore.needs_reals and not CLIPScore.paired


def test_batch_size_independent_and_reals_ignored(clip_folder, no_env):
    _, folder = clip_folder
    x = images(len(CAPTIONS), 1)
    _, by2 = run(folder, [(x[i : i + 2], CAPTIONS[i : i + 2]) for i in range(0, 10, 2)])
    _, by5 = run(folder, [(x[i : i + 5], CAPTIONS[i : i + 5]) for i in range(0, 10, 5)])
    _, whole = run(folder, [(x, CAPTIONS)])
    _, with_reals = run(folder, [(x, CAPTIONS)], real_batches=[(images(4, 2), None), (images(3, 3), ["a", "b", "c"])])
    # float32 matmuls of different batch shapes (and padding lengths) differ in the last bits only
    assert by2 == pytest.approx(by5, abs=1e-4) and by5 == pytest.approx(whole, abs=1e-4)
    assert with_reals == whole  # real batches change nothing
    assert by2 > 0


def test_missing_captions(clip_folder, no_env):
    _, folder = clip_folder
    spec = CLIPScore()
    metric = spec.build(FeatureExtractor(), EvalOptions(clip_model=str(folder)))
    with pytest.raises(GenResearchError, match="--captions"):
        spec.update_images(metric, images(2, 0), None, None, real=False)
    with pytest.raises(GenResearchError, match="one caption per generated image"):
        spec.update_images(metric, images(2, 0), None, ["only one"], real=False)


def test_folder_lookup_and_errors(clip_folder, no_env, monkeypatch, tmp_path):
    _, folder = clip_folder
    with pytest.raises(GenResearchError, match="--clip-model"):
        CLIPScore().build(FeatureExtractor(), EvalOptions())
    with pytest.raises(GenResearchError, match="--clip-model"):
        CLIPScore().build(FeatureExtractor(), EvalOptions(clip_model=str(tmp_path / "missing")))
    extractor = FeatureExtractor()
    extractor.folder = str(folder)  # not a clip extractor: its attributes are not looked at
    with pytest.raises(GenResearchError, match="--clip-model"):
        CLIPScore().build(extractor, EvalOptions())
    monkeypatch.setenv(ENV_VAR, str(folder))
    spec = CLIPScore()
    spec.build(FeatureExtractor(), EvalOptions())
    assert spec.feature_name(FeatureExtractor()) == "clip-tiny-clip"
