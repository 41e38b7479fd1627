"""Hyperparameter sweeps from W&B sweep files, run locally without a W&B server.

The same ``experiments/sweeps/*.yaml`` file works with ``wandb sweep FILE`` + ``wandb agent ID`` and with
``python -m gen_research sweep FILE``: the file's ``command`` starts ``gen_research fit`` with the sampled
parameters as ``--name=value`` arguments, exactly as the W&B agent passes them.

  spec.py         reads and checks a sweep file; W&B's parameter distributions
  search.py       grid / random (W&B's definitions) and bayes (Optuna TPE) proposals, split into shards
  command.py      the run's command line (the agent's ``${...}`` macros) and environment
  experiment.py   checks every parameter against the experiment's resolved config before anything runs
  runner.py       runs the fits one after another, reads the metric, keeps the leaderboard
"""
