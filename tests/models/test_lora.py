"""LoRA through peft on the tiny SD UNet: only adapters train, the start is the base model, the saved adapters load
into diffusers' pipeline with load_lora_weights and give our outputs, checkpoints round-trip, bad targets fail in one
line."""

import pytest
import torch
from sd_tiny import LATENT_SIZE, MAX_TOKENS, TEXT_WIDTH, make_tiny_sd_folder

from gen_research.errors import GenResearchError
from gen_research.models.text2image.lora import LORA_WEIGHTS_FILE, add_lora, has_lora, lora_state_dict, merged_copy, save_lora
from gen_research.models.text2image.sd_format import read_sd_folder, stable_diffusion_pipeline

RANK, ALPHA = 4, 8.0  # alpha != rank: the scale alpha / rank must survive saving and loading


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    return make_tiny_sd_folder(tmp_path_factory.mktemp("lora") / "tiny_sd")


@pytest.fixture(scope="module")
def unet_inputs():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, LATENT_SIZE, LATENT_SIZE, generator=generator)
    context = torch.randn(2, MAX_TOKENS, TEXT_WIDTH, generator=generator)
    return x, torch.tensor([10, 500]), context


def _out(unet, inputs):
    x, t, context = inputs
    with torch.no_grad():
        return unet(x, t, encoder_hidden_states=context).sample


def _adapted(folder, seed=0):
    """The folder's UNet with adapters whose B is non-zero (as after training)."""
    unet = read_sd_folder(folder).load_unet()
    torch.manual_seed(seed)
    add_lora(unet, rank=RANK, alpha=ALPHA)
    with torch.no_grad():
        for name, parameter in unet.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0.0, 0.2)
    return unet


def test_add_lora_trains_only_adapters_and_starts_at_the_base_model(sd_folder, unet_inputs):
    unet = read_sd_folder(sd_folder).load_unet()
    base = _out(unet, unet_inputs)
    trainable = add_lora(unet, rank=RANK, alpha=ALPHA)
    names = {id(p): name for name, p in unet.named_parameters()}
    # 4 transformer blocks (down 1, mid 1, up 2) x (self + cross attention) x 4 projections x (lora_A, lora_B)
    assert len(trainable) == 4 * 2 * 4 * 2
    assert all("lora_A" in names[id(p)] or "lora_B" in names[id(p)] for p in trainable)
    frozen = [name for name, p in unet.named_parameters() if not p.requires_grad]
    assert frozen and not any("lora_" in name for name in frozen)
    assert sum(p.numel() for p in trainable) < 0.1 * sum(p.numel() for p in unet.parameters())
    to_q = unet.down_blocks[0].attentions[0].transformer_blocks[0].attn2.to_q
    assert to_q.r["default"] == RANK and to_q.scaling["default"] == pytest.approx(ALPHA / RANK)
    assert torch.count_nonzero(to_q.lora_B["default"].weight) == 0 and to_q.lora_A["default"].weight.std() > 0
    assert torch.equal(_out(unet, unet_inputs), base)  # B = 0: the adapted UNet is the base one
    default_alpha = read_sd_folder(sd_folder).load_unet()
    add_lora(default_alpha, rank=2)
    assert default_alpha.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_k.scaling["default"] == 1.0


def test_saved_adapters_load_into_diffusers_pipeline(sd_folder, unet_inputs, tmp_path):
    from diffusers import StableDiffusionPipeline

    ours = _adapted(sd_folder)
    state = lora_state_dict(ours)
    assert state and all(".lora.down.weight" in key or ".lora.up.weight" in key for key in state)  # diffusers' naming
    path = save_lora(ours, tmp_path / "adapters")
    assert path == tmp_path / "adapters" / LORA_WEIGHTS_FILE and path.is_file()
    pipeline = StableDiffusionPipeline.from_pretrained(sd_folder, local_files_only=True, safety_checker=None)
    base = _out(pipeline.unet, unet_inputs)
    pipeline.load_lora_weights(tmp_path / "adapters")
    loaded, expected = _out(pipeline.unet, unet_inputs), _out(ours, unet_inputs)
    assert (loaded - expected).abs().max() < 1e-5
    assert (expected - base).abs().max() > 1e-2  # the adapters do change the output


def test_adapted_state_dict_round_trips_into_a_fresh_adapted_unet(sd_folder, unet_inputs):
    ours = _adapted(sd_folder)
    fresh = read_sd_folder(sd_folder).load_unet()
    torch.manual_seed(123)  # another random A: the checkpoint must overwrite it
    add_lora(fresh, rank=RANK, alpha=ALPHA)
    assert not torch.equal(_out(fresh, unet_inputs), _out(ours, unet_inputs))
    result = fresh.load_state_dict(ours.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(_out(fresh, unet_inputs), _out(ours, unet_inputs))


def test_merged_copy_is_a_plain_unet_with_the_adapters_folded_in(sd_folder, unet_inputs):
    ours = _adapted(sd_folder)
    merged = merged_copy(ours)
    assert not has_lora(merged) and has_lora(ours)
    assert not any("lora" in key or "base_layer" in key for key in merged.state_dict())
    assert (_out(merged, unet_inputs) - _out(ours, unet_inputs)).abs().max() < 1e-5
    with pytest.raises(ValueError, match="no LoRA adapters"):
        merged_copy(merged)


def test_export_of_an_adapted_unet_is_a_loadable_plain_pipeline(sd_folder, unet_inputs, tmp_path):
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    from transformers import CLIPTextModel, CLIPTokenizer

    ours = _adapted(sd_folder)
    sd = read_sd_folder(sd_folder)
    pipeline = stable_diffusion_pipeline(ours, sd.load_vae((3, 16, 16)).diffusers_autoencoder(),
                                         CLIPTextModel.from_pretrained(sd_folder / "text_encoder"),
                                         CLIPTokenizer.from_pretrained(sd_folder / "tokenizer"),
                                         DDIMScheduler.from_config(sd.scheduler_config), 0.18215)
    assert pipeline.unet is not ours and not has_lora(pipeline.unet) and has_lora(ours)
    pipeline.save_pretrained(tmp_path / "export")
    reloaded = StableDiffusionPipeline.from_pretrained(tmp_path / "export", local_files_only=True)
    assert (_out(reloaded.unet, unet_inputs) - _out(ours, unet_inputs)).abs().max() < 1e-5


def test_bad_lora_options_fail_in_one_line(sd_folder):
    unet = read_sd_folder(sd_folder).load_unet()
    with pytest.raises(GenResearchError, match=r"model\.init_args\.lora\.target_modules names 'to_qq'.*to_q, to_k, to_v, to_out\.0"):
        add_lora(unet, target_modules=["to_qq"])
    # peft alone accepts a list where only some names match; we do not
    with pytest.raises(GenResearchError, match=r"names 'nope'"):
        add_lora(unet, target_modules=["to_q", "nope"])
    with pytest.raises(GenResearchError, match=r"names 'attn1', which is no Linear/Conv layer"):
        add_lora(unet, target_modules=["attn1"])
    with pytest.raises(GenResearchError, match=r"model\.init_args\.lora\.rank=0 must be a positive integer"):
        add_lora(unet, rank=0)
    with pytest.raises(GenResearchError, match=r"model\.init_args\.lora\.alpha=-1"):
        add_lora(unet, alpha=-1.0)
    with pytest.raises(GenResearchError, match=r"model\.init_args\.lora\.dropout=1\.0"):
        add_lora(unet, dropout=1.0)
    assert not has_lora(unet) and all(p.requires_grad for p in unet.parameters())  # refused before any change
    add_lora(unet, target_modules=["proj_in", "ff.net.2"])  # other layer names work
    assert {name.split(".lora_")[0].rsplit(".", 1)[-1] for name, p in unet.named_parameters() if p.requires_grad} == {"proj_in", "2"}
