"""The inception extractor: local-file loading only, hash check, one-line errors, input conversion, output shapes.

The official weights cannot be downloaded here; a randomly initialised state dict of the same architecture,
saved like the official file, exercises the loading path (verify_hash=False).
"""

import hashlib

import pytest
import torch

from gen_research.errors import GenResearchError
from gen_research.evaluation.extractors import InceptionFeatures
from gen_research.evaluation.extractors.inception import WEIGHTS_FILE, WEIGHTS_URL


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    """(path, network): a random-init torch-fidelity InceptionV3 state dict saved under the official file name."""
    import torch_fidelity.feature_extractor_inceptionv3 as tfi

    with pytest.MonkeyPatch.context() as patch:  # build the architecture without its (downloaded) weights
        patch.setattr(tfi, "load_state_dict_from_url", lambda *args, **kwargs: {})
        patch.setattr(tfi.FeatureExtractorInceptionV3, "load_state_dict", lambda self, *args, **kwargs: None)
        torch.manual_seed(0)
        net = tfi.FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"])
    for module in net.modules():  # non-trivial BN statistics, so that the outputs depend on the input
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.05, 0.2)
    path = tmp_path_factory.mktemp("torch_home") / WEIGHTS_FILE
    torch.save(net.state_dict(), path)
    return path, net.eval()


@pytest.fixture(scope="module")
def extractor(random_weights):
    return InceptionFeatures(weights=str(random_weights[0]), verify_hash=False)


def test_outputs_shapes_determinism_and_conversion(extractor, random_weights):
    _, net = random_weights
    torch.manual_seed(1)
    grey = torch.randint(0, 256, (2, 1, 32, 32)).float() / 127.5 - 1  # images that came from uint8 data
    out = extractor(grey)
    assert out["features"].shape == (2, 2048) and out["logits"].shape == (2, 1008)
    assert extractor.num_features == 2048 and extractor.num_logits == 1008 and extractor.name == "inception"
    assert torch.isfinite(out["features"]).all() and not torch.allclose(out["features"][0], out["features"][1])
    # [-1, 1] -> uint8 recovers the original values exactly; grey is repeated to RGB.
    as_uint8 = InceptionFeatures.to_uint8(grey)
    assert as_uint8.dtype == torch.uint8 and as_uint8.shape == (2, 3, 32, 32)
    assert torch.equal(as_uint8[:, 0].float(), ((grey[:, 0] + 1) * 127.5).round())
    # Same numbers as torch-fidelity's network called on the uint8 RGB batch, and as an RGB copy of the grey input.
    with torch.no_grad():
        direct_features, direct_logits = net(as_uint8)
    assert torch.allclose(out["features"], direct_features, atol=1e-5) and torch.allclose(out["logits"], direct_logits, atol=1e-4)
    again = extractor(grey.expand(-1, 3, -1, -1))
    assert torch.equal(again["features"], out["features"]) and torch.equal(again["logits"], out["logits"])
    # logits_unbiased = features @ fc.weight.T (no bias), what the Inception Score uses.
    assert torch.allclose(out["logits"], out["features"] @ net.fc.weight.T, atol=1e-4)


def test_cache_key_and_frozen(extractor, random_weights):
    key = extractor.cache_key()
    assert key["extractor"] == "inception"
    assert key["extractor_weights"] == "sha256:" + hashlib.sha256(random_weights[0].read_bytes()).hexdigest()
    assert not any(p.requires_grad for p in extractor.parameters())
    extractor.train()
    assert not extractor.net.training


def test_default_location_is_torch_home(random_weights, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(random_weights[0].parent.parent))
    (random_weights[0].parent.parent / "hub" / "checkpoints").mkdir(parents=True, exist_ok=True)
    target = random_weights[0].parent.parent / "hub" / "checkpoints" / WEIGHTS_FILE
    target.write_bytes(random_weights[0].read_bytes())
    assert InceptionFeatures(verify_hash=False).weights_path == target


def test_missing_file_is_one_line_naming_paths_and_url(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    with pytest.raises(GenResearchError) as error:
        InceptionFeatures()
    message = str(error.value)
    assert "\n" not in message
    assert str(tmp_path / "th" / "hub" / "checkpoints" / WEIGHTS_FILE) in message and WEIGHTS_URL in message
    with pytest.raises(GenResearchError, match="nothing is downloaded") as error:
        InceptionFeatures(weights=str(tmp_path / "elsewhere.pth"))
    assert str(tmp_path / "elsewhere.pth") in str(error.value)


def test_wrong_hash_and_bad_file_and_resize(random_weights, tmp_path):
    with pytest.raises(GenResearchError, match="not the official InceptionV3 weights.*6726825d"):
        InceptionFeatures(weights=str(random_weights[0]))  # verify_hash=True: the random file is refused
    bad = tmp_path / "bad.pth"
    torch.save({"fc.weight": torch.zeros(3)}, bad)
    with pytest.raises(GenResearchError, match="cannot load InceptionV3 weights"):
        InceptionFeatures(weights=str(bad), verify_hash=False)
    with pytest.raises(GenResearchError, match="299"):
        InceptionFeatures(weights=str(random_weights[0]), resize=64, verify_hash=False)
