"""Re-introduce realistic wrong-result bugs one at a time in a scratch copy and show that the test suite catches each.

    .venv/bin/python benchmarks/mutation_check.py [--keep] [--only NAME ...]

The repository's files (``git ls-files``, plus untracked files git does not ignore) are copied to a scratch folder.
There each bug below is applied as a text patch (an exact, unique replacement in one file), the tests named for it
are run with this same Python (``PYTHONPATH`` puts the scratch copy first, so its ``gen_research`` is the one
imported, also by the CLI subprocesses the tests start), and the file is restored. The same tests first run on the
unpatched copy: a bug counts as caught only when tests that pass without it fail with it (pytest exit status 1).
Prints a table ``bug | test that caught it | caught``; exits 1 if a bug is not caught or the baseline fails.
Not a test itself (it takes a few minutes: each bug reruns its tests); results go to docs/reliability.md.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Bug:
    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


BUGS = [
    Bug(
        "validation without the EMA swap",
        "gen_research/training/callbacks/ema.py",
        "    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:\n",
        "    def on_validation_epoch_start(self, trainer, pl_module):\n        pass\n\n"
        "    def on_validation_epoch_end(self, trainer, pl_module):\n        pass\n\n"
        "    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:\n",
        ("tests/training/test_ema_validation.py",),
    ),
    Bug(
        "inpainting pastes the known pixels only at the end",
        "gen_research/sampling/diffusion.py",
        "        if known_mask is not None:\n            if i + 1 < len(timesteps):",
        "        if known_mask is not None and i + 1 == len(timesteps):\n            if i + 1 < len(timesteps):",
        ("tests/sampling/test_inpainting_trajectory.py",),
    ),
    Bug(
        "inpainting re-noises the known pixels to the wrong step",
        "gen_research/sampling/diffusion.py",
        "timesteps[i + 1 : i + 2].repeat(shape[0])",
        "timesteps[i : i + 1].repeat(shape[0])",
        ("tests/sampling/test_inpainting_trajectory.py",),
    ),
    Bug(
        "DDIM eta forced to 0",
        "gen_research/sampling/diffusion.py",
        '        extra["eta"] = eta\n',
        '        extra["eta"] = 0.0\n',
        ("tests/sampling/test_ddim_eta.py",),
    ),
    Bug(
        "DDP ranks draw the same samples in the evaluation callback",
        "gen_research/training/callbacks/evaluation.py",
        "for chunk in range(rank, num_chunks, world):",
        "for chunk in range(0, num_chunks, world):",
        ("tests/training/test_evaluation_ranks.py",
         "tests/integration/test_commands.py::test_ddp_on_two_cpu_processes_matches_one_process"),
    ),
    Bug(
        "export writes the training weights, not the EMA ones",
        "gen_research/commands/export.py",
        "    model, _, _ = load_model_and_data(args.config, args.ckpt_path)\n",
        "    model, _, _ = load_model_and_data(args.config, args.ckpt_path)\n    import torch\n"
        '    model.load_state_dict(torch.load(args.ckpt_path, map_location="cpu", weights_only=False)["current_model_state"])\n',
        ("tests/integration/test_export_ema.py",),
    ),
    Bug(
        "EMA decay ignored (always 0.999)",
        "gen_research/training/callbacks/ema.py",
        "avg_fn=partial(warmup_ema_update, decay=decay, warmup=warmup)",
        "avg_fn=partial(warmup_ema_update, decay=0.999, warmup=warmup)",
        ("tests/training/test_ema.py",),
    ),
    Bug(
        "classifier-free guidance sign flipped",
        "gen_research/sampling/diffusion.py",
        "    return uncond + scale * (cond - uncond)\n",
        "    return uncond + scale * (uncond - cond)\n",
        ("tests/sampling/test_diffusion.py::test_classifier_free_guidance_math",),
    ),
]


def copy_repository(dest: Path) -> None:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():  # listed but deleted in the working tree: skip
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


def run_tests(scratch: Path, tests: tuple[str, ...]) -> tuple[int, list[str], str]:
    env = {**os.environ, "PYTHONPATH": str(scratch), "WANDB_MODE": "disabled", "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("GEN_RESEARCH_RUN_DIR", None)
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rf", "-p", "no:cacheprovider", *tests],
                            cwd=scratch, env=env, capture_output=True, text=True)
    failed = re.findall(r"^FAILED (\S+)", result.stdout, flags=re.MULTILINE)
    return result.returncode, failed, result.stdout[-2000:] + result.stderr[-2000:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", action="store_true", help="keep the scratch copy (its path is printed)")
    parser.add_argument("--only", nargs="*", help="run only the bugs whose name contains one of these words")
    args = parser.parse_args()
    bugs = [b for b in BUGS if not args.only or any(word in b.name for word in args.only)]
    scratch = Path(tempfile.mkdtemp(prefix="mutation-check-"))
    try:
        copy_repository(scratch)
        imported = subprocess.run([sys.executable, "-c", "import gen_research; print(gen_research.__file__)"], cwd=scratch,
                                  env={**os.environ, "PYTHONPATH": str(scratch)}, capture_output=True, text=True).stdout.strip()
        if not imported.startswith(str(scratch)):
            print(f"the scratch copy is not the gen_research imported there ({imported}); cannot check", file=sys.stderr)
            return 1
        all_tests = tuple(dict.fromkeys(t for b in bugs for t in b.tests))
        code, failed, tail = run_tests(scratch, all_tests)
        if code != 0:
            print(f"baseline: the tests fail without any bug ({', '.join(failed) or f'exit {code}'}):\n{tail}", file=sys.stderr)
            return 1
        print(f"baseline: {len(all_tests)} test files/ids pass on the unpatched copy", flush=True)
        rows = []
        for bug in bugs:
            target = scratch / bug.path
            original = target.read_text()
            if original.count(bug.old) != 1:
                rows.append((bug.name, f"patch does not apply ({bug.path} changed)", "no"))
                continue
            target.write_text(original.replace(bug.old, bug.new))
            try:
                code, failed, tail = run_tests(scratch, bug.tests)
            finally:
                target.write_text(original)
            caught = code == 1 and bool(failed)
            names = [f.split("/")[-1] for f in failed]
            who = (", ".join(names[:2]) + (f" (+{len(names) - 2} more)" if len(names) > 2 else "")) if names else f"none (pytest exit {code})"
            rows.append((bug.name, who, "yes" if caught else "no"))
            print(f"  {bug.name}: {'caught' if caught else 'NOT caught'}", flush=True)
            if not caught:
                print(tail, file=sys.stderr)
        print("\n| bug | test that caught it | caught |\n|---|---|---|")
        for row in rows:
            print(f"| {' | '.join(row)} |")
        return 0 if all(row[2] == "yes" for row in rows) else 1
    finally:
        if args.keep:
            print(f"scratch copy kept: {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
