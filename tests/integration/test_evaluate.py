"""The evaluate command (folders and checkpoints) and the evaluation callback, end to end on 8x8 digits."""

import csv
import json

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from .helpers import TEST_CONFIGS, run_in_process

pytestmark = pytest.mark.integration
KEYS = {"fid/pixels", "kid/pixels", "kid_std/pixels", "precision/pixels", "recall/pixels", "density/pixels", "coverage/pixels"}


@pytest.fixture(scope="module")
def digit_folders(tmp_path_factory):
    """real/: 300 digits; other/: 300 different digits; noisy/: `other` with heavy noise."""
    root = tmp_path_factory.mktemp("digit_folders")
    images = (load_digits().images * (255 / 16)).astype(np.uint8)
    rng = np.random.default_rng(0)
    for name, block in (("real", images[:300]), ("other", images[300:600])):
        (root / name).mkdir()
        for i, image in enumerate(block):
            Image.fromarray(image, mode="L").save(root / name / f"{i:04d}.png")
    (root / "noisy").mkdir()
    for i, image in enumerate(images[300:600]):
        noisy = np.clip(image + rng.normal(0, 80, image.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy, mode="L").save(root / "noisy" / f"{i:04d}.png")
    return root


def evaluate(tmp_path, *args):
    out = tmp_path / f"result{len(list(tmp_path.glob('result*.json')))}.json"
    code = run_in_process("evaluate", *args, "--json", str(out), "--kid-subset-size", "100", "--kid-subsets", "20",
                          "--cache-dir", str(tmp_path / "cache"))
    assert code == 0
    results = json.loads(out.read_text())
    results.pop("provenance")  # what the numbers were measured with: tests/integration/test_evaluate_provenance.py
    return results


def test_folders_give_the_documented_keys_and_sane_numbers(digit_folders, workdir):
    same = evaluate(workdir, "--real", str(digit_folders / "real"), "--fake", str(digit_folders / "real"))
    other = evaluate(workdir, "--real", str(digit_folders / "real"), "--fake", str(digit_folders / "other"))
    noisy = evaluate(workdir, "--real", str(digit_folders / "real"), "--fake", str(digit_folders / "noisy"))
    assert set(same) == set(other) == KEYS
    assert abs(same["fid/pixels"]) < 1e-3 and same["precision/pixels"] == same["recall/pixels"] == 1.0
    assert same["fid/pixels"] < other["fid/pixels"] < noisy["fid/pixels"]
    assert other["precision/pixels"] > noisy["precision/pixels"]


def test_batch_size_does_not_change_the_numbers(digit_folders, workdir):
    args = ["--real", str(digit_folders / "real"), "--fake", str(digit_folders / "other"), "--no-cache"]
    small = evaluate(workdir, *args, "--batch-size", "7")
    large = evaluate(workdir, *args, "--batch-size", "64")
    assert small.keys() == large.keys()
    assert all(abs(small[k] - large[k]) <= 1e-6 * max(1.0, abs(large[k])) for k in small)


def test_reference_cache_is_reused_and_keyed_by_the_data(digit_folders, workdir, tmp_path):
    import shutil

    real = tmp_path / "real_copy"
    shutil.copytree(digit_folders / "real", real)
    args = ["--real", str(real), "--fake", str(digit_folders / "other"), "--metrics", "fid"]
    first = evaluate(workdir, *args)
    cached = sorted((workdir / "cache").rglob("*.pt"))
    assert len(cached) == 1
    assert evaluate(workdir, *args) == first  # same key: read back, same number
    Image.fromarray(np.zeros((8, 8), np.uint8), mode="L").save(real / "0000.png")  # the data changed
    changed = evaluate(workdir, *args)
    assert len(sorted((workdir / "cache").rglob("*.pt"))) == 2 and changed != first
    resized = evaluate(workdir, *args, "--resize", "4")  # another extractor setting: another key and name
    assert set(resized) == {"fid/pixels-4"}


def test_checkpoint_mode_samples_with_a_seed(workdir):
    config = str(TEST_CONFIGS / "tiny_vae.yaml")
    assert run_in_process("fit", "--config", config, "--trainer.enable_progress_bar=false", "--trainer.logger=false") == 0
    ckpt = str(next((workdir / "runs" / "tiny_vae").glob("*/checkpoints/last.ckpt")))
    args = ["--config", config, "--ckpt_path", ckpt, "--num-images", "150", "--metrics", "fid,kid,precision,recall,density,coverage"]
    first = evaluate(workdir, *args)
    assert set(first) == KEYS | {"sampling/temperature"} and all(np.isfinite(v) for v in first.values())
    assert first["sampling/temperature"] == 1.0  # the setting the samples were drawn with is recorded with the metrics
    assert evaluate(workdir, *args, "--temperature", "0.5")["sampling/temperature"] == 0.5
    assert evaluate(workdir, *args) == first  # same seed, same samples, same numbers
    assert evaluate(workdir, *args, "--seed", "1") != first


def test_bad_evaluate_input_is_one_line(digit_folders, workdir, capsys):
    real = str(digit_folders / "real")
    assert run_in_process("evaluate", "--real", real, "--fake", real, "--metrics", "fid,kidd") == 2
    assert "unknown metric 'kidd'; did you mean kid" in capsys.readouterr().err
    assert run_in_process("evaluate", "--real", real, "--fake", real, "--features", "inceptoin") == 2
    assert "unknown feature 'inceptoin'; did you mean inception" in capsys.readouterr().err
    assert run_in_process("evaluate", "--real", real, "--fake", str(workdir / "missing")) == 2
    assert "--fake folder not found" in capsys.readouterr().err
    existing = workdir / "exists.json"
    existing.write_text("{}")
    assert run_in_process("evaluate", "--real", real, "--fake", real, "--json", str(existing)) == 2
    assert "already exists" in capsys.readouterr().err and existing.read_text() == "{}"
    assert run_in_process("evaluate", "--real", real) == 2
    assert "needs either" in capsys.readouterr().err


def test_evaluation_callback_logs_and_drives_checkpointing(workdir):
    callback = ('--trainer.callbacks+={"class_path": "evaluation", "init_args": {"metrics": "fid,precision,recall", '
                '"num_samples": 120, "batch_size": 50, "cache_dir": "cache"}}')
    code = run_in_process("fit", "--config", str(TEST_CONFIGS / "tiny_vae.yaml"), "--trainer.enable_progress_bar=false",
                          "--trainer.logger=[{class_path: csv}]", callback, "--checkpoint.monitor=fid/pixels")
    assert code == 0
    run_dir = next((workdir / "runs" / "tiny_vae").iterdir())
    rows = [r for r in csv.DictReader((run_dir / "metrics.csv").open()) if r.get("fid/pixels")]
    assert len(rows) == 2 and all(float(r["fid/pixels"]) > 0 and 0 <= float(r["precision/pixels"]) <= 1 for r in rows)
    best = min(rows, key=lambda r: float(r["fid/pixels"]))
    assert len(list((run_dir / "checkpoints").glob(f"best-epoch{int(best['epoch']):03d}-*.ckpt"))) == 1


@pytest.fixture(scope="module")
def class_folders(tmp_path_factory):
    """real/<digit>/ and fake/<digit>/ (28x28 mnist5k test images; fake = other images of the same digit,
    except in `swapped/`, where digits 3 and 5 trade places: samples of the wrong class)."""
    from gen_research.data.embedded import MNIST5k

    root = tmp_path_factory.mktemp("class_folders")
    data = MNIST5k()
    data.setup()
    images = [data.test_set[i] for i in range(len(data.test_set))]
    for name in ("real", "fake", "swapped"):
        for digit in range(10):
            (root / name / str(digit)).mkdir(parents=True)
    seen = {}
    for image, label in images:
        label = int(label)
        index = seen.get(label, 0)
        seen[label] = index + 1
        array = ((image[0].numpy() + 1) * 127.5).round().astype(np.uint8)
        target = "real" if index % 2 == 0 else "fake"
        Image.fromarray(array, mode="L").save(root / target / str(label) / f"{index:04d}.png")
        if target == "fake":
            swapped = {3: 5, 5: 3}.get(label, label)
            Image.fromarray(array, mode="L").save(root / "swapped" / str(swapped) / f"{index:04d}.png")
    return root


def test_class_conditional_metrics_from_class_folders(class_folders, workdir):
    weights = str(TEST_CONFIGS.parent.parent / "assets" / "classifier-mnist5k.ckpt")
    args = ["--real", str(class_folders / "real"), "--features", "classifier", "--feature-weights", weights, "--metrics", "accuracy,intra_fid"]
    good = evaluate(workdir, *args, "--fake", str(class_folders / "fake"))
    swapped = evaluate(workdir, *args, "--fake", str(class_folders / "swapped"))
    assert set(good) == {"accuracy/classifier-mnist5k", "intra_fid/classifier-mnist5k"}
    assert good["accuracy/classifier-mnist5k"] > 0.95  # held-out real digits in their own class folders
    assert swapped["accuracy/classifier-mnist5k"] < good["accuracy/classifier-mnist5k"] - 0.1
    assert swapped["intra_fid/classifier-mnist5k"] > good["intra_fid/classifier-mnist5k"]
    per_class = evaluate(workdir, *args, "--fake", str(class_folders / "fake"), "--metrics", "per_class_fid")
    assert len([k for k in per_class if k.startswith("fid_class_")]) == 10


def test_class_metrics_need_labels(digit_folders, workdir, capsys):
    real = str(digit_folders / "real")
    weights = str(TEST_CONFIGS.parent.parent / "assets" / "classifier-mnist5k.ckpt")
    assert run_in_process("evaluate", "--real", real, "--fake", real, "--metrics", "intra_fid") == 2
    assert "one subfolder per class" in capsys.readouterr().err
    config = str(TEST_CONFIGS / "tiny_vae.yaml")
    assert run_in_process("fit", "--config", config, "--trainer.enable_progress_bar=false", "--trainer.logger=false", "--trainer.max_epochs=1") == 0
    ckpt = str(next((workdir / "runs" / "tiny_vae").glob("*/checkpoints/last.ckpt")))
    assert run_in_process("evaluate", "--config", config, "--ckpt_path", ckpt, "--metrics", "intra_fid") == 2
    assert capsys.readouterr().err.strip().endswith("class-conditional metrics (intra_fid) need a model that samples given classes; VAE does not")


def test_ppl_of_a_checkpoint_and_not_of_folders(digit_folders, workdir, capsys, monkeypatch, tmp_path):
    import torch
    import torchvision

    from gen_research.evaluation.specs import perceptual

    # LPIPS needs ImageNet AlexNet weights from a local file; a random AlexNet under the official name stands in.
    backbone = tmp_path / "alexnet-owt-7be5be79.pth"
    torch.save(torchvision.models.alexnet().state_dict(), backbone)
    monkeypatch.setenv("GEN_RESEARCH_LPIPS_BACKBONE", str(backbone))
    monkeypatch.setenv("GEN_RESEARCH_PPL_SAMPLES", "40")
    monkeypatch.setattr(perceptual, "VERIFY_BACKBONE_HASH", False)
    config = str(TEST_CONFIGS / "tiny_vae.yaml")
    assert run_in_process("fit", "--config", config, "--trainer.enable_progress_bar=false", "--trainer.logger=false", "--trainer.max_epochs=1") == 0
    ckpt = str(next((workdir / "runs" / "tiny_vae").glob("*/checkpoints/last.ckpt")))
    first = evaluate(workdir, "--config", config, "--ckpt_path", ckpt, "--metrics", "ppl,fid", "--num-images", "100")
    assert set(first) == {"ppl/lpips-alex", "ppl_std/lpips-alex", "fid/pixels", "sampling/temperature"} and first["ppl/lpips-alex"] > 0  # named after LPIPS
    assert evaluate(workdir, "--config", config, "--ckpt_path", ckpt, "--metrics", "ppl,fid", "--num-images", "100") == first
    real = str(digit_folders / "real")
    assert run_in_process("evaluate", "--real", real, "--fake", real, "--metrics", "ppl") == 2
    assert "ppl measures a generator" in capsys.readouterr().err


def test_cas_trains_on_fakes_and_tests_on_reals(class_folders, workdir):
    args = ["--real", str(class_folders / "real"), "--metrics", "cas"]
    good = evaluate(workdir, *args, "--fake", str(class_folders / "fake"))
    swapped = evaluate(workdir, *args, "--fake", str(class_folders / "swapped"))
    assert set(good) == {"cas/small-convnet"}  # named after its own classifier, not the evaluation extractor
    assert good["cas/small-convnet"] > 0.8 and swapped["cas/small-convnet"] < good["cas/small-convnet"] - 0.05


def test_clip_score_of_captioned_folders(digit_folders, workdir, tmp_path):
    from ..evaluation.specs.test_clip_score import save_tokenizer, tiny_clip

    folder = tmp_path / "tiny-clip"
    tiny_clip().save_pretrained(folder)
    save_tokenizer(folder)
    fake = digit_folders / "other"
    captions = tmp_path / "captions.json"
    captions.write_text(json.dumps({p.name: f"a photo of digit {i % 10}" for i, p in enumerate(sorted(fake.glob("*.png")))}))
    args = ["--real", str(digit_folders / "real"), "--fake", str(fake), "--metrics", "clip_score", "--clip-model", str(folder)]
    result = evaluate(workdir, *args, "--captions", str(captions))
    assert set(result) == {"clip_score/clip-tiny-clip"} and 0 <= result["clip_score/clip-tiny-clip"] <= 100
    assert evaluate(workdir, *args, "--captions", str(captions)) == result


def test_clip_score_needs_captions(digit_folders, workdir, capsys):
    real = str(digit_folders / "real")
    assert run_in_process("evaluate", "--real", real, "--fake", real, "--metrics", "clip_score", "--clip-model", "nowhere") == 2
    assert "--clip-model" in capsys.readouterr().err
    assert run_in_process("evaluate", "--real", real, "--fake", real, "--metrics", "clip_score") == 2
    assert "--clip-model" in capsys.readouterr().err
