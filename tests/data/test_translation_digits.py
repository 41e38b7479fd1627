"""edges2digits, digits2colour and digit_domains: shapes, determinism, edges, disjoint halves, balanced domains."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from gen_research.data import translation_digits as td
from gen_research.data.embedded import _mnist5k_arrays
from gen_research.data.translation_digits import DigitDomains, DigitsToColour, EdgesToDigits
from gen_research.errors import GenResearchError
from gen_research.registry import DATA, load_builtins

NEW_NAMES = {"paired_folder": "PairedFolderData", "unpaired_folder": "UnpairedFolderData",
             "multidomain_folder": "MultiDomainFolderData", "edges2digits": "EdgesToDigits",
             "digits2colour": "DigitsToColour", "digit_domains": "DigitDomains"}


def _uint8(image: torch.Tensor) -> bytes:
    """An item's image in [-1, 1] back to its stored bytes (a key to find it in the source arrays)."""
    return ((image + 1) * 127.5).round().to(torch.uint8).numpy().tobytes()


def test_the_six_translation_data_modules_are_listed(capsys):
    from gen_research.commands.main import list_command

    load_builtins()
    for name, cls in NEW_NAMES.items():
        assert DATA.get(name).__name__ == cls
    assert list_command(["datamodules"]) == 0
    out = capsys.readouterr().out
    assert all(f"  {name} " in out for name in NEW_NAMES)


def test_edges_are_the_thresholded_sobel_magnitude_of_the_digit():
    digits, labels = _mnist5k_arrays()
    edges = td.edge_maps(0.25)
    assert edges.shape == (5000, 1, 28, 28) and set(edges.unique().tolist()) == {-1.0, 1.0}
    for i in (0, 1234, 4999):  # scipy's Sobel (zero padding) as the independent reference
        unit = digits[i, 0].double().numpy() / 255
        magnitude = np.hypot(ndimage.sobel(unit, 0, mode="constant"), ndimage.sobel(unit, 1, mode="constant"))
        assert np.array_equal(edges[i, 0].numpy() > 0, magnitude > 0.25 * magnitude.max())
    on_edges = edges > 0  # a gradient lies between stroke and background: edge pixels are neither all ink nor empty
    assert digits[on_edges].float().mean() < digits[digits > 0].float().mean() and on_edges.float().mean() < 0.35


def test_edges2digits_items_pair_the_edges_with_their_digit():
    dm = EdgesToDigits(batch_size=16)
    assert dm.image_shape == dm.source_shape == (1, 28, 28) and dm.num_classes == 10
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (4000, 500, 500)
    digits, labels = _mnist5k_arrays()
    index = {digits[i].numpy().tobytes(): i for i in range(len(digits))}
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == set(dm.batch_fields) == {"source", "target", "image", "label"}
    for source, target, label in zip(batch["source"], batch["target"], batch["label"]):
        i = index[_uint8(target)]
        assert torch.equal(source, td.edge_maps(0.25)[i]) and int(label) == int(labels[i])
    assert torch.equal(batch["image"], batch["target"]) and batch["label"].dtype == torch.int64
    with pytest.raises(GenResearchError, match="edge_threshold must be in"):
        EdgesToDigits(edge_threshold=1.5)


def test_derived_sets_rebuild_identically_without_touching_the_global_rng():
    first = (td.edge_maps(0.25).clone(), td.colour_digits().clone(), *[t.clone() for t in td.styled_digits(4)])
    state = torch.get_rng_state()
    for cached in (td.edge_maps, td.colour_digits, td.styled_digits, td.digit_halves, td._textures):
        cached.cache_clear()
    again = (td.edge_maps(0.25), td.colour_digits(), *td.styled_digits(4))
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert torch.equal(torch.get_rng_state(), state)


def test_digits2colour_halves_are_disjoint_and_b_is_a_rendering_of_its_own_half():
    a_half, b_half = td.digit_halves()
    assert len(a_half) == len(b_half) == 2500 and not set(a_half.tolist()) & set(b_half.tolist())
    digits = _mnist5k_arrays()[0]
    colour = td.colour_digits()
    assert colour.shape == (2500, 3, 28, 28) and colour.dtype == torch.uint8
    palette = td._to_uint8(td.PALETTE)
    for k in (0, 777, 2499):  # where B's own digit is solid ink, the pixel is one palette colour
        ink = digits[b_half[k], 0] == 255
        stroke = colour[k][:, ink].T.unique(dim=0)
        assert len(stroke) == 1 and (palette == stroke).all(dim=1).any()


def test_digits2colour_training_items_come_from_a_and_b_with_the_source_class():
    dm = DigitsToColour(batch_size=64)
    assert dm.image_shape == (3, 28, 28) and dm.source_shape == (1, 28, 28) and dm.domain_names == ("A", "B")
    assert dm.num_classes == 10 and dm.joint_geometry is False
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (2000, 250, 250)
    digits, labels = _mnist5k_arrays()
    a_half, b_half = (set(h.tolist()) for h in td.digit_halves())
    a_index = {digits[i].numpy().tobytes(): i for i in a_half}
    b_index = {td.colour_digits()[k].numpy().tobytes(): int(i) for k, i in enumerate(td.digit_halves()[1])}
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == set(dm.batch_fields) and batch["source"].shape == (64, 1, 28, 28)
    assert (batch["domain"] == 0).all() and (batch["target_domain"] == 1).all()
    sources = [a_index[_uint8(s)] for s in batch["source"]]  # every source is an A-half digit
    images = [b_index[_uint8(x)] for x in batch["image"]]  # every image a B-half rendering
    assert torch.equal(batch["label"], labels[sources]) and set(images) <= b_half
    assert (labels[sources] != labels[images]).any()  # nothing ties an item's B image to its source's class


def test_digits2colour_eval_direction_btoa_serves_b_sources_with_their_class():
    dm = DigitsToColour(eval_direction="BtoA")
    dm.setup("fit")
    labels = _mnist5k_arrays()[1]
    b_index = {td.colour_digits()[k].numpy().tobytes(): int(i) for k, i in enumerate(td.digit_halves()[1])}
    for k in (0, 100, 249):
        item = dm.test_set[k]
        assert item["source"].shape == (3, 28, 28) and item["image"].shape == (1, 28, 28)
        assert (item["domain"], item["target_domain"]) == (1, 0)
        assert int(item["label"]) == int(labels[b_index[_uint8(item["source"])]])
    assert dm.train_set[0]["source"].shape == (1, 28, 28)  # training stays A -> B


def test_digit_domains_are_balanced_exclusive_and_tell_apart():
    images, domains = td.styled_digits(6)
    assert images.shape == (5000, 3, 28, 28) and domains.bincount().tolist() == [834, 834, 833, 833, 833, 833]
    # a small classifier (logistic regression on 7x7 colour thumbnails) tells the six styles apart on held-out digits
    from sklearn.linear_model import LogisticRegression

    thumbnails = torch.nn.functional.avg_pool2d(images.float() / 255, 4).flatten(1).numpy()
    classifier = LogisticRegression(max_iter=200).fit(thumbnails[:1000], domains[:1000].numpy())
    assert classifier.score(thumbnails[1000:], domains[1000:].numpy()) > 0.99


def test_digit_domains_items_follow_the_multidomain_rules():
    dm = DigitDomains(num_domains=3, batch_size=32)
    assert dm.domain_names == ("red", "green", "blue_on_white") and dm.num_domains == 3 and dm.multi_label is False
    assert dm.image_shape == dm.source_shape == (3, 28, 28) and dm.num_classes == 10
    dm.setup("fit")
    images, domains = td.styled_digits(3)
    labels = _mnist5k_arrays()[1]
    index = {images[i].numpy().tobytes(): i for i in range(len(images))}
    seen = []
    for split in (dm.train_set, dm.val_set, dm.test_set):
        for k in range(0, len(split), 7):
            item = split[k]
            i = index[_uint8(item["image"])]
            seen.append(i)
            assert int(item["domain"]) == int(domains[i]) and int(item["label"]) == int(labels[i])
            assert int(item["target_domain"]) == (int(domains[i]) + 1 + k % 2) % 3
    assert len(seen) == len(set(seen))  # no digit is served twice (in two splits or two domains)
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == set(dm.batch_fields) and batch["domain"].dtype == torch.int64
    with pytest.raises(GenResearchError, match="num_domains must be 2 to 6"):
        DigitDomains(num_domains=7)
