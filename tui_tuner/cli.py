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
import shlex
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tui_tuner import __version__
from tui_tuner.core.errors import UserError
from tui_tuner.core.stop import EXIT_CODES

if TYPE_CHECKING:
    from rich.console import Console

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
    if getattr(ns, "workers", None):
        out["study.workers"] = ns.workers
    if getattr(ns, "sim_gpus", None):
        out["server.gpus"] = list(range(ns.sim_gpus))
    return out


def _path(text: str | None) -> Path | None:
    return Path(text) if text else None


def _run(ns: argparse.Namespace, setup: StudySetup) -> int:
    """Run the study headless or under the TUI."""
    from tui_tuner.compose import find_load_generator

    events = _path(ns.events_jsonl)
    guidellm = find_load_generator(setup, ns.guidellm)  # a missing one is said before the UI
    if setup.config.study.warm_start:  # an unreadable earlier study is said before the UI too
        from tui_tuner.warm_start import apply_warm_start

        apply_warm_start(setup)
    if not ns.headless and not (sys.stdin.isatty() and sys.stdout.isatty()):
        print("tui-tuner: no terminal here; running headless", file=sys.stderr)
        ns.headless = True
    if ns.headless:
        from tui_tuner.headless import run_headless

        json_end = getattr(ns, "json", False)
        return run_headless(setup, events_jsonl=events, guidellm=guidellm, json_end=json_end)
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
    """Each file in turn, a blank line between them; the exit code is the worst."""
    from rich.console import Console

    console = Console(highlight=False)
    worst = 0
    for i, name in enumerate(ns.configs):
        if i:
            console.print()
        try:
            worst = max(worst, _validate_one(console, Path(name), ns))
        except UserError as err:
            console.file.flush()
            message = _with_hint(err, "validate", shlex.quote(name))
            print(f"tui-tuner: error: {message}", file=sys.stderr, flush=True)
            worst = 2
    return worst


def _validate_one(console: Console, path: Path, ns: argparse.Namespace) -> int:
    from tui_tuner.core.config_load import load_config
    from tui_tuner.report.validation import print_validation
    from tui_tuner.study_dir import check_runnable

    if _is_sim_profile(path):
        return _validate_profile(console, path)
    config = load_config(path, _overrides(ns))
    print_validation(console, path, config, check_runnable(config), dry_run=ns.dry_run)
    return 0


def _is_sim_profile(path: Path) -> bool:
    """A simulator profile (`base:` and overrides), not a study: no section a study has."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False  # the study loader says what is wrong
    study_keys = {"study", "server", "search_space", "parameters", "objective", "workload"}
    return isinstance(data, dict) and "base" in data and not study_keys & data.keys()


def _validate_profile(console: Console, path: Path) -> int:
    from rich.markup import escape

    from tui_tuner.sim.profiles import ProfileError, load_profile_file

    try:
        profile = load_profile_file(path)
    except ProfileError as err:
        raise UserError(f"invalid simulator profile: {err}") from None
    console.print(f"{escape(str(path))}: valid simulator profile (not a study)", soft_wrap=True)
    console.print(f"  profile {escape(profile.name)}: {escape(profile.description)}")
    console.print(
        f"  use it with: tui-tuner sim-serve MODEL --sim-profile-file {escape(str(path))}, "
        "or in a study's server.extra_args",
        soft_wrap=True,
    )
    return 0


def _with_hint(err: UserError, command: str, config: str | None) -> str:
    """The error, and for a study file without a model or a name (the predecessor's format
    leaves both to the command line) the options that give them."""
    missing = [
        option
        for p in getattr(err, "problems", ())
        for key, option in (("server.model", "--model MODEL"), ("study.name", "--study-name NAME"))
        if p.key == key and p.message.startswith("required")
    ]
    if not missing or config is None:
        return str(err)
    return (
        f"{err}\n  give {' and '.join(missing)} on the command line (the predecessor's format "
        f"leaves them to it): tui-tuner {command} {config} {' '.join(missing)}"
    )


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
        metavar="N",
        help="finish when the study has N trials, baseline included (overrides study.n_trials)",
    )
    parser.add_argument(
        "--workers",
        type=_workers,
        default=None,
        metavar="N",
        help="run N trials side by side, each on GPUs of its own, or auto: one a GPU "
        "(overrides study.workers)",
    )
    parser.add_argument(
        "--sim-gpus",
        type=_positive(int),
        default=None,
        metavar="N",
        help="the simulated server's node has N GPUs to hand out (sets server.gpus to 0..N-1)",
    )
    parser.add_argument(
        "--events-jsonl", default=None, metavar="FILE", help="also write every event to FILE"
    )
    parser.add_argument(
        "--guidellm",
        default=None,
        metavar="PATH",
        help="GuideLLM executable (default: workload.guidellm, $TUI_TUNER_GUIDELLM, the venv "
        "`make guidellm` builds, PATH)",
    )


def _workers(text: str) -> int | str:
    """``--workers``: a whole number from 1, or auto."""
    if text == "auto":
        return text
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from 1, nor auto")
    return int(text)


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


def _command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    what: str,
    examples: Sequence[str],
    func: Callable[[argparse.Namespace], int],
) -> argparse.ArgumentParser:
    """A subcommand with its one line in `tui-tuner --help`, the same line atop its own --help,
    and examples below it."""
    epilog = "examples:\n" + "\n".join(f"  {e}" for e in examples)
    parser = sub.add_parser(
        name,
        help=what,
        description=what[0].upper() + what[1:] + ".",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(func=func)
    return parser


def _overrides_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=None,
        metavar="MODEL",
        help="set server.model: a directory or a Hugging Face id (the predecessor's format "
        "leaves it to the command line)",
    )
    parser.add_argument(
        "--study-name",
        default=None,
        metavar="NAME",
        help="set study.name (the predecessor's format leaves it to the command line)",
    )


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
    tiny = _command(
        sub,
        "make-tiny-model",
        "write a tiny random Llama model directory (a tokenizer and weights, offline)",
        ["tui-tuner make-tiny-model /tmp/tiny-llama",
         "tui-tuner sim-serve /tmp/tiny-llama --port 8000"],
        _make_tiny_model,
    )  # fmt: skip
    tiny.add_argument(
        "directory", metavar="DIR", help="where to write it (created; an empty or tiny-model one)"
    )
    tiny.add_argument(
        "--seed", type=int, default=0, metavar="N", help="seed of the random weights (default: 0)"
    )
    tiny.add_argument("--overwrite", action="store_true", help="rewrite even if up to date")
    tune = _command(
        sub,
        "tune",
        "run (or continue) the study a configuration describes",
        ["tui-tuner tune sample_configs/max-throughput.yaml",
         "tui-tuner tune sample_configs/predecessor-format.yaml --model MODEL --study-name NAME",
         "tui-tuner tune my-study.yaml --headless --trials 20"],
        _tune,
    )  # fmt: skip
    tune.add_argument("config", help="the study's YAML configuration")
    tune.add_argument(
        "--study-dir", default=None, metavar="DIR", help="default: studies/STUDY_NAME"
    )
    _overrides_options(tune)
    _run_options(tune)
    resume = _command(
        sub,
        "resume",
        "continue a study from its directory, with its configuration and space as last saved",
        ["tui-tuner resume studies/my-study", "tui-tuner resume studies/my-study --trials 40"],
        _resume,
    )
    resume.add_argument(
        "study_dir", metavar="STUDY_DIR", help="the study's directory (tune and demo print it)"
    )
    _run_options(resume)
    validate = _command(
        sub,
        "validate",
        "check configurations (study files or simulator profiles); starts nothing",
        ["tui-tuner validate sample_configs/*.yaml",
         "tui-tuner validate my-study.yaml --dry-run",
         "tui-tuner validate sample_configs/predecessor-format.yaml --model M --study-name S"],
        _validate,
    )  # fmt: skip
    validate.add_argument(
        "configs",
        nargs="+",
        metavar="CONFIG",
        help="a study's YAML configuration, or a simulator profile; several are checked "
        "one by one (the exit code is 2 if any is invalid)",
    )
    validate.add_argument(
        "--dry-run", action="store_true", help="also print the commands a study would run"
    )
    _overrides_options(validate)
    demo = _command(
        sub,
        "demo",
        "a short study on the SIMULATED vLLM server, measured by GuideLLM (no GPU)",
        ["tui-tuner demo", "tui-tuner demo --headless --trials 4"],
        _demo,
    )
    demo.add_argument(
        "--study-dir", default=None, metavar="DIR", help="default: studies/demo-TIMESTAMP"
    )
    _run_options(demo)
    from tui_tuner.cli_tools import add_tools  # import, profile

    add_tools(sub, _command)
    from tui_tuner.cli_results import register  # show, studies, export; --json

    register(sub, _command)
    from tui_tuner.cli_worker import register as register_worker  # worker

    register_worker(sub, _command)
    from tui_tuner.cli_attach import register as register_attach  # attach

    register_attach(sub, _command)
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
        config = getattr(ns, "config", None)
        message = _with_hint(err, ns.command, shlex.quote(config) if config else None)
        print(f"tui-tuner: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code
