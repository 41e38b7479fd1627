"""captioned_digits: deterministic renderings whose captions, colours, backgrounds and depth maps say what the pixels
show; the batch fields; seeded, resumable caption dropout; micro-conditioning; one-line errors."""

from __future__ import annotations

import math

import pytest
import torch

from gen_research.data.captioned import EMPTY_PROMPT
from gen_research.data.captioned_digits import (BACKGROUNDS, COLOURS, DIGIT_WORDS, POSITIONS, SIZES, THICKNESSES,
                                                CaptionedDigits, caption_for, draw_item, parse_caption, render_item)
from gen_research.data.captioned_render import digit_alphas
from gen_research.data.embedded import _mnist5k_arrays
from gen_research.errors import GenResearchError

SMALL = dict(limit=60, variants_per_digit=2, batch_size=16)


def _module(**overrides) -> CaptionedDigits:
    dm = CaptionedDigits(**{**SMALL, **overrides})
    dm.setup("fit")
    return dm


@pytest.fixture(scope="module")
def digits() -> CaptionedDigits:
    return _module(depth=True)


def hue_saturation(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """HSV hue (degrees) and saturation of [3, ...] RGB in [0, 1]."""
    high, low = rgb.max(0).values, rgb.min(0).values
    chroma = high - low
    r, g, b = rgb
    safe = chroma.clamp_min(1e-8)
    hue = torch.where(high == r, ((g - b) / safe) % 6, torch.where(high == g, (b - r) / safe + 2, (r - g) / safe + 4))
    return hue * 60, torch.where(high > 0, chroma / high.clamp_min(1e-8), torch.zeros_like(high))


def _unit(image: torch.Tensor) -> torch.Tensor:
    return (image + 1) / 2


def test_same_arguments_give_the_same_set_and_another_seed_another(digits):
    again = _module(depth=True)
    other = _module(depth=True, attribute_seed=1)
    assert all(torch.equal(a, b) for a, b in zip(digits.dataset.images, again.dataset.images))
    assert digits.dataset.captions == again.dataset.captions
    assert digits.dataset.captions != other.dataset.captions
    assert not torch.equal(digits.dataset.images[0], other.dataset.images[0])


def test_captions_name_the_attributes_and_the_label(digits):
    dataset = digits.dataset
    assert len(dataset) == 120
    for index in range(len(dataset)):
        attributes = digits.attributes(index)
        parsed = parse_caption(dataset.captions[index])
        assert parsed == {name: attributes[name] for name in parsed}
        assert int(dataset.labels[index]) == attributes["digit"]
        if attributes["size"] == "large":
            assert attributes["position"] == "center" and " at the " not in dataset.captions[index]
    assert caption_for({"digit": 7, "colour": "red", "size": "small", "thickness": "thick", "position": "top left",
                        "background": "wooden"}) == "a small thick red seven at the top left on a wooden background"
    assert caption_for({"digit": 3, "colour": "blue", "size": "large", "thickness": "thin", "position": "center",
                        "background": "black"}) == "a large thin blue three on a black background"
    seen = {name: {digits.attributes(i)[name] for i in range(len(dataset))}
            for name in ("colour", "size", "thickness", "background")}
    assert seen == {"colour": set(COLOURS), "size": set(SIZES), "thickness": set(THICKNESSES), "background": set(BACKGROUNDS)}
    assert {int(label) for label in dataset.labels} == set(range(10))  # the limited subset still has every digit


def test_attributes_before_setup_are_those_rendered(digits):
    fresh = CaptionedDigits(**SMALL, depth=True)
    assert [fresh.attributes(i) for i in (0, 7, 119)] == [digits.attributes(i) for i in (0, 7, 119)]
    with pytest.raises(GenResearchError, match="item 120 does not exist"):
        fresh.attributes(120)


def test_stroke_colour_is_the_named_hue(digits):
    for index in range(len(digits.dataset)):
        item = digits.dataset[index]
        hue, saturation = hue_saturation(_unit(item["image"]))
        stroke = saturation > 0.5
        assert stroke.sum() >= 5, digits.dataset.captions[index]
        angle = hue[stroke] * math.pi / 180  # circular mean: red sits at 0 = 360
        mean = math.degrees(math.atan2(angle.sin().mean(), angle.cos().mean())) % 360
        target = COLOURS[digits.attributes(index)["colour"]]
        assert min(abs(mean - target), 360 - abs(mean - target)) < 10, digits.dataset.captions[index]


def test_background_pixels_are_grey_and_the_strokes_dominate():
    digit, index = _mnist5k_arrays()[0][4000:4001, 0].numpy(), 4000
    alpha = torch.from_numpy(digit_alphas(digit, thick=False))[0]
    for background in BACKGROUNDS:
        attributes, geometry, draws = draw_item(0, index, 8, [(32, 32)], False, 0.0)
        attributes = {**attributes, "background": background, "colour": "green"}
        pixels = render_item(attributes, geometry, draws, alpha)
        _, saturation = hue_saturation(pixels[:3])
        outside = pixels[3] == 0
        assert outside.float().mean() > 0.5
        assert saturation[outside].max() < 0.1, background
        if background != "black":
            grey = pixels[0][outside]
            assert 0.05 - 1e-6 <= grey.min() and grey.max() <= 0.35 + 1e-6 and grey.std() > 0.01  # a texture
        assert saturation[pixels[3] > 0.9].min() > 0.9  # full strokes are fully saturated


def test_depth_is_the_strokes_distance_map(digits):
    for index in range(0, len(digits.dataset), 7):
        item = digits.dataset[index]
        depth = item["depth"]
        assert depth.shape == (1, 32, 32) and depth.dtype == torch.float32
        assert depth.max() == 1.0 and depth.min() == -1.0
        _, saturation = hue_saturation(_unit(item["image"]))
        near = depth[0] > 0
        assert (saturation[near] > 0.5).float().mean() > 0.95  # depth is on the strokes ...
        assert saturation[depth[0].argmax() // 32, depth[0].argmax() % 32] > 0.5  # ... and peaks inside them


def test_batches_have_the_fields_and_dtypes(digits):
    batch = next(iter(digits.val_dataloader()))
    assert set(batch) == set(digits.batch_fields) == {"image", "label", "caption", "original_size", "crop_coords", "depth"}
    assert batch["image"].shape == (12, 3, 32, 32) and batch["image"].dtype == torch.float32
    assert batch["image"].min() >= -1 and batch["image"].max() <= 1
    assert batch["label"].dtype == torch.int64
    assert isinstance(batch["caption"], list) and all(isinstance(c, str) and c for c in batch["caption"])
    assert batch["original_size"].dtype == torch.int64 and (batch["original_size"] == 32).all()
    assert batch["crop_coords"].dtype == torch.int64 and (batch["crop_coords"] == 0).all()
    assert digits.image_shape == (3, 32, 32) and digits.num_classes == 10
    assert "depth" not in CaptionedDigits(**SMALL).batch_fields


def test_splits_keep_every_variant_of_a_digit_together(digits):
    owners = {}
    for name in ("train", "val", "test"):
        for index in getattr(digits, f"{name}_set").indices:
            owners.setdefault(digits.attributes(index)["mnist_index"], set()).add(name)
    assert len(owners) == 60 and all(len(splits) == 1 for splits in owners.values())
    assert [len(getattr(digits, f"{name}_set")) for name in ("train", "val", "test")] == [96, 12, 12]


def _dropped(dm: CaptionedDigits, make_trainer, epoch: int, step: int, training: bool = True) -> list[bool]:
    dm.trainer = make_trainer(epoch=epoch, ready=step, training=training)
    captions = [f"caption {i}" for i in range(64)]
    out = dm.on_after_batch_transfer({"image": torch.zeros(64, 3, 2, 2), "caption": captions}, 0)["caption"]
    assert all(o in (c, EMPTY_PROMPT) for o, c in zip(out, captions))
    return [o == EMPTY_PROMPT for o in out]


def test_caption_dropout_rate_is_seeded_and_resumable_and_never_in_validation(make_trainer):
    dm = CaptionedDigits(**SMALL, caption_dropout=0.3)
    draws = [_dropped(dm, make_trainer, epoch=0, step=step) for step in range(50)]
    rate = sum(map(sum, draws)) / (50 * 64)
    assert abs(rate - 0.3) < 4 * math.sqrt(0.3 * 0.7 / (50 * 64))
    resumed = CaptionedDigits(**SMALL, caption_dropout=0.3)  # a resumed run at (epoch 0, step 17)
    assert _dropped(resumed, make_trainer, epoch=0, step=17) == draws[17]
    assert _dropped(resumed, make_trainer, epoch=1, step=17) != draws[17]
    assert not any(_dropped(dm, make_trainer, epoch=0, step=3, training=False))
    assert not any(_dropped(CaptionedDigits(**SMALL, caption_dropout=0.0), make_trainer, epoch=0, step=3))


def test_micro_conditioning_records_the_original_size_and_crop():
    dm = _module(micro_conditioning=True, random_crop_fraction=0.25, image_size=16)
    sizes = {tuple(s) for s in dm.dataset.original_size.tolist()}
    assert sizes == {(20, 20), (30, 30), (40, 40)}  # 16 * 1.25 resized, times 1, 1.5 or 2
    crops = dm.dataset.crop_coords
    assert crops.min() >= 0 and crops.max() <= 4 and len({tuple(c) for c in crops.tolist()}) > 5
    assert dm.dataset[0]["image"].shape == (3, 16, 16)
    for index in range(len(dm.dataset)):
        attributes = dm.attributes(index)
        assert tuple(dm.dataset.original_size[index].tolist()) == attributes["original_size"]


@pytest.mark.parametrize("options, key", [
    (dict(random_flip=True), "random_flip"),
    (dict(limit=0), "limit"),
    (dict(random_crop_fraction=0.2), "micro_conditioning"),
    (dict(random_crop_fraction=0.9, micro_conditioning=True), "random_crop_fraction"),
    (dict(caption_dropout=1.5), "caption_dropout"),
    (dict(image_size=4), "image_size"),
    (dict(buckets=[[32, -1]]), "buckets"),
])
def test_bad_options_are_one_line_errors_naming_the_key(options, key):
    with pytest.raises(GenResearchError, match=f"data.init_args.{key}") as error:
        CaptionedDigits(**options)
    assert "\n" not in str(error.value)


def test_vocabulary_is_the_documented_one():
    assert DIGIT_WORDS[7] == "seven" and len(DIGIT_WORDS) == 10
    assert COLOURS == {"red": 0, "yellow": 60, "green": 120, "cyan": 180, "blue": 240, "purple": 300}
    assert POSITIONS[-1] == "center" and len(POSITIONS) == 5
    with pytest.raises(ValueError):
        parse_caption("a large thin blue three at the top left on a black background")  # large digits are centred
