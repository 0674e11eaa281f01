"""The `tui-tuner` command: arguments in, an exit code out.

`sim-serve` hands its whole command line to the simulated server, whose parser mimics
`vllm serve`; the other subcommands are parsed here. A study is opened by `study_dir.py`, its
load generator found by `compose.py`, and it runs under `headless.py` (no UI) or `ui/run.py`
(the TUI), which both run it through `compose.run_study`. Heavy modules are imported inside each
command so that `tui-tuner --help` stays fast and headless commands never import Textual.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tui_tuner import __version__
from tui_tuner.core.errors import UserError
from tui_tuner.core.stop import EXIT_CODES

if TYPE_CHECKING:
    from tui_tuner.study_dir import StudySetup


def _make_tiny_model(ns: argparse.Namespace) -> int:
    from tui_tuner.sim.tiny_model import write_tiny_model

    info = write_tiny_model(Path(ns.directory), seed=ns.seed, overwrite=ns.overwrite)
    verb = "up to date" if info.reused else "written"
    print(
        f"tiny model {verb}: {info.path} ({info.num_parameters:,} parameters, "
        f"vocab {info.vocab_size}, seed {info.seed})"
    )
    return 0


def _overrides(ns: argparse.Namespace) -> dict[str, object]:
    out: dict[str, object] = {}
    if getattr(ns, "model", None):
        # A path on the command line is relative to where the user is, not to the config file.
        given = Path(ns.model).expanduser()
        out["server.model"] = os.path.abspath(given) if given.exists() else ns.model
    if getattr(ns, "study_name", None):
        out["study.name"] = ns.study_name
    if getattr(ns, "trials", None):
        out["study.n_trials"] = ns.trials
    return out


def _path(text: str | None) -> Path | None:
    return Path(text) if text else None


def _run(ns: argparse.Namespace, setup: StudySetup) -> int:
    """Run the study headless or under the TUI."""
    from tui_tuner.compose import find_load_generator

    events = _path(ns.events_jsonl)
    guidellm = find_load_generator(setup, ns.guidellm)  # a missing one is said before the UI
    if not ns.headless and not (sys.stdin.isatty() and sys.stdout.isatty()):
        print("tui-tuner: no terminal here; running headless", file=sys.stderr)
        ns.headless = True
    if ns.headless:
        from tui_tuner.headless import run_headless

        return run_headless(setup, events_jsonl=events, guidellm=guidellm)
    from tui_tuner.ui.run import run_tui

    return run_tui(setup, guidellm=guidellm, theme=ns.theme, events_jsonl=events)


def _tune(ns: argparse.Namespace) -> int:
    from tui_tuner.study_dir import tune_setup

    setup = tune_setup(Path(ns.config), study_dir=_path(ns.study_dir), overrides=_overrides(ns))
    return _run(ns, setup)


def _resume(ns: argparse.Namespace) -> int:
    from tui_tuner.study_dir import resume_setup

    return _run(ns, resume_setup(Path(ns.study_dir), overrides=_overrides(ns)))


def _validate(ns: argparse.Namespace) -> int:
    from rich.console import Console

    from tui_tuner.core.config_load import load_config
    from tui_tuner.report.validation import print_validation
    from tui_tuner.study_dir import check_runnable

    path = Path(ns.config)
    config = load_config(path, _overrides(ns))
    console = Console(highlight=False)
    print_validation(console, path, config, check_runnable(config), dry_run=ns.dry_run)
    return 0


def _demo(ns: argparse.Namespace) -> int:
    from tui_tuner.study_dir import demo_setup

    return _run(ns, demo_setup(study_dir=_path(ns.study_dir), overrides=_overrides(ns)))


def _run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--headless",
        action="store_true",
        help="no terminal UI: a progress display, then the results (for scripts and CI)",
    )
    parser.add_argument(
        "--theme",
        default=None,
        help="UI colours: dark (default), light, high-contrast, or a theme .yaml file",
    )
    parser.add_argument(
        "--trials",
        type=_positive(int),
        default=None,
        help="finish when the study has N trials, baseline included (overrides study.n_trials)",
    )
    parser.add_argument("--events-jsonl", default=None, help="also write every event to FILE")
    parser.add_argument(
        "--guidellm",
        default=None,
        help="GuideLLM executable (default: workload.guidellm, $TUI_TUNER_GUIDELLM, the venv "
        "`make guidellm` builds, PATH)",
    )


def _positive(kind: type[int] | type[float]) -> Callable[[str], float]:
    def convert(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            what = "a whole number" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return convert


def _exit_codes_text() -> str:
    """The exit codes of `tune`, `resume` and `demo`, wrapped for a terminal."""
    lines = ["exit codes of tune, resume and demo (a study stopped early stays resumable):"]
    for code, meaning in EXIT_CODES:
        wrapped = textwrap.wrap(meaning, 72)
        lines.append(f"  {code:<4} {wrapped[0]}")
        lines += [f"       {more}" for more in wrapped[1:]]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tui-tuner",
        description="Find the fastest `vllm serve` settings for your model, workload and SLA.",
        epilog=_exit_codes_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"tui-tuner {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    sub.add_parser(
        "sim-serve",
        add_help=False,
        help="a SIMULATED vLLM server: `vllm serve`'s flags and API, no GPU (see sim-serve --help)",
    )
    tiny = sub.add_parser("make-tiny-model", help="write a tiny random Llama model directory")
    tiny.add_argument("directory")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("--overwrite", action="store_true", help="rewrite even if up to date")
    tiny.set_defaults(func=_make_tiny_model)
    tune = sub.add_parser("tune", help="run (or continue) the study a configuration describes")
    tune.add_argument("config", help="the study's YAML configuration")
    tune.add_argument("--study-dir", default=None, help="default: studies/STUDY_NAME")
    tune.add_argument("--model", default=None, help="set server.model (predecessor configs)")
    tune.add_argument("--study-name", default=None, help="set study.name (predecessor configs)")
    _run_options(tune)
    tune.set_defaults(func=_tune)
    resume = sub.add_parser("resume", help="continue a study from its directory")
    resume.add_argument("study_dir")
    _run_options(resume)
    resume.set_defaults(func=_resume)
    validate = sub.add_parser("validate", help="check a configuration; starts nothing")
    validate.add_argument("config")
    validate.add_argument(
        "--dry-run", action="store_true", help="also print the commands a study would run"
    )
    validate.add_argument("--model", default=None, help="set server.model (predecessor configs)")
    validate.add_argument("--study-name", default=None, help="set study.name")
    validate.set_defaults(func=_validate)
    demo = sub.add_parser(
        "demo", help="a short study on the SIMULATED vLLM server, measured by GuideLLM (no GPU)"
    )
    demo.add_argument("--study-dir", default=None, help="default: studies/demo-TIMESTAMP")
    _run_options(demo)
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "sim-serve":
        from tui_tuner.sim.main import main as sim_main

        return sim_main(argv[1:])
    ns = build_parser().parse_args(argv)
    try:
        code: int = ns.func(ns)
    except UserError as err:
        print(f"tui-tuner: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code
