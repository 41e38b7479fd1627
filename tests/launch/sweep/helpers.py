from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[3]
TINY_VAE = REPO / "tests" / "configs" / "tiny_vae.yaml"


def fit_command(*extra: str, config: Path = TINY_VAE) -> list[str]:
    return ["${env}", "python", "-m", "gen_research", "fit", "--config", str(config), *extra, "${args}"]


def write_sweep(folder: Path, name: str = "tiny_sweep", **changes) -> Path:
    """A valid grid sweep over the tiny VAE's beta; ``changes`` replace top-level keys (None removes one)."""
    config = {
        "method": "grid",
        "metric": {"name": "val/elbo", "goal": "maximize"},
        "parameters": {"model.init_args.beta": {"values": [0.5, 2.0]}},
        "command": fit_command(),
    }
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
