"""The classifier family: shapes, the features/logits split, training on 8x8 digits, logged metrics, RNG hygiene."""

import pytest
import torch
import torch.nn.functional as F
from ae_helpers import loader, quiet_trainer
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, TensorDataset

from gen_research.data import collate_fields
from gen_research.errors import GenResearchError
from gen_research.models.classifier import Classifier
from gen_research.models.classifier.model import random_shift
from gen_research.registry import MODELS

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*does not have many workers"),
    pytest.mark.filterwarnings("ignore:.*LeafSpec.*"),
]

SMALL = dict(image_shape=(1, 8, 8), num_classes=10, channels=[16, 32], feature_dim=24)


@pytest.fixture(scope="module")
def all_digits():
    """All 1,797 sklearn digits in [-1, 1]: 1,500 for training, 297 held out."""
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32)[:, None] / 16.0 * 2 - 1
    y = torch.tensor(data.target, dtype=torch.int64)
    return (x[:1500], y[:1500]), (x[1500:], y[1500:])


@pytest.fixture(scope="module")
def trained(all_digits):
    """A classifier fitted for 4 epochs through Lightning, with its trainer (for the logged metrics)."""
    (xt, yt), (xv, yv) = all_digits
    torch.manual_seed(0)
    model = Classifier(**SMALL, lr=3e-3, feature_name="digits-clf")
    before = F.cross_entropy(model.eval()(xv), yv).item()
    model.train()
    trainer = quiet_trainer(max_epochs=4, num_sanity_val_steps=0)
    trainer.fit(model, loader(xt, yt, batch_size=50, shuffle=True), loader(xv, yv, batch_size=100))
    return model.eval(), trainer, before


def test_registered_and_shapes():
    assert MODELS.get("classifier") is Classifier
    model = Classifier(**SMALL).eval()
    x = torch.rand(5, 1, 8, 8) * 2 - 1
    features, logits = model.features(x), model(x)
    assert features.shape == (5, 24) and logits.shape == (5, 10)
    assert torch.equal(model.classify(features), logits)
    # Penultimate = after the SiLU: SiLU(z) >= min SiLU = -0.2785.
    assert features.min() >= -0.2785
    assert model.hparams.feature_name == "classifier" and model.hparams.channels == [16, 32]


def test_needs_labels_and_valid_args():
    with pytest.raises(GenResearchError, match="labels"):
        Classifier(image_shape=(1, 8, 8), num_classes=None)
    with pytest.raises(GenResearchError, match="dropout"):
        Classifier(**{**SMALL, "dropout": 1.0})
    with pytest.raises(GenResearchError, match="feature_name"):
        Classifier(**SMALL, feature_name="a/b")
    with pytest.raises(GenResearchError, match="divisible"):
        Classifier(**{**SMALL, "channels": [8, 8, 8, 8]})


def test_training_reaches_high_accuracy_and_logs_metrics(trained, all_digits):
    model, trainer, before = trained
    _, (xv, yv) = all_digits
    metrics = trainer.callback_metrics
    for name in ("train/loss", "train/acc", "val/loss", "val/acc"):
        assert name in metrics, name
    with torch.no_grad():
        logits = model(xv)
    after = F.cross_entropy(logits, yv).item()
    accuracy = (logits.argmax(1) == yv).float().mean().item()
    assert before > 2.0 and after < 0.5 * before, (before, after)  # chance-level loss is ln 10 = 2.30
    assert accuracy > 0.88, accuracy  # chance: 0.10 (this run: 0.93)
    # val/acc is the plain (micro) accuracy over the whole validation set, val/loss its mean cross-entropy.
    assert metrics["val/acc"].item() == pytest.approx(accuracy, abs=1e-6)
    assert metrics["val/loss"].item() == pytest.approx(after, rel=1e-4)


def test_test_metrics_and_validation_leaves_global_rng_alone(trained, all_digits):
    model, _, _ = trained
    _, (xv, yv) = all_digits
    trainer = quiet_trainer()
    # A DataLoader draws its base seed from the global RNG unless given a generator; the model must draw nothing.
    val_loader = DataLoader(TensorDataset(xv, yv), batch_size=64, generator=torch.Generator().manual_seed(0), collate_fn=collate_fields)
    state = torch.get_rng_state()
    first = trainer.validate(model, val_loader, verbose=False)[0]
    assert torch.equal(torch.get_rng_state(), state)
    second = trainer.validate(model, val_loader, verbose=False)[0]
    assert first == second
    result = trainer.test(model, loader(xv, yv, batch_size=64), verbose=False)[0]
    assert set(result) == {"test/loss", "test/acc"}
    assert result["test/acc"] == pytest.approx(first["val/acc"]) and result["test/loss"] == pytest.approx(first["val/loss"])


def test_predict_step_outputs(trained, all_digits):
    model, _, _ = trained
    _, (xv, yv) = all_digits
    out = model.predict_step({"image": xv[:7], "label": yv[:7]}, 0)
    assert out["features"].shape == (7, 24) and out["logits"].shape == (7, 10)
    assert torch.equal(out["predictions"], out["logits"].argmax(1)) and torch.equal(out["labels"], yv[:7])


def test_random_shift_translates_with_replicated_edges():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).view(2, 3, 6, 6)
    assert torch.equal(random_shift(x, 0), x)
    g = torch.Generator().manual_seed(1)
    shifted = random_shift(x, 2, g)
    assert torch.equal(shifted, random_shift(x, 2, torch.Generator().manual_seed(1)))  # reproducible from a seed
    for i in range(2):
        # Recover each image's shift and check it against a padded reference.
        padded = F.pad(x[i : i + 1], (2, 2, 2, 2), mode="replicate")[0]
        matches = [(dy, dx) for dy in range(5) for dx in range(5) if torch.equal(padded[:, dy : dy + 6, dx : dx + 6], shifted[i])]
        assert len(matches) == 1


def test_checkpoint_round_trip(trained, tmp_path, all_digits):
    model, trainer, _ = trained
    path = tmp_path / "c.ckpt"
    trainer.save_checkpoint(path)
    loaded = Classifier.load_from_checkpoint(path).eval()
    x = all_digits[1][0][:10]
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x))
    assert loaded.hparams.feature_name == "digits-clf"


def test_a_domain_classifier_learns_the_domain_field_and_checks_its_data():
    from types import SimpleNamespace

    model = Classifier(image_shape=(3, 8, 8), num_classes=10, channels=[4], feature_dim=8, label_field="domain", num_domains=3)
    assert model.BATCH_FIELDS == ("image", "domain") and model.num_classes == 3 and model.hparams.label_field == "domain"
    batch = {"image": torch.zeros(4, 3, 8, 8), "domain": torch.tensor([0, 1, 2, 0]), "label": torch.tensor([9, 9, 9, 9])}
    assert model.predict_step(batch, 0)["labels"].tolist() == [0, 1, 2, 0]  # the domain, not the digit class
    model.check_data(SimpleNamespace(num_domains=3, multi_label=False), "digit_domains")
    with pytest.raises(GenResearchError, match="set it to 4"):
        model.check_data(SimpleNamespace(num_domains=4, multi_label=False), "digit_domains")
    with pytest.raises(GenResearchError, match="needs model.init_args.num_domains"):
        Classifier(image_shape=(3, 8, 8), num_classes=10, label_field="domain")
