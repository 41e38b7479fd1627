"""DDPM sampling modes: inpainting keeps known pixels, img2img strength, classifier guidance, init_from a pipeline."""

import pytest
import torch

from gen_research.errors import GenResearchError
from gen_research.models.diffusion import DDPM, NoisyClassifier
from gen_research.sampling.diffusion import SCHEDULERS, start_index

TINY = dict(image_shape=(1, 8, 8), block_out_channels=[8, 16], num_train_timesteps=100)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return DDPM(**TINY).eval()


@pytest.mark.parametrize("sampler", sorted(SCHEDULERS))
def test_inpainting_keeps_known_pixels(model, digits, sampler):
    images = digits[0][:4]
    known = torch.zeros(1, 1, 8, 8)
    known[..., :, :4] = 1  # left half known, right half generated
    out = model.sample(4, generator=_gen(), sampler=sampler, steps=4, init_images=images, known_mask=known)
    assert torch.isfinite(out).all()
    assert torch.equal(out[..., :4], images[..., :4])  # exactly the input
    assert not torch.allclose(out[..., 4:], images[..., 4:], atol=1e-3)  # the rest was generated
    again = model.sample(4, generator=_gen(), sampler=sampler, steps=4, init_images=images, known_mask=known)
    assert torch.equal(out, again)


def test_start_index_matches_diffusers_img2img():
    assert start_index(50, 1.0) == 0
    assert start_index(50, 0.3) == 35  # the last 15 of 50 steps run
    assert start_index(10, 0.5, order=2) == 10  # heun-like schedules index twice per step
    for bad in (0.0, 1.5):
        with pytest.raises(GenResearchError, match="strength must be in"):
            start_index(10, bad)
    with pytest.raises(GenResearchError, match="leaves no step"):
        start_index(4, 0.1)


@pytest.mark.parametrize("sampler", ["ddim", "dpm-solver++", "euler"])
def test_img2img_strength_controls_distance_to_input(model, digits, sampler):
    images = digits[0][:8]
    distance = {}
    for strength in (0.2, 1.0):
        out = model.sample(8, generator=_gen(), sampler=sampler, steps=10, init_images=images, strength=strength)
        distance[strength] = (out - images).pow(2).mean().item()
    assert distance[0.2] < 0.5 * distance[1.0]  # low strength stays near the input


def test_modes_need_input_images(model):
    with pytest.raises(GenResearchError, match="need input images"):
        model.sample(2, generator=_gen(), steps=2, strength=0.5)
    with pytest.raises(GenResearchError, match="need input images"):
        model.sample(2, generator=_gen(), steps=2, known_mask=torch.ones(1, 1, 8, 8))


def test_classifier_guidance_on_unconditional_model(model):
    classifier = NoisyClassifier(image_shape=(1, 8, 8), num_classes=10, channels=[8, 16], feature_dim=16,
                                 time_embed_dim=8, num_train_timesteps=100, noise_schedule="linear").eval()
    plain = model.sample(4, generator=_gen(), steps=3)
    unguided = model.sample(4, generator=_gen(), steps=3, classifier=classifier, classifier_scale=0.0)
    guided = model.sample(4, generator=_gen(), steps=3, classifier=classifier, classifier_scale=50.0)
    torch.testing.assert_close(unguided, plain)  # scale 0 is the unguided sampler exactly
    assert not torch.allclose(guided, plain)
    # the guided samples are more likely under the classifier for their (cycled) labels than unguided ones
    labels = torch.arange(4) % 10
    t0 = torch.zeros(4, dtype=torch.long)
    assert classifier.log_prob(guided, t0, labels).mean() > classifier.log_prob(plain, t0, labels).mean()
    with pytest.raises(GenResearchError, match="labels must be classes"):
        model.sample(2, generator=_gen(), steps=2, classifier=classifier, labels=torch.tensor([3, 10]))


def test_classifier_guidance_refuses_other_schedule(model):
    cosine = NoisyClassifier(image_shape=(1, 8, 8), num_classes=10, channels=[8, 16], num_train_timesteps=100,
                             noise_schedule="cosine")
    with pytest.raises(GenResearchError, match="another noise schedule"):
        model.sample(2, generator=_gen(), steps=2, classifier=cosine)


def test_unconditional_model_refuses_labels_and_guidance_scale(model):
    with pytest.raises(GenResearchError, match="without a classifier"):
        model.sample(2, generator=_gen(), steps=2, labels=torch.tensor([0, 1]))
    with pytest.raises(GenResearchError, match="needs a class-conditional model"):
        model.sample(2, generator=_gen(), steps=2, guidance_scale=3.0)


def test_init_from_exported_pipeline(model, tmp_path):
    from diffusers import DDIMPipeline

    from gen_research.sampling.diffusion import make_scheduler

    DDIMPipeline(unet=model.unet, scheduler=make_scheduler("ddim", model.noise_scheduler.config)).save_pretrained(tmp_path / "pipe")
    torch.manual_seed(123)  # a different random init, overwritten by the pipeline's weights
    started = DDPM(**TINY, init_from=str(tmp_path / "pipe"))
    for key, value in model.unet.state_dict().items():
        assert torch.equal(started.unet.state_dict()[key], value), key
    with pytest.raises(GenResearchError, match="UNet differs.*block_out_channels"):
        DDPM(**{**TINY, "block_out_channels": [8, 8]}, init_from=str(tmp_path / "pipe"))
    with pytest.raises(GenResearchError, match="noise schedule differs.*beta_schedule"):
        DDPM(**TINY, noise_schedule="cosine", init_from=str(tmp_path / "pipe"))
    with pytest.raises(GenResearchError, match="no unet/config.json"):
        DDPM(**TINY, init_from=str(tmp_path))
