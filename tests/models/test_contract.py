"""The model contract's pieces: declared options check their values; families are asked through capabilities."""

import pytest
import torch

from gen_research.errors import GenResearchError
from gen_research.models.contract import (ModelFamily, SamplingContext, SamplingOption, check_batch_fields, check_sampling_options,
                                          options_of_all_families, sampler_table)


@pytest.mark.parametrize("option, value, expected", [
    (SamplingOption("steps", int, low=1), "4", 4),
    (SamplingOption("scale", float, low=0.0, low_inclusive=False, high=1.0), 1.0, 1.0),
    (SamplingOption("name", str, choices=("ddim", "ddpm")), "ddpm", "ddpm"),
    (SamplingOption("flag", bool), "false", False),
    (SamplingOption("flag", bool), True, True),
])
def test_values_are_converted(option, value, expected):
    assert option.check(value) == expected and type(option.check(value)) is type(expected)


@pytest.mark.parametrize("option, value, message", [
    (SamplingOption("steps", int, low=1), 2.5, "--steps 2.5: must be an int"),
    (SamplingOption("steps", int, low=1), 0, r"--steps 0: must be a finite number in \[1, inf\)"),
    (SamplingOption("scale", float, low=0.0, low_inclusive=False, high=1.0), 0.0, r"in \(0, 1\]"),
    (SamplingOption("scale", float), float("nan"), "must be a finite number"),
    (SamplingOption("name", str, choices=("ddim", "ddpm")), "ddin", "--name 'ddin' is unknown; did you mean ddim"),
    (SamplingOption("flag", bool), "maybe", "--flag 'maybe': must be a bool"),
])
def test_bad_values_are_one_line_errors(option, value, message):
    with pytest.raises(GenResearchError, match=message):
        option.check(value)


class Conditional(ModelFamily, torch.nn.Module):
    SAMPLING_OPTIONS = (SamplingOption("truncation", float, low=0.0),)
    BATCH_FIELDS = ("image", "label")
    conditioning_classes = 3

    def sample(self, num_samples, labels=None, generator=None, truncation=1.0):
        return torch.zeros(num_samples, 1, 2, 2)


def test_options_and_the_class_are_checked_against_the_model():
    model = Conditional()
    assert check_sampling_options(model, {"truncation": "0.5", "other": None}) == {"truncation": 0.5}  # None: not given
    with pytest.raises(GenResearchError, match="--steps does not apply to Conditional; it takes: --truncation"):
        check_sampling_options(model, {"steps": 3})
    check_sampling_options(model, {}, SamplingContext(num_images=1, class_label=2))
    with pytest.raises(GenResearchError, match=r"--class 3 is not a class of this model \(0..2\)"):
        check_sampling_options(model, {}, SamplingContext(num_images=1, class_label=3))


def test_batch_fields_mismatch_is_one_line():
    check_batch_fields(Conditional(), ("image", "label", "caption"), "digits")
    with pytest.raises(GenResearchError, match="Conditional trains on batch fields image, label, but pairs provides source, target"):
        check_batch_fields(Conditional(), ("source", "target"), "pairs")


def test_registered_families_declare_their_options_and_samplers():
    from gen_research.registry import load_builtins

    load_builtins()
    options = {option.name: families for option, families in options_of_all_families()}
    assert options["temperature"] == ["vae", "vq_prior"] and options["top_k"] == ["vq_prior"]
    # ldm and text2image: the diffusion family's options; text2image has prompts and no classifier guidance
    assert options["sampler"] == ["ddpm", "ldm", "text2image"] and options["strength"] == ["ddpm", "ldm", "text2image"]
    assert options["classifier_ckpt"] == ["ddpm", "ldm"] and options["prompt"] == ["text2image"]
    assert {sampler for family, sampler, _ in sampler_table() if family == "ddpm"} == {"ddpm", "ddim", "dpm-solver++", "euler", "euler-ancestral", "heun", "pndm"}
