"""What the evaluation feeder gives metrics for a translator: translations into each item's target domain, labels from
the field the extractor's classifier predicts, cycle pairs, and no paired metric without a paired target."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from gen_research.errors import GenResearchError
from gen_research.evaluation.feeder import Feeder


class ShiftTranslator(nn.Module):
    """translate(x, t) = x + 0.1 * (t + 1): each domain a known shift, so every number below is exact."""

    target_domains = 2
    domain_names = ("A", "B")
    source_channels = 1

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))  # a device to run on

    def translate(self, images, target=None, **options):
        return images + 0.1 * (target.float().view(-1, 1, 1, 1) + 1)


def unpaired_items(count: int) -> list[dict]:
    """CycleGAN-style evaluation items: a source of domain 0 asking for domain 1, an unrelated real image of domain 1."""
    return [{"source": torch.full((1, 2, 2), -0.5), "image": torch.full((1, 2, 2), 0.25), "label": torch.tensor(k % 3),
             "domain": torch.tensor(0), "target_domain": torch.tensor(1)} for k in range(count)]


def multidomain_items(count: int) -> list[dict]:
    """StarGAN-style items: the image is the source; its own domain and the one it asks for."""
    return [{"image": torch.full((1, 2, 2), 0.0), "label": torch.tensor(7), "domain": torch.tensor(k % 2),
             "target_domain": torch.tensor((k + 1) % 2)} for k in range(count)]


def test_translations_go_into_each_items_target_domain_and_carry_the_label_the_classifier_predicts():
    items = multidomain_items(4)
    by_domain = Feeder(ShiftTranslator(), items, 4, 4, batch_size=4, with_labels=True, label_field="domain")
    (images, labels), = list(by_domain.fakes())
    assert torch.allclose(images[:, 0, 0, 0], torch.tensor([0.2, 0.1, 0.2, 0.1]))  # target domains 1, 0, 1, 0
    assert labels.tolist() == [1, 0, 1, 0]  # a domain classifier is scored against the domain asked for
    (_, real_labels), = list(by_domain.reference_batches())
    assert real_labels.tolist() == [0, 1, 0, 1]  # a real image's own domain
    by_class = Feeder(ShiftTranslator(), items, 4, 4, batch_size=4, with_labels=True)
    assert list(by_class.fakes())[0][1].tolist() == [7, 7, 7, 7]  # the class the translation should keep


def test_unpaired_reals_have_the_target_domain_and_no_class_and_refuse_paired_metrics():
    items = unpaired_items(3)
    by_domain = Feeder(ShiftTranslator(), items, 3, 3, batch_size=3, with_labels=True, label_field="domain")
    assert list(by_domain.reference_batches())[0][1].tolist() == [1, 1, 1]  # the image is a real of domain B
    by_class = Feeder(ShiftTranslator(), items, 3, 3, batch_size=3, with_labels=True)
    reals = list(by_class.reference_batches())
    assert isinstance(reals[0], torch.Tensor)  # no labels: the class of an unrelated real image is unknown
    assert list(by_class.fakes())[0][1].tolist() == [0, 1, 2]  # the sources' classes, for class preservation
    with pytest.raises(GenResearchError, match="no target \\(unpaired data\\)"):
        list(by_class.pairs())
    with pytest.raises(GenResearchError, match="class metrics of real images"):
        list(by_class.raw_reals())


def test_cycle_pairs_translate_there_and_back_into_the_sources_own_domain():
    feeder = Feeder(ShiftTranslator(), unpaired_items(2), 2, 2, batch_size=2)
    (back, source), = list(feeder.cycle_pairs())
    assert torch.allclose(back, source + 0.2 + 0.1)  # into B (+0.2), back into A (+0.1)


def test_a_translator_with_domains_needs_items_that_name_a_target_domain():
    items = [{"image": torch.zeros(1, 2, 2), "label": torch.tensor(0)}]
    with pytest.raises(GenResearchError, match="name no target_domain"):
        list(Feeder(ShiftTranslator(), items, 1, 1, batch_size=1).fakes())


def test_class_metrics_of_translations_are_refused_on_data_without_classes():
    """Folder data labels every item 0: an accuracy there would be the share of outputs read as class 0, exit status 0."""
    wanting = SimpleNamespace(needs_labels=True, label_metrics=["accuracy"], needs_cycle_pairs=False, needs_pairs=False,
                              needs_texts=False, options=SimpleNamespace(num_classes=None))
    with pytest.raises(GenResearchError, match="need data with classes"):
        Feeder(ShiftTranslator(), unpaired_items(2), 2, 2, batch_size=2, with_labels=True).check(wanting)
    Feeder(ShiftTranslator(), unpaired_items(2), 2, 2, batch_size=2, with_labels=True, label_field="domain").check(wanting)
    wanting.options.num_classes = 10
    Feeder(ShiftTranslator(), unpaired_items(2), 2, 2, batch_size=2, with_labels=True).check(wanting)


# ---- cfid: the source image is the condition -----------------------------------------------------------------
class FixedTranslator(nn.Module):
    """One fixed direction (pix2pix-like): translate(x) = x (``flip``: -x, which breaks the relation to the source
    while keeping its marginal, the sources being symmetric about 0)."""

    target_domains = None
    domain_names = None
    source_channels = 1

    def __init__(self, flip: bool = False) -> None:
        super().__init__()
        self.flip = flip
        self.anchor = nn.Parameter(torch.zeros(()))

    def translate(self, images, target=None, **options):
        return -images if self.flip else images.clone()


def paired_items(count: int) -> list[dict]:
    """Paired items whose target is their source (the identity is the right translation), sources symmetric about 0."""
    generator = torch.Generator().manual_seed(0)
    halves = torch.rand(count // 2, 1, 2, 2, generator=generator) * 2 - 1
    sources = torch.cat([halves, -halves])
    return [{"source": s, "target": s.clone(), "image": s.clone(), "label": torch.tensor(0)} for s in sources]


def cfid_of(translator, items, batch_size=16, cache=None, with_conditions=True):
    from gen_research.evaluation.base import EvalOptions
    from gen_research.evaluation.evaluator import Evaluator, reference_outputs
    from gen_research.evaluation.extractors.pixels import PixelFeatures

    evaluator = Evaluator(PixelFeatures(image_shape=(1, 2, 2)), "cfid,fid", EvalOptions())
    # cfid rides on the labels path too (needs_labels): the evaluate command turns labels on for it
    feeder = Feeder(translator, items, len(items), len(items), batch_size=batch_size, with_labels=True, with_conditions=with_conditions)
    feeder.check(evaluator)
    reals = reference_outputs(evaluator, feeder.reference_batches, {"dataset": "paired"}, cache)
    evaluator.add_outputs(reals, "real")
    feeder.feed(evaluator)
    return evaluator.compute(), reals


def test_cfid_of_a_translator_conditions_on_the_sources():
    items = paired_items(64)
    right, reals = cfid_of(FixedTranslator(), items)
    assert right["cfid/pixels"] == pytest.approx(0.0, abs=1e-6) and right["fid/pixels"] == pytest.approx(0.0, abs=1e-6)
    assert torch.equal(reals["condition_features"], reals["features"])  # the reals' sources are their targets here
    flipped, _ = cfid_of(FixedTranslator(flip=True), items, batch_size=7)
    # Features u = (x + 1) / 2 in [0, 1]; translations 1 - u. Real: x = y exactly (A = I, no residual); generated:
    # A^ = -I. cfid = ||2 mean(u) - 1||^2 + Tr((2I) S_yy (2I)) = 4 Tr(S_uu) (the sources are symmetric: mean(u) = 1/2).
    u = torch.stack([item["source"] for item in items]).flatten(1).double().add(1).div(2)
    assert flipped["cfid/pixels"] == pytest.approx(4 * float(torch.cov(u.T).trace()), rel=1e-6)
    assert flipped["fid/pixels"] == pytest.approx(0.0, abs=1e-6)  # same marginal: FID cannot see it


def test_cfid_source_features_are_cached_with_the_reals_under_their_own_key(tmp_path):
    from gen_research.evaluation.cache import ReferenceCache
    from gen_research.evaluation.evaluator import Evaluator, reference_outputs
    from gen_research.evaluation.extractors.pixels import PixelFeatures

    class CountingCache(ReferenceCache):
        saves = 0

        def save(self, key_parts, outputs):
            CountingCache.saves += 1
            return super().save(key_parts, outputs)

    cache, items = CountingCache(str(tmp_path)), paired_items(32)
    plain = Feeder(FixedTranslator(), items, 32, 32, batch_size=8, with_labels=True)  # fid only: no sources
    fid_only = Evaluator(PixelFeatures(image_shape=(1, 2, 2)), "fid")
    assert set(reference_outputs(fid_only, plain.reference_batches, {"dataset": "paired"}, cache)) == {"features", "labels"}
    first, reals = cfid_of(FixedTranslator(flip=True), items, cache=cache)  # same key parts, with sources: a new entry
    again, cached = cfid_of(FixedTranslator(flip=True), items, cache=cache)  # read back
    assert CountingCache.saves == 2 and len(list(tmp_path.glob("*.pt"))) == 2
    assert set(cached) == {"features", "condition_features", "labels"} and torch.equal(cached["condition_features"], reals["condition_features"])
    assert again == first


def test_cfid_of_a_translator_needs_paired_data_and_the_feeders_sources():
    with pytest.raises(GenResearchError, match="needs paired data"):
        cfid_of(ShiftTranslator(), unpaired_items(4))
    with pytest.raises(GenResearchError, match="with_conditions=True"):
        cfid_of(FixedTranslator(), paired_items(4), with_conditions=False)
