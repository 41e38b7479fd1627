"""Loading frozen CLIP text encoders from every local source kind, on tiny models saved in tmp_path.

Tests: a CLIP model folder gives its text tower (hidden = text_model's last_hidden_state, pooled with projection =
get_text_features); a CLIPTextModelWithProjection folder and an SD-style pipeline folder (text_encoder + tokenizer,
text_encoder_2 + tokenizer_2 saved by transformers 5 as tokenizer.json) load with the right classes and sizes; encode
equals diffusers' StableDiffusionPipeline.encode_prompt (hidden_layer -1) and StableDiffusionXLPipeline.encode_prompt
(-2 on both encoders, concatenated, and text_encoder_2's pooled text_embeds); hidden_layer -2 is hidden_states[-2]; a
clip family checkpoint gives its text tower and tokenizer; the spec is JSON and rebuilds identical outputs after
load_state_dict with no file; wrong sources and settings are one-line errors.
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from gen_research.errors import GenResearchError
from gen_research.models.clip.text_encoders import load_text_encoder, text_encoder_from_spec
from gen_research.models.clip.tokenizer import clip_tokenizer_files, train_clip_tokenizer, write_tokenizer_files

PROMPTS = ["a red seven on wood", "a small blue two at the top left", ""]
TEXT = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, projection_dim=8)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return train_clip_tokenizer(PROMPTS * 3 + ["a green nine at the bottom right"], tmp_path_factory.mktemp("tok"), vocab_size=560, max_length=12)


def text_config(tokenizer, **changes):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(vocab_size=len(tokenizer), max_position_embeddings=12, bos_token_id=tokenizer.bos_token_id,
                          eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **{**TEXT, **changes})


@pytest.fixture(scope="module")
def clip_folder(tokenizer, tmp_path_factory):
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    text = {**text_config(tokenizer).to_dict()}
    vision = dict(image_size=8, patch_size=4, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=8)).eval()
    folder = tmp_path_factory.mktemp("clip")
    model.save_pretrained(folder)
    write_tokenizer_files(clip_tokenizer_files(tokenizer), folder)
    return folder, model


@pytest.fixture(scope="module")
def pipeline_folder(tokenizer, tmp_path_factory):
    """model_index.json + text_encoder/ (CLIPTextModel) + tokenizer/ + text_encoder_2/ (with projection, 3 layers) + tokenizer_2/."""
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(1)
    folder = tmp_path_factory.mktemp("pipeline")
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionXLPipeline"}))
    first = CLIPTextModel(text_config(tokenizer)).eval()
    second = CLIPTextModelWithProjection(text_config(tokenizer, hidden_size=24, num_hidden_layers=3, projection_dim=6)).eval()
    first.save_pretrained(folder / "text_encoder")
    second.save_pretrained(folder / "text_encoder_2")
    write_tokenizer_files(clip_tokenizer_files(tokenizer), folder / "tokenizer")  # SD's own layout: vocab.json + merges.txt
    tokenizer.save_pretrained(folder / "tokenizer_2")  # transformers 5's layout: tokenizer.json
    return folder, first, second


def test_clip_folder_gives_its_text_tower(clip_folder):
    folder, clip = clip_folder
    encoder = load_text_encoder(str(folder), with_projection=True)
    assert type(encoder.model).__name__ == "CLIPTextModelWithProjection" and not any(p.requires_grad for p in encoder.model.parameters())
    assert (encoder.max_length, encoder.hidden_size, encoder.pooled_size) == (12, 16, 8)
    hidden, pooled = encoder.encode(PROMPTS, "cpu")
    assert hidden.shape == (3, 12, 16) and pooled.shape == (3, 8)
    ids = encoder.tokenizer(PROMPTS, padding="max_length", max_length=12, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.allclose(hidden, clip.text_model(input_ids=ids).last_hidden_state, atol=1e-6)
        assert torch.allclose(pooled, clip.get_text_features(input_ids=ids).pooler_output, atol=1e-6)
    plain = load_text_encoder(str(folder))
    assert type(plain.model).__name__ == "CLIPTextModel" and plain.pooled_size == 16
    assert torch.allclose(plain.encode(PROMPTS, "cpu")[1], clip.text_model(input_ids=ids).pooler_output, atol=1e-6)


def test_a_text_model_with_projection_folder(pipeline_folder, tmp_path):
    second = pipeline_folder[2]
    second.save_pretrained(tmp_path)
    write_tokenizer_files(clip_tokenizer_files(load_text_encoder(str(pipeline_folder[0]), "text_encoder_2").tokenizer), tmp_path)
    encoder = load_text_encoder(str(tmp_path))
    assert type(encoder.model).__name__ == "CLIPTextModelWithProjection" and encoder.pooled_size == 6
    hidden, pooled = encoder.encode(PROMPTS[:2], "cpu")
    assert hidden.shape == (2, 12, 24) and pooled.shape == (2, 6)


def test_encode_matches_diffusers_sd_and_sdxl_pipelines(pipeline_folder):
    from diffusers import DDIMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

    folder = pipeline_folder[0]
    first = load_text_encoder(str(folder))
    second = load_text_encoder(str(folder), subfolder="text_encoder_2", with_projection=True)
    assert (first.hidden_size, second.hidden_size, second.pooled_size) == (16, 24, 6)
    assert first.tokenizer(PROMPTS)["input_ids"] == second.tokenizer(PROMPTS)["input_ids"]  # both tokenizer layouts load alike
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sd = StableDiffusionPipeline(vae=None, text_encoder=first.model, tokenizer=first.tokenizer, unet=None, scheduler=DDIMScheduler(),
                                     safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        sdxl = StableDiffusionXLPipeline(vae=None, text_encoder=first.model, text_encoder_2=second.model, tokenizer=first.tokenizer,
                                         tokenizer_2=second.tokenizer, unet=None, scheduler=DDIMScheduler())
    expected_sd, _ = sd.encode_prompt(PROMPTS, "cpu", 1, False)
    assert torch.allclose(first.encode(PROMPTS, "cpu")[0], expected_sd, atol=1e-6)
    expected, _, expected_pooled, _ = sdxl.encode_prompt(PROMPTS, device="cpu", do_classifier_free_guidance=False)
    hidden = torch.cat([first.encode(PROMPTS, "cpu", hidden_layer=-2)[0], second.encode(PROMPTS, "cpu", hidden_layer=-2)[0]], dim=-1)
    assert torch.allclose(hidden, expected, atol=1e-6)
    assert torch.allclose(second.encode(PROMPTS, "cpu", hidden_layer=-2)[1], expected_pooled, atol=1e-6)


def test_hidden_layer_minus_two_is_the_penultimate_hidden_state(pipeline_folder):
    encoder = load_text_encoder(str(pipeline_folder[0]), subfolder="text_encoder_2", with_projection=True)
    ids = encoder.tokenize(PROMPTS)["input_ids"]
    with torch.no_grad():
        output = encoder.model(input_ids=ids, output_hidden_states=True)
    assert torch.equal(encoder.encode(PROMPTS, "cpu", hidden_layer=-2)[0], output.hidden_states[-2])
    assert torch.equal(encoder.encode(PROMPTS, "cpu", hidden_layer=-4)[0], output.hidden_states[0])  # the embeddings
    assert not torch.allclose(output.hidden_states[-1], output.last_hidden_state)  # -1 is the final-layer-normed one
    assert torch.equal(encoder.encode(PROMPTS, "cpu")[0], output.last_hidden_state)
    for bad in (0, -5, 1.5):
        with pytest.raises(GenResearchError, match=r"hidden_layer=.* must be an integer in -1..-4"):
            encoder.encode(PROMPTS, "cpu", hidden_layer=bad)


def test_a_clip_family_checkpoint_gives_its_text_tower(tokenizer, tmp_path):
    from clip_helpers import TINY_CLIP, tiny_trainer

    from gen_research.models.clip.clip import LocalCLIP

    model = LocalCLIP(**TINY_CLIP)
    model.build(clip_tokenizer_files(tokenizer))
    trainer = tiny_trainer(1)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "clip.ckpt")
    encoder = load_text_encoder(str(tmp_path / "clip.ckpt"), with_projection=True)
    assert (encoder.hidden_size, encoder.pooled_size, encoder.max_length) == (32, 16, 12)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(encoder.encode(PROMPTS, "cpu")[1], model.text_features(PROMPTS), atol=1e-6)
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"_class_path": "gen_research.models.classifier.model.Classifier"}}, other)
    with pytest.raises(GenResearchError, match="is a checkpoint of Classifier, not of the clip family"):
        load_text_encoder(str(other))


def test_spec_round_trip_gives_identical_outputs(pipeline_folder):
    encoder = load_text_encoder(str(pipeline_folder[0]), subfolder="text_encoder_2", with_projection=True)
    spec = json.loads(json.dumps(encoder.spec()))  # JSON-able, as a checkpoint's hyperparameters
    rebuilt = text_encoder_from_spec(spec)
    assert not torch.allclose(rebuilt.encode(PROMPTS, "cpu")[1], encoder.encode(PROMPTS, "cpu")[1])  # random weights first
    rebuilt.model.load_state_dict(encoder.model.state_dict())
    for layer in (-1, -2):
        for mine, theirs in zip(rebuilt.encode(PROMPTS, "cpu", layer), encoder.encode(PROMPTS, "cpu", layer)):
            assert torch.equal(mine, theirs)
    assert (rebuilt.max_length, rebuilt.hidden_size, rebuilt.pooled_size) == (encoder.max_length, encoder.hidden_size, encoder.pooled_size)
    with pytest.raises(GenResearchError, match="only CLIPTextModel, CLIPTextModelWithProjection"):
        text_encoder_from_spec({**spec, "class_name": "BertModel"})


def test_wrong_sources_are_one_line_errors(pipeline_folder, clip_folder, tmp_path):
    folder = pipeline_folder[0]
    with pytest.raises(GenResearchError, match="no text encoder at .*missing: pass a clip checkpoint"):
        load_text_encoder(str(tmp_path / "missing"))
    with pytest.raises(GenResearchError, match="has no text_encoder_3/config.json"):
        load_text_encoder(str(folder), subfolder="text_encoder_3")
    with pytest.raises(GenResearchError, match="has no projection"):
        load_text_encoder(str(folder), with_projection=True)
    with pytest.raises(GenResearchError, match="has no config.json or model_index.json"):
        load_text_encoder(str(tmp_path))
    pipeline_folder[1].save_pretrained(tmp_path / "bare")  # a text encoder without its tokenizer
    with pytest.raises(GenResearchError, match=r"no CLIP tokenizer at .*bare \(vocab.json, merges.txt missing\).*saved next to the text encoder"):
        load_text_encoder(str(tmp_path / "bare"))
    with pytest.raises(GenResearchError, match="prompts must be a list of strings"):
        load_text_encoder(str(clip_folder[0])).encode("one prompt", "cpu")
