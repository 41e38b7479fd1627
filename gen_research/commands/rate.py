"""``python -m gen_research rate``: people rate images on a local web page; Mean Opinion Scores and 2AFC rates.

    rate --real DIR --fake DIR [--fake DIR2 ...] --out DIR [--mode mos|2afc] [--pairs real|models]
         [--num-trials N] [--seed S] [--port P] [--no-browser]
    rate --out DIR                 resume the session saved in DIR (answered trials are skipped)
    rate --out DIR --summary       print and write the results of a session without serving

--mode mos: one image at a time (real and every fake set, mixed), rated 1 (bad) .. 5 (excellent): the MOS of each
set with a 95% t interval. --mode 2afc: two images side by side; --pairs real (default) asks "which is real?" of a
real and a generated image (the fool rate of each fake set, 95% Wilson interval; 50% = indistinguishable);
--pairs models asks "which looks better?" of two fake sets' images (the preference rate of A over B).

The page is served on 127.0.0.1 only (from another machine: ssh -L PORT:127.0.0.1:PORT HOST). --out holds plan.json
(the seeded trials, written once), answers.jsonl (each answer appended and fsynced as it is given: closing the
browser loses nothing) and results.json (rewritten after every answer and at exit). Ctrl-C stops the server.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from gen_research.errors import GenResearchError, OneLineArgumentParser
from gen_research.files.atomic import atomic_write_text

PLAN_FILE, RESULTS_FILE = "plan.json", "results.json"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(prog="python -m gen_research rate", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", help="folder of real images")
    parser.add_argument("--fake", action="append", help="folder of generated images (repeat for several models)")
    parser.add_argument("--out", required=True, help="session folder: plan.json, answers.jsonl, results.json")
    parser.add_argument("--mode", choices=("mos", "2afc"), help="mos (default): rate single images 1..5; "
                        "2afc: choose one of two images")
    parser.add_argument("--pairs", choices=("real", "models"), help="2afc: real vs generated (default), or model vs model")
    parser.add_argument("--num-trials", type=int, help="trials in all, split evenly over the sets or pairs "
                        "(default 20 each, fewer if a folder holds fewer images)")
    parser.add_argument("--seed", type=int, help="seeds the choice of images and their order (default 0)")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default 0: a free one)")
    parser.add_argument("--host", default="127.0.0.1", help="127.0.0.1 only: the page is for this machine")
    parser.add_argument("--no-browser", action="store_true", help="do not open a browser; only print the URL")
    parser.add_argument("--summary", action="store_true", help="print and write the results of --out without serving")
    return parser


def _plan_options(args: argparse.Namespace) -> dict[str, Any]:
    """The plan options given on the command line (None: not given)."""
    return {"mode": args.mode, "pairs": args.pairs, "num_trials": args.num_trials, "seed": args.seed}


def check_arguments(args: argparse.Namespace) -> None:
    if args.host != "127.0.0.1":
        raise GenResearchError(f"--host {args.host}: the rating page is served on 127.0.0.1 only; leave --host out "
                               "(from another machine, forward the port: ssh -L PORT:127.0.0.1:PORT HOST)")
    if not 0 <= args.port <= 65535:
        raise GenResearchError(f"--port {args.port}: choose 1..65535, or 0 for a free port")
    if args.num_trials is not None and args.num_trials < 1:
        raise GenResearchError(f"--num-trials {args.num_trials}: must be at least 1")
    if bool(args.real) != bool(args.fake):
        raise GenResearchError("rate needs both --real DIR and --fake DIR (or only --out DIR to resume a session)")
    if args.summary and (args.real or any(value is not None for value in _plan_options(args).values())):
        raise GenResearchError("--summary reads the session in --out: leave out --real, --fake and the plan options")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise GenResearchError(f"--out {out} is a file; pass a folder (new, or a rate session's)")


def new_plan(args: argparse.Namespace) -> dict[str, Any]:
    from gen_research.files.image_files import folder_images
    from gen_research.rating.trials import build_plan

    resolved = [os.path.realpath(folder) for folder in args.fake]
    for folder, real_path in zip(args.fake, resolved):
        if resolved.count(real_path) > 1:
            raise GenResearchError(f"--fake {folder} is given twice; name each fake folder once")
    real = (args.real, folder_images(args.real, "--real"))
    fakes = [(folder, folder_images(folder, "--fake")) for folder in args.fake]
    return build_plan(real, fakes, mode=args.mode or "mos", pairs=args.pairs, num_trials=args.num_trials,
                      seed=0 if args.seed is None else args.seed)


def session_plan(args: argparse.Namespace) -> dict[str, Any]:
    """The plan in --out (checked against the options given), or a new one written there."""
    from gen_research.rating.store import ANSWERS_FILE
    from gen_research.rating.trials import load_plan, plan_difference, verify_plan_files

    out = Path(args.out)
    plan_path = out / PLAN_FILE
    saved = load_plan(plan_path) if plan_path.exists() else None
    if saved is None:
        if (out / ANSWERS_FILE).exists():
            raise GenResearchError(f"{out} holds answers.jsonl but no plan.json; restore plan.json, or pass another --out")
        if not args.real:
            raise GenResearchError(f"no rate session in {out} (no plan.json); start one with --real DIR --fake DIR")
        plan = new_plan(args)
        atomic_write_text(plan_path, json.dumps(plan, indent=1) + "\n")
        return plan
    if args.real:
        difference = plan_difference(saved, new_plan(args))
    else:
        given = {key: value for key, value in _plan_options(args).items() if value is not None}
        difference = next((f"{key} {saved[key]!r} there, {value!r} now" for key, value in given.items()
                           if saved[key] != value), None)
    if difference:
        raise GenResearchError(f"{out} holds a session with another plan ({difference}); pass the options of that "
                               "session (or only --out to resume it), or another --out for a new session")
    verify_plan_files(saved)
    return saved


def write_results(out: Path, results: dict[str, Any], show: bool = True) -> None:
    from gen_research.rating.stats import format_table

    atomic_write_text(out / RESULTS_FILE, json.dumps(results, indent=1) + "\n")
    if show:
        print(format_table(results), flush=True)


def summary(args: argparse.Namespace) -> int:
    from gen_research.rating.stats import summarize
    from gen_research.rating.store import ANSWERS_FILE, read_answers
    from gen_research.rating.trials import load_plan

    out = Path(args.out)
    if not (out / PLAN_FILE).exists():
        raise GenResearchError(f"no rate session in {out} (no plan.json); pass the --out folder of a session")
    plan = load_plan(out / PLAN_FILE)
    answers, _ = read_answers(out / ANSWERS_FILE, plan)
    write_results(out, summarize(plan, answers))
    print(f"results: {out / RESULTS_FILE}")
    return 0


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _open_browser(url: str) -> None:
    import webbrowser

    # Without a display, webbrowser would start a text-mode browser in this terminal: print the URL only.
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or sys.platform in ("darwin", "win32"):
        threading.Thread(target=webbrowser.open, args=(url,), daemon=True).start()


def rate_command(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    check_arguments(args)
    if args.summary:
        return summary(args)
    from gen_research.rating.server import RatingServer, RatingSession
    from gen_research.rating.store import AnswerStore

    out = Path(args.out)
    plan = session_plan(args)
    store = AnswerStore(out, plan)
    session = RatingSession(store, on_answer=lambda results: write_results(out, results))
    try:
        server = RatingServer(session, port=args.port)
    except OSError as error:
        store.close()
        raise GenResearchError(f"cannot serve on 127.0.0.1:{args.port} ({error.strerror}); pass another --port "
                               "(0: a free one)") from None
    write_results(out, session.results(), show=False)
    answered = len(store.snapshot())
    print(f"rating page: {server.url}  ({answered} of {len(plan['trials'])} trials answered; Ctrl-C stops; "
          f"from another machine: ssh -L {server.server_address[1]}:127.0.0.1:{server.server_address[1]} HOST)",
          flush=True)
    if not args.no_browser:
        _open_browser(server.url)
    in_main_thread = threading.current_thread() is threading.main_thread()
    # Ctrl-C and SIGTERM both stop the server cleanly, whatever handlers the process had (a host program or a library
    # may have replaced or ignored SIGINT); the previous handlers come back afterwards.
    previous = {number: signal.signal(number, _interrupt) for number in (signal.SIGINT, signal.SIGTERM)} if in_main_thread else {}
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        server.server_close()
        store.close()
        print()
        write_results(out, session.results())
        print(f"results: {out / RESULTS_FILE}; answers: {store.path}", flush=True)
    return 0
