"""Human rating of generated images (``python -m gen_research rate``): a seeded trial plan (trials.py), the answers
file and resume (store.py), Mean Opinion Scores and two-alternative forced-choice rates with confidence intervals
(stats.py), and the local web page that asks the questions (server.py, page.html).

Standard-library only (no torch): the command lists images with gen_research's folder rules, the rest is plain Python.
"""

from gen_research.rating.stats import mean_opinion_score, summarize, t_interval, wilson_interval
from gen_research.rating.store import AnswerStore
from gen_research.rating.trials import build_plan, load_plan, plan_difference, verify_plan_files

__all__ = ["AnswerStore", "build_plan", "load_plan", "mean_opinion_score", "plan_difference", "summarize", "t_interval",
           "verify_plan_files", "wilson_interval"]
