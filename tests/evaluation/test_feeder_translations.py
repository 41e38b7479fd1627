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
