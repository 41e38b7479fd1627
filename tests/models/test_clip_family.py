"""The ``clip`` family: a tokenizer trained at fit start, contrastive training that learns the captions, a
self-contained checkpoint, and the saved folder that transformers, the ``clip`` extractor and ``clip_score`` load.

Tests: retrieval_hits counts repeated captions by text; pixel values are the [-1, 1] images (grey repeated); the
captions come from ``captions("train")`` when offered; a fit trains the tokenizer and reaches top-1 retrieval above
chance and its loss falls; the temperature starts at ln(1/0.07) and is clamped to ln(100); AdamW has OpenAI's
settings and no decay on 1-D parameters; load_from_checkpoint rebuilds the tokenizer and the same features with no
folder; save_pretrained loads in transformers (CLIPImageProcessor gives the training pixels), the clip extractor gives
the model's image features, clip_score ranks matching captions above shuffled ones; bad settings are one-line errors.
"""

from __future__ import annotations

import math

import pytest
import torch
from clip_helpers import CAPTIONS, TINY_CLIP, SquaresData, tiny_trainer

from gen_research.errors import GenResearchError
from gen_research.models.clip.clip import LocalCLIP, pixel_values, retrieval_hits, training_captions


@pytest.fixture(scope="module")
def trained():
    """(model, data, val/retrieval_top1 of a fresh model with its tokenizer, val/retrieval_top1 after, metrics) of 60 steps."""
    import lightning.pytorch as L

    L.seed_everything(0)
    data = SquaresData()
    model = LocalCLIP(**TINY_CLIP)
    trainer = tiny_trainer(60, val_check_interval=60, check_val_every_n_epoch=None)
    trainer.fit(model, datamodule=data)
    after = float(trainer.callback_metrics["val/retrieval_top1"])
    fresh = LocalCLIP(**TINY_CLIP)
    fresh.build(model.tokenizer_files)
    validation = tiny_trainer(1)
    chance_level = validation.validate(fresh, dataloaders=data.val_dataloader(), verbose=False)[0]["val/retrieval_top1"]
    return model, data, chance_level, after, trainer.callback_metrics


def test_retrieval_hits_count_repeated_captions_by_text():
    captions = ["a", "b", "a", "c"]
    logits = torch.tensor([[0.0, 0.0, 5.0, 0.0],   # image 0 -> text 2 ("a"): a hit though not the diagonal
                           [0.0, 1.0, 0.0, 2.0],   # image 1 -> text 3 ("c"): a miss
                           [0.0, 0.0, 1.0, 0.0],   # image 2 -> text 2: a hit
                           [0.0, 0.0, 0.0, 1.0]])  # image 3 -> text 3: a hit
    image_to_text, text_to_image = retrieval_hits(logits, captions)
    assert image_to_text.tolist() == [1.0, 0.0, 1.0, 1.0]
    # text j retrieves argmax over images of column j: text 0 -> image 0..3 all 0 -> image 0 ("a") hit; text 1 -> image 1
    # hit; text 2 -> image 0 ("a") hit; text 3 -> image 1 ("b") miss.
    assert text_to_image.tolist() == [1.0, 1.0, 1.0, 0.0]


def test_pixel_values_are_the_images_and_grey_is_repeated():
    rgb = torch.rand(2, 3, 4, 4) * 2 - 1
    assert pixel_values(rgb) is rgb
    grey = torch.rand(2, 1, 4, 4) * 2 - 1
    assert torch.equal(pixel_values(grey), grey.repeat(1, 3, 1, 1))


def test_captions_come_from_the_data_modules_captions_method_when_it_has_one():
    class Offers:
        def captions(self, split):
            assert split == "train"
            return ["x", "y"]

        def train_dataloader(self):
            raise AssertionError("images were loaded although captions() exists")

    assert training_captions(Offers()) == ["x", "y"]
    assert sorted(set(training_captions(SquaresData()))) == sorted(CAPTIONS)  # else: one pass over the training loader
    with pytest.raises(GenResearchError, match="model.init_args.tokenizer"):
        training_captions(None)


def test_fit_trains_the_tokenizer_and_learns_the_captions(trained):
    model, data, chance_level, after, metrics = trained
    assert len(model.tokenizer) <= TINY_CLIP["vocab_size"] and model.tokenizer.model_max_length == TINY_CLIP["max_length"]
    assert model.clip.config.text_config.vocab_size == len(model.tokenizer)
    assert model.clip.config.text_config.eos_token_id == model.tokenizer.eos_token_id  # the pooled token is the end token
    ids = model.tokenize(CAPTIONS)
    assert ids.shape == (len(CAPTIONS), TINY_CLIP["max_length"]) and (ids == model.tokenizer.pad_token_id).any()
    # 16 validation pairs, 2 of each caption: a random model retrieves the right text 1 time in 8.
    assert chance_level < 0.5 and after == 1.0
    assert float(metrics["val/loss"]) < math.log(16) * 0.6


def test_temperature_starts_at_openai_value_and_is_clamped(trained):
    model = trained[0]
    fresh = LocalCLIP(**TINY_CLIP)
    fresh.build(model.tokenizer_files)
    assert float(fresh.clip.logit_scale.detach()) == pytest.approx(math.log(1 / 0.07), abs=1e-4)
    with torch.no_grad():
        fresh.clip.logit_scale.fill_(7.0)
    fresh.on_train_batch_end(None, None, 0)
    assert float(fresh.clip.logit_scale.detach()) == pytest.approx(math.log(100.0), abs=1e-6)


def test_optimizer_has_openai_settings_and_no_decay_on_gains_and_biases(trained):
    model = trained[0]
    fresh = LocalCLIP(**{**TINY_CLIP, "lr": 5e-4, "weight_decay": 0.2, "lr_schedule": "constant"})
    fresh.build(model.tokenizer_files)
    optimizer = fresh.configure_optimizers()["optimizer"]
    decay, no_decay = optimizer.param_groups
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.2, 0.0)
    assert decay["betas"] == (0.9, 0.98) and decay["eps"] == 1e-6 and decay["lr"] == 5e-4
    assert all(p.ndim >= 2 for p in decay["params"]) and all(p.ndim < 2 for p in no_decay["params"])
    assert any(p is fresh.clip.logit_scale for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(fresh.clip.parameters()))


def test_checkpoint_is_self_contained(trained, tmp_path):
    model, data = trained[0], trained[1]
    trainer = tiny_trainer(1)
    trainer.strategy.connect(model)
    path = tmp_path / "clip.ckpt"
    trainer.save_checkpoint(path)
    loaded = LocalCLIP.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    assert loaded.tokenizer_files == model.tokenizer_files
    assert loaded.tokenizer(CAPTIONS)["input_ids"] == model.tokenizer(CAPTIONS)["input_ids"]
    images = data.val.images[:4]
    model.eval(), loaded.eval()
    with torch.no_grad():
        assert torch.equal(loaded.image_features(images), model.image_features(images))
        assert torch.equal(loaded.text_features(CAPTIONS), model.text_features(CAPTIONS))
    plain = torch.load(path, weights_only=True)
    with pytest.raises(GenResearchError, match="holds no tokenizer"):
        LocalCLIP(**TINY_CLIP).on_load_checkpoint({k: v for k, v in plain.items() if k != "clip_tokenizer"})


def test_saved_folder_loads_in_transformers_and_gen_research(trained, tmp_path):
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

    from gen_research.evaluation.extractors.clip import CLIPFeatures
    from gen_research.evaluation.specs.clip_score import CLIPScoreMetric, load_clip
    from gen_research.evaluation.extractors.clip import _Preprocess

    model, data = trained[0], trained[1]
    model.eval()
    folder = model.save_pretrained(tmp_path / "clip")
    images = data.val.images
    with torch.no_grad():
        own = model.image_features(images)
        reloaded = CLIPModel.from_pretrained(folder, local_files_only=True).eval()
        assert torch.allclose(reloaded.get_image_features(pixel_values=images).pooler_output, own, atol=1e-5)
        assert torch.allclose(CLIPFeatures(weights=str(folder))(images)["features"], own, atol=1e-5)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    assert tokenizer(CAPTIONS)["input_ids"] == model.tokenizer(CAPTIONS)["input_ids"]
    # An image processor given the 8-bit pixels computes the very tensors the model trained on.
    processor = CLIPImageProcessor.from_pretrained(folder)
    as_bytes = torch.round((images[:2] + 1) * 127.5).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    processed = processor(images=list(as_bytes), return_tensors="pt")["pixel_values"]
    assert torch.allclose(processed, images[:2], atol=1e-6)
    # clip_score with the local CLIP: matching captions score higher than shuffled ones, after 60 steps on the squares.
    clip, clip_tokenizer = load_clip(folder)
    metric = CLIPScoreMetric(clip, clip_tokenizer, _Preprocess(folder, clip.config.vision_config.image_size))
    captions = data.val.captions
    shuffled = captions[3:] + captions[:3]  # every caption moves to an image of another caption (8 kinds, 2 each)
    assert all(a != b for a, b in zip(captions, shuffled))
    matching, mismatched = metric.scores(images, captions), metric.scores(images, shuffled)
    assert float(matching.mean()) > float(mismatched.mean()) + 10.0


@pytest.mark.parametrize(("changes", "message"), [
    ({"image_shape": (3, 16, 12)}, "square images"),
    ({"image_shape": (2, 16, 16)}, "2 channels"),
    ({"patch_size": 5}, "patch_size=5 must divide the image side 16"),
    ({"text_hidden_size": 30, "text_heads": 4}, "text_hidden_size=30 must be a multiple of text_heads=4"),
    ({"vocab_size": 100}, "model.init_args.vocab_size=100"),
    ({"betas": (0.9, 1.5)}, "model.init_args.betas"),
    ({"max_logit_scale": 10.0, "logit_scale_init": 3.0}, "model.init_args.logit_scale_init=3.0"),
])
def test_bad_settings_are_one_line_errors(changes, message):
    with pytest.raises(GenResearchError, match=message.replace("(", r"\(").replace(")", r"\)")) as error:
        LocalCLIP(**{**TINY_CLIP, **changes})
    assert "\n" not in str(error.value)


def test_a_missing_tokenizer_folder_is_named_at_fit_and_an_unbuilt_model_says_what_to_do(tmp_path):
    model = LocalCLIP(**{**TINY_CLIP, "tokenizer": str(tmp_path / "gone")})
    with pytest.raises(GenResearchError, match="gone is not a folder"):
        model.setup("fit")
    with pytest.raises(GenResearchError, match="has no tokenizer yet"):
        model.image_features(torch.zeros(1, 3, 16, 16))


def test_the_experiment_and_the_tiny_config_parse_with_their_settings():
    from pathlib import Path

    from gen_research.config.files import load_experiment
    from gen_research.registry import load_builtins

    load_builtins()
    repo = Path(__file__).resolve().parents[2]
    experiment = load_experiment(repo / "experiments" / "clip_captions_mnist5k.yaml")
    assert experiment["model"]["class_path"] == "clip" or experiment["model"]["class_path"].endswith("LocalCLIP")
    assert experiment["model"]["init_args"]["lr"] == 5e-4 and experiment["model"]["init_args"]["betas"] == [0.9, 0.98]
    data = experiment["data"]["init_args"]
    assert experiment["data"]["class_path"].endswith(("captioned_digits", "CaptionedDigits"))
    assert (data["image_size"], data["batch_size"], data["caption_dropout"]) == (32, 128, 0.0)
    assert experiment["trainer"]["precision"] == "auto" and experiment["trainer"]["max_steps"] == 756
    tiny = load_experiment(repo / "tests" / "configs" / "tiny_clip.yaml")
    assert tiny["trainer"]["precision"] == "32-true" and tiny["data"]["init_args"]["image_size"] == 16
