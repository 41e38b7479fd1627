"""Record what the evaluation callback generates and computes, per process, for the DDP test.

Run as a script it is ``python -m gen_research`` with the recording on (``RECORD_EVALUATION_DIR`` names the
folder): Lightning's DDP launcher re-runs this same script for rank 1, so both ranks record. Imported, it
gives :func:`recording` for an in-process run. Each call of ``EvaluationCallback.evaluate`` writes
``eval-rank<r>-<k>.pt`` holding the fake images it handed to the evaluator and the metrics it returned.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import torch

from gen_research.training.callbacks.evaluation import EvaluationCallback
from gen_research.evaluation.evaluator import Evaluator


@contextlib.contextmanager
def recording(out_dir: Path):
    out_dir.mkdir(parents=True, exist_ok=True)
    original_add, original_evaluate = Evaluator.add_images, EvaluationCallback.evaluate
    fakes: list[torch.Tensor] = []
    calls = [0]

    def add_images(self, images, role, *args, **kwargs):
        if role == "fake":
            fakes.append(images.detach().cpu().clone())
        return original_add(self, images, role, *args, **kwargs)

    def evaluate(self, trainer, pl_module):
        fakes.clear()
        results = original_evaluate(self, trainer, pl_module)
        images = torch.cat(fakes) if fakes else torch.empty(0)
        torch.save({"fakes": images, "results": results}, out_dir / f"eval-rank{trainer.global_rank}-{calls[0]}.pt")
        calls[0] += 1
        return results

    Evaluator.add_images, EvaluationCallback.evaluate = add_images, evaluate
    try:
        yield
    finally:
        Evaluator.add_images, EvaluationCallback.evaluate = original_add, original_evaluate


if __name__ == "__main__":
    from gen_research.commands.main import main

    with recording(Path(os.environ["RECORD_EVALUATION_DIR"])):
        code = main(sys.argv[1:])
    sys.exit(code)
