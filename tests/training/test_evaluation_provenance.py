"""The evaluation callback logs what its numbers are measured with, once, as the loggers' hyperparameters."""

import yaml
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.loggers import CSVLogger

from gen_research.data.embedded import Digits
from gen_research.evaluation.provenance import differences
from gen_research.models.autoencoder import VAE
from gen_research.training.callbacks.evaluation import EvaluationCallback


def test_callback_logs_its_provenance(tmp_path):
    seed_everything(0)
    model = VAE(image_shape=(1, 8, 8), channels=[8, 16], latent_dim=4, warmup_steps=0)
    evaluation = EvaluationCallback(metrics="fid,kid", features="pixels", num_samples=64, num_reference=100, batch_size=32,
                                    use_cache=False, kid_subset_size=50, metric_options={"alpha_steps": 11})
    logger = CSVLogger(str(tmp_path), name="csv")
    trainer = Trainer(max_epochs=2, limit_train_batches=2, limit_val_batches=1, callbacks=[evaluation], logger=logger,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                      default_root_dir=tmp_path, accelerator="cpu", devices=1)
    trainer.fit(model, datamodule=Digits(batch_size=32))
    prov = evaluation.provenance
    assert len(evaluation.history) == 2 and prov["subject"]["first_evaluated_step"] == 2  # recorded at the first evaluation
    assert prov["extractor"]["name"] == "pixels" and prov["num_generated"] == 64 and prov["num_reference"] == 100
    assert prov["metric_options"]["kid_subset_size"] == 50 and prov["metric_options"]["alpha_steps"] == 11
    assert prov["reference"]["split"] == "val" and len(prov["reference"]["fingerprint"]) == 32
    assert prov["sampling"]["mode"] == "samples"
    # the model's own hyperparameters hold tuples (image_shape): a file this test wrote, read with the full loader
    hparams = yaml.load((tmp_path / "csv" / "version_0" / "hparams.yaml").read_text(), Loader=yaml.UnsafeLoader)
    assert differences(hparams["evaluation_provenance"], prov) == []


def test_unknown_metric_options_are_one_line_errors():
    import pytest

    from gen_research.errors import GenResearchError

    with pytest.raises(GenResearchError, match="metric_options \\['alpha_stepz'\\] unknown"):
        EvaluationCallback(metric_options={"alpha_stepz": 3})
    with pytest.raises(GenResearchError, match="as the callback's own argument"):
        EvaluationCallback(metric_options={"seed": 3})
