"""cafd and cfid against independent references: numpy/scipy weighted statistics, intra_fid, the CFID authors' formula
ported to numpy, and closed forms on hand-built Gaussians and classes; batch- and process-invariant."""

from __future__ import annotations

import math
import os
import tempfile

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from scipy import linalg
from torch import Tensor

import gen_research.evaluation.specs  # noqa: F401  (registration)
from gen_research.errors import GenResearchError
from gen_research.evaluation.base import EvalOptions, FeatureExtractor
from gen_research.evaluation.evaluator import Evaluator, reference_outputs
from gen_research.evaluation.extractors.pixels import PixelFeatures
from gen_research.evaluation.feeder import Feeder
from gen_research.registry import METRICS
from tests.evaluation.specs.helpers import FakeExtractor, _free_port


# ---- feeding outputs that carry more than features -----------------------------------------------------------
def feed(name: str, real: dict, fake: dict, options: EvalOptions | None = None, batch: int = 64, num_logits: int | None = None) -> dict:
    spec = METRICS.get(name)()
    metric = spec.build(FakeExtractor(real["features"].shape[1], num_logits=num_logits), options or EvalOptions())
    for is_real, outputs in ((True, real), (False, fake)):
        for start in range(0, len(outputs["features"]), batch):
            spec.update(metric, {k: v[start : start + batch] for k, v in outputs.items()}, real=is_real)
    return spec.compute(metric)


def _worker(rank: int, world: int, port: int, jobs: list, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        shard = lambda outputs: {k: v[rank::world] for k, v in outputs.items()}  # noqa: E731
        torch.save([feed(name, shard(real), shard(fake), **kw) for name, real, fake, kw in jobs], os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def feed_ddp(jobs: list, world: int = 2) -> list:
    with tempfile.TemporaryDirectory() as out_dir:
        mp.start_processes(_worker, args=(world, _free_port(), jobs, out_dir), nprocs=world, join=True, start_method="fork")
        return [torch.load(os.path.join(out_dir, f"rank{r}.pt")) for r in range(world)]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def classes_data(n: int, seed: int, k: int = 3, d: int = 4, shift: float = 0.0):
    """Features of k classes (class c centred at 2c on every axis, noise 1), labels in turn."""
    labels = torch.arange(n) % k
    features = 2.0 * labels[:, None].double() + torch.randn(n, d, generator=gen(seed), dtype=torch.float64) + shift
    return features, labels


def hard_logits(labels: Tensor, k: int) -> Tensor:
    return 60.0 * torch.nn.functional.one_hot(labels, k).double()  # softmax: 1 and e^-60 (~1e-26)


def frechet(m1, c1, m2, c2) -> float:
    return float(((m1 - m2) ** 2).sum() + np.trace(c1) + np.trace(c2) - 2 * np.trace(linalg.sqrtm(c1 @ c2).real))


# ---- cafd ------------------------------------------------------------------------------------------------
def test_cafd_matches_numpy_weighted_gaussians_per_class_and_kl():
    k = 3
    real, real_labels = classes_data(300, 0, k)
    fake, fake_labels = classes_data(240, 1, k, shift=0.3)
    real_logits = 2.0 * hard_logits(real_labels, k) / 60 + torch.randn(300, k, generator=gen(2), dtype=torch.float64)
    fake_logits = 2.0 * hard_logits(fake_labels, k) / 60 + torch.randn(240, k, generator=gen(3), dtype=torch.float64)
    got = feed("cafd", {"features": real, "logits": real_logits}, {"features": fake, "logits": fake_logits}, num_logits=k)
    xr, xf = real.numpy(), fake.numpy()
    pr, pf = torch.softmax(real_logits, 1).numpy(), torch.softmax(fake_logits, 1).numpy()
    expected = np.mean([frechet(np.average(xr, 0, pr[:, c]), np.cov(xr, rowvar=False, aweights=pr[:, c]),
                                np.average(xf, 0, pf[:, c]), np.cov(xf, rowvar=False, aweights=pf[:, c])) for c in range(k)])
    p_real, p_fake = pr.mean(0), pf.mean(0)
    assert got["cafd"] == pytest.approx(expected, rel=1e-7)
    assert got["cafd_kl"] == pytest.approx(float((p_real * np.log(p_real / p_fake)).sum()), rel=1e-9)


def test_cafd_is_zero_on_identical_sets_and_a_one_class_shift_adds_its_squared_norm_over_k():
    k = 4
    real, labels = classes_data(400, 0, k)
    logits = hard_logits(labels, k)
    same = feed("cafd", {"features": real, "logits": logits}, {"features": real.clone(), "logits": logits}, num_logits=k)
    assert same["cafd"] == pytest.approx(0.0, abs=1e-8) and same["cafd_kl"] == pytest.approx(0.0, abs=1e-12)
    delta = torch.tensor([1.5, -0.5, 2.0, 0.0], dtype=torch.float64)
    shifted = real.clone()
    shifted[labels == 2] += delta  # class 2 only; the posteriors stay as they were
    got = feed("cafd", {"features": real, "logits": logits}, {"features": shifted, "logits": logits}, num_logits=k)
    expected = float(delta.square().sum()) / k
    assert got["cafd"] == pytest.approx(expected, rel=1e-9)  # the class's mean term only: covariances are unchanged
    fid = feed("fid", {"features": real}, {"features": shifted})["fid"]
    assert abs(fid - expected) > 0.3 * expected  # a single Gaussian sees a smaller mean move and a changed covariance


@pytest.mark.parametrize("counts", [(100, 100, 100), (60, 150, 90)])
def test_cafd_with_one_hot_posteriors_at_the_true_labels_equals_intra_fid(counts):
    k = 3
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    real = 2.0 * labels[:, None].double() + torch.randn(len(labels), 5, generator=gen(4), dtype=torch.float64)
    fake = 2.1 * labels[:, None].double() + 1.3 * torch.randn(len(labels), 5, generator=gen(5), dtype=torch.float64)
    cafd = feed("cafd", {"features": real, "logits": hard_logits(labels, k)}, {"features": fake, "logits": hard_logits(labels, k)}, num_logits=k)
    intra = feed("intra_fid", {"features": real, "labels": labels}, {"features": fake, "labels": labels}, EvalOptions(num_classes=k))
    assert cafd["cafd"] == pytest.approx(intra["intra_fid"], rel=1e-9)


def test_cafd_kl_counts_dropped_modes_and_needs_logits():
    real_labels = torch.arange(200) % 2
    fake_labels = (torch.arange(200) >= 180).long()  # 90% class 0, 10% class 1
    real, _ = classes_data(200, 0, 2)
    got = feed("cafd", {"features": real, "logits": hard_logits(real_labels, 2)}, {"features": real, "logits": hard_logits(fake_labels, 2)}, num_logits=2)
    assert got["cafd_kl"] == pytest.approx(0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1), rel=1e-9)
    with pytest.raises(GenResearchError, match="needs an extractor with class logits"):
        METRICS.get("cafd")().build(FakeExtractor(4), EvalOptions())
    with pytest.raises(GenResearchError, match="GiB"):  # 1000 classes of 4096 x 4096 covariances: refused, not allocated
        METRICS.get("cafd")().build(FakeExtractor(4096, num_logits=1000), EvalOptions())


class _LinearClassifier(FeatureExtractor):
    name, num_features, num_logits = "toy-classifier", 4, 3

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        features = images.flatten(1)
        return {"features": features, "logits": features[:, :3] * 5}


def test_evaluator_reports_cafd_and_cafd_kl_only_when_asked():
    images = torch.randn(60, 1, 2, 2, generator=gen(6)).clamp(-1, 1)
    keys = {}
    for names in ("cafd", "cafd_kl", "cafd,cafd_kl"):
        evaluator = Evaluator(_LinearClassifier(), names)
        evaluator.add_images(images, "real")
        evaluator.add_images(images.flip(0) * 0.9, "fake")
        keys[names] = evaluator.compute()
    assert set(keys["cafd"]) == {"cafd/toy-classifier"} and set(keys["cafd_kl"]) == {"cafd_kl/toy-classifier"}
    assert keys["cafd,cafd_kl"] == {**keys["cafd"], **keys["cafd_kl"]}


# ---- cfid ------------------------------------------------------------------------------------------------
MIXING = torch.tensor([[1.0, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 2.0]], dtype=torch.float64)


def paired(n: int, seed: int, noise: float = 0.3) -> tuple[Tensor, Tensor]:
    """(condition y ~ N(0, I), features x = y B + noise e)."""
    y = torch.randn(n, 3, generator=gen(seed), dtype=torch.float64)
    return y, y @ MIXING + noise * torch.randn(n, 3, generator=gen(seed + 100), dtype=torch.float64)


def authors_cfid(y_true: np.ndarray, y_predict: np.ndarray, x_true: np.ndarray) -> float:
    """github.com/Michael-Soloveitchik/CFID Metrics/metrics.py, ported to numpy, with an unbiased covariance estimator
    (their ``estimator`` argument); their y is the image, x the shared condition."""
    cov = lambda a, b: (a - a.mean(0)).T @ (b - b.mean(0)) / (len(a) - 1)  # noqa: E731
    inv_xx = np.linalg.pinv(cov(x_true, x_true))
    c_true = cov(y_true, y_true) - cov(y_true, x_true) @ inv_xx @ cov(x_true, y_true)
    c_pred = cov(y_predict, y_predict) - cov(y_predict, x_true) @ inv_xx @ cov(x_true, y_predict)
    gap = cov(y_true, x_true) - cov(y_predict, x_true)
    root = linalg.sqrtm(c_pred).real
    return float(((y_true.mean(0) - y_predict.mean(0)) ** 2).sum() + np.trace(gap @ inv_xx @ gap.T)
                 + np.trace(c_true + c_pred) - 2 * np.trace(linalg.sqrtm(root @ c_true @ root).real))


def test_cfid_is_zero_for_identical_joints_and_equals_the_authors_formula_given_shared_conditions():
    y, x = paired(500, 0)
    assert feed("cfid", {"features": x, "condition_features": y}, {"features": x.clone(), "condition_features": y})["cfid"] == pytest.approx(0, abs=1e-9)
    x_hat = y @ MIXING.T + 0.5 * torch.randn(500, 3, generator=gen(7), dtype=torch.float64) + 0.2  # wrong relation, noise, offset
    got = feed("cfid", {"features": x, "condition_features": y}, {"features": x_hat, "condition_features": y}, batch=33)["cfid"]
    assert got == pytest.approx(authors_cfid(x.numpy(), x_hat.numpy(), y.numpy()), rel=1e-8)


def test_fakes_that_ignore_the_condition_have_fid_zero_and_the_closed_form_cfid():
    n = 6000
    y, x = paired(n, 1)
    ignoring = x[torch.randperm(n, generator=gen(8))]  # x's exact marginal, independent of y
    cfid = feed("cfid", {"features": x, "condition_features": y}, {"features": ignoring, "condition_features": y}, batch=1000)["cfid"]
    fid = feed("fid", {"features": x}, {"features": ignoring}, batch=1000)["fid"]
    # Population: real x | y ~ N(y B, 0.09 I); fake x | y ~ N(0, S_xx), S_xx = B^T B + 0.09 I. E_y||y B||^2 = Tr(B^T B);
    # W2^2 of the covariances: Tr(0.09 I + S_xx) - 2 Tr((0.3 S_xx^1/2 0.3)^... ) = Tr(0.09 I + S_xx - 0.6 S_xx^1/2).
    bb = (MIXING.T @ MIXING).numpy()
    s_xx = bb + 0.09 * np.eye(3)
    closed = np.trace(bb) + np.trace(0.09 * np.eye(3) + s_xx) - 0.6 * np.trace(linalg.sqrtm(s_xx).real)
    assert fid == pytest.approx(0.0, abs=1e-9)
    assert cfid == pytest.approx(closed, rel=0.05)
    assert cfid > 5.0


def class_cfid_closed_form(x: np.ndarray, labels: np.ndarray, x_hat: np.ndarray, labels_hat: np.ndarray) -> float:
    """Given one-hot classes: the Gaussian regressions are the class means and the conditional covariance is the pooled
    within-class covariance, so cfid = ||a||^2 + n/(n-1) (sum_k p_k ||D_k||^2 - ||a||^2) + W2^2(S_w, S_w^),
    D_k = mean_k - mean^_k, a = sum_k p_k D_k, p_k the reals' class frequencies."""
    classes = np.unique(labels)
    n = len(x)
    gaps = {k: x[labels == k].mean(0) - x_hat[labels_hat == k].mean(0) for k in classes}
    p = {k: (labels == k).mean() for k in classes}
    a = sum(p[k] * gaps[k] for k in classes)
    spread = sum(p[k] * (gaps[k] ** 2).sum() for k in classes)

    def within(features, which):
        centred = np.concatenate([features[which == k] - features[which == k].mean(0) for k in classes])
        return centred.T @ centred / (len(features) - 1)

    zero = np.zeros(x.shape[1])
    return float((a ** 2).sum() + n / (n - 1) * (spread - (a ** 2).sum()) + frechet(zero, within(x, labels), zero, within(x_hat, labels_hat)))


@pytest.mark.parametrize(("k", "d"), [(3, 5), (6, 4)])  # condition dims padded to the features' (3 < 5), or not (6 > 4)
def test_cfid_given_classes_is_the_class_means_and_pooled_covariance_closed_form(k, d):
    real, labels = classes_data(300, 0, k, d)
    fake_labels = torch.cat([torch.arange(k), torch.randint(0, k, (250 - k,), generator=gen(9))])  # other class frequencies
    fake = 1.7 * fake_labels[:, None].double() + 1.4 * torch.randn(250, d, generator=gen(10), dtype=torch.float64)
    got = feed("cfid", {"features": real, "labels": labels}, {"features": fake, "labels": fake_labels}, EvalOptions(num_classes=k))["cfid"]
    assert got == pytest.approx(class_cfid_closed_form(real.numpy(), labels.numpy(), fake.numpy(), fake_labels.numpy()), rel=1e-7)


def test_cfid_one_line_errors():
    y, x = paired(50, 2)
    with pytest.raises(GenResearchError, match="condition of every image.*--ckpt_path"):
        feed("cfid", {"features": x}, {"features": x})
    with pytest.raises(GenResearchError, match="need the same kind of condition"):
        feed("cfid", {"features": x, "condition_features": y}, {"features": x, "labels": torch.arange(50) % 2})
    with pytest.raises(GenResearchError, match=r"labels must lie in 0\.\.2"):
        feed("cfid", {"features": x, "labels": torch.arange(50) % 4}, {"features": x, "labels": torch.arange(50) % 2})


def test_cafd_and_cfid_do_not_depend_on_batch_size_nor_on_the_number_of_processes():
    real, labels = classes_data(301, 0)
    fake, fake_labels = classes_data(203, 1, shift=0.4)
    logits = lambda f: f[:, :3] * 1.5  # noqa: E731  soft posteriors that depend on the features
    y, x = paired(301, 3)
    jobs = [
        ("cafd", {"features": real, "logits": logits(real)}, {"features": fake, "logits": logits(fake)}, {"num_logits": 3}),
        ("cfid", {"features": real, "labels": labels}, {"features": fake, "labels": fake_labels}, {"options": EvalOptions(num_classes=3)}),
        ("cfid", {"features": x, "condition_features": y}, {"features": x[:203] * 1.1, "condition_features": y[:203]}, {}),
    ]
    single = [feed(name, r, f, **kw) for name, r, f, kw in jobs]
    small_batches = [feed(name, r, f, batch=7, **kw) for name, r, f, kw in jobs]
    ranks = feed_ddp(jobs)
    for one, small, two, other in zip(single, small_batches, ranks[0], ranks[1]):
        for key in one:
            assert small[key] == pytest.approx(one[key], rel=1e-9) and two[key] == pytest.approx(one[key], rel=1e-9), key
        assert two == other


# ---- class-conditional generator through the Feeder: the labels path, as intra_fid ----------------------------
class ClassPatterns(torch.nn.Module):
    """sample(n, labels): class c's image is c/3 - 0.5 on every pixel plus seeded noise; ``swap`` draws class c+1's."""

    def __init__(self, swap: bool = False) -> None:
        super().__init__()
        self.conditioning_classes, self.swap = 3, swap
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    def sample(self, num_samples, labels=None, generator=None, **options):
        drawn = (labels + int(self.swap)) % 3
        return drawn.float().view(-1, 1, 1, 1) / 3 - 0.5 + 0.1 * torch.randn(num_samples, 1, 2, 2, generator=generator)


def test_cfid_of_a_class_conditional_generator_follows_the_labels_path():
    reals = [(k % 3 / 3 - 0.5 + 0.1 * torch.randn(1, 2, 2, generator=gen(100 + k)), torch.tensor(k % 3)) for k in range(90)]
    scores = {}
    for swap in (False, True):
        evaluator = Evaluator(PixelFeatures(image_shape=(1, 2, 2)), "cfid,fid", EvalOptions(num_classes=3))
        feeder = Feeder(ClassPatterns(swap), reals, 90, 90, batch_size=16, with_labels=True, with_conditions=True)
        feeder.check(evaluator)
        evaluator.add_outputs(reference_outputs(evaluator, feeder.reference_batches, {}, None), "real")
        feeder.feed(evaluator)
        scores[swap] = evaluator.compute()
        fakes = list(feeder.fakes())
        x_hat = PixelFeatures()(torch.cat([f[0] for f in fakes]))["features"].double().numpy()
        x = PixelFeatures()(torch.stack([r[0] for r in reals]))["features"].double().numpy()
        labels = np.array([int(r[1]) for r in reals])
        expected = class_cfid_closed_form(x, labels, x_hat, torch.cat([f[1] for f in fakes]).numpy())
        assert scores[swap]["cfid/pixels"] == pytest.approx(expected, rel=1e-5)
    assert scores[True]["cfid/pixels"] > 0.1 > 0.01 > scores[False]["cfid/pixels"]
    assert scores[True]["fid/pixels"] < 0.01  # classes in turn: the swapped set has the same marginal
