"""The result commands: `show`, `studies` and `export`, and ``--json`` on `validate` and at the
end of a headless `tune`, `resume` and `demo`.

Registered by `cli.build_parser` (`register`). Studies are opened read-only by `results.py`;
what is printed is built in `report/` (`show.py`, `formats.py`, `html.py`, `facts.py`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tui_tuner.core.errors import UserError

__all__ = ["register"]

FORMATS = ("command", "yaml", "json", "csv", "markdown", "html")
Command = Callable[..., argparse.ArgumentParser]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], command: Command) -> None:
    """Add `show`, `studies` and `export` (with ``command``, cli's subcommand maker), and
    ``--json`` to `validate`, `tune`, `resume` and `demo` (made before this is called)."""
    show = command(
        sub, "show", "a study's answer in the terminal: best, gain, noise, failures, time, plot",
        ["tui-tuner show studies/my-study",
         "tui-tuner show sqlite:///studies/my-study/study.db --json",
         "tui-tuner show postgresql://tuner@db/tuning --study my-study"],
        _show,
    )  # fmt: skip
    show.add_argument("target", metavar="STUDY_DIR|STORAGE_URL",
                      help="a study directory, its study.db, or an Optuna storage URL")  # fmt: skip
    show.add_argument("--study", metavar="NAME", default=None,
                      help="which study of the storage (needed when it holds several)")  # fmt: skip
    _json_option(show)
    studies = command(
        sub, "studies", "the studies of a directory or a storage: state, progress, best, age",
        ["tui-tuner studies", "tui-tuner studies runs/ --json",
         "tui-tuner studies postgresql://tuner@db/tuning"],
        _studies,
    )  # fmt: skip
    studies.add_argument("target", nargs="?", default=None, metavar="DIR|STORAGE_URL",
                         help="a directory of study directories (default: studies), or an "
                         "Optuna storage URL")  # fmt: skip
    _json_option(studies)
    export = command(
        sub, "export", "write a study's result: the command, a vLLM config, a table or a report",
        ["tui-tuner export studies/my-study --format command",
         "tui-tuner export studies/my-study --format yaml -o best.yaml  # vllm serve M --config",
         "tui-tuner export studies/my-study --format csv -o trials.csv",
         "tui-tuner export studies/my-study --format markdown -o REPORT.md",
         "tui-tuner export studies/my-study --format html -o report.html  # needs [report]",
         "tui-tuner export studies/my-study --format command --trial 7"],
        _export,
    )  # fmt: skip
    export.add_argument("target", metavar="STUDY_DIR", help="the study's directory")
    export.add_argument("--format", required=True, choices=FORMATS,
                        help="command: the `vllm serve` line; yaml: a file for `vllm serve "
                        "--config`; json, csv: every trial; markdown: a report for a pull "
                        "request; html: one self-contained file with plots (plotly, the "
                        "[report] extra)")  # fmt: skip
    export.add_argument("--trial", type=int, default=None, metavar="N",
                        help="command and yaml: this trial instead of the best")  # fmt: skip
    export.add_argument("-o", "--output", default=None, metavar="FILE",
                        help="write to FILE (default: standard output)")  # fmt: skip
    export.add_argument("--study", metavar="NAME", default=None, help=argparse.SUPPRESS)
    for name in ("validate", "tune", "resume", "demo"):
        parser = sub.choices.get(name)
        if parser is not None:
            _json_option(parser, end=name != "validate")
            func = parser.get_default("func")
            wrapped = _validate_json(func) if name == "validate" else _run_json(func)
            parser.set_defaults(func=wrapped)


def _json_option(parser: argparse.ArgumentParser, *, end: bool = False) -> None:
    what = (
        "run headless and print the study's answer as one JSON object, the last line of "
        "standard output (for scripts)"
        if end
        else "print JSON instead of text (for scripts)"
    )
    parser.add_argument("--json", action="store_true", help=what)


def _print_json(data: object) -> None:
    print(json.dumps(data, default=str, separators=(",", ":")), flush=True)


# -- show and studies --------------------------------------------------------------------------


def _show(ns: argparse.Namespace) -> int:
    import time

    from rich.console import Console
    from rich.text import Text

    from tui_tuner.report.facts import study_facts
    from tui_tuner.report.show import show_study
    from tui_tuner.results import open_study

    view = open_study(ns.target, ns.study)
    if ns.json:
        data = {**view.summary(), **study_facts(view.config, view.records)}
        data["config_known"] = view.config_known
        _print_json(data)
        return 0
    console = Console(highlight=False)
    age = None if view.last_activity is None else time.time() - view.last_activity
    for item in show_study(view.config, view.records, state=view.state, holder=view.holder,
                           age_s=age, width=min(console.width, 100),
                           config_known=view.config_known):  # fmt: skip
        console.print(item, soft_wrap=isinstance(item, Text))
    return 0


def _studies(ns: argparse.Namespace) -> int:
    from rich.console import Console

    from tui_tuner.report.show import studies_table
    from tui_tuner.results import list_studies

    rows = [v.summary() for v in list_studies(ns.target)]
    if ns.json:
        _print_json({"studies": rows})
        return 0
    Console(highlight=False).print(studies_table(rows, ns.target or "studies"))
    return 0


# -- export ------------------------------------------------------------------------------------


def _export(ns: argparse.Namespace) -> int:
    from tui_tuner.results import open_study, setup_facts

    if ns.trial is not None and ns.format not in ("command", "yaml"):
        raise UserError(
            f"--trial picks the trial of the command and yaml formats; {ns.format} covers "
            "every trial"
        )
    if ns.format == "html":  # said before the study is read
        from tui_tuner.report.html import INSTALL_HINT, plotly_available

        if not plotly_available():
            raise UserError(f"the html format needs plotly, which is not installed: {INSTALL_HINT}")
    view = open_study(ns.target, ns.study)
    text = _render(ns, view, setup_facts)
    if ns.output:
        Path(ns.output).write_text(text, encoding="utf-8")
        print(f"wrote {ns.output} ({ns.format})", file=sys.stderr)
    else:
        sys.stdout.write(text)
    if view.config.server.simulated and ns.format in ("command", "yaml"):
        print("note: measured on tui-tuner's SIMULATED server, not a real vLLM; verify on real "
              "hardware", file=sys.stderr)  # fmt: skip
    return 0


def _render(ns: argparse.Namespace, view: Any, setup_facts: Callable[[Any], Any]) -> str:
    from tui_tuner.report import formats

    config, records = view.config, view.records
    if ns.format in ("command", "yaml"):
        from tui_tuner.core.objectives import best_trials
        from tui_tuner.report.export import config_text, trial_command

        front = best_trials(config.objective.kind, records)
        if ns.trial is not None:
            chosen = next((r for r in records if r.number == ns.trial), None)
            if chosen is None or chosen.state in ("waiting", "running"):
                raise UserError(f"no finished trial {ns.trial} in study {view.name}")
        elif front:
            chosen = front[0]
        else:
            raise UserError(
                f"study {view.name} has no feasible measured trial yet; --trial N exports a "
                "chosen one"
            )
        if ns.format == "command":
            return trial_command(config, chosen) + "\n"
        size = len(front) if any(r is chosen for r in front) else 0
        name = Path(ns.output).name if ns.output else "FILE"
        return config_text(config, chosen, front_size=size, file_name=name)
    if ns.format == "json":
        return formats.json_text(config, records, setup_facts(view))
    if ns.format == "csv":
        return formats.csv_text(config, records)
    if ns.format == "markdown":
        where = str(view.study_dir) if view.study_dir else None
        return formats.markdown_text(config, records, setup_facts(view), study_dir=where)
    from tui_tuner.report.html import html_report
    from tui_tuner.results import param_importances

    return html_report(config, records, setup_facts(view), param_importances(view))


# -- --json on validate and on a headless run ----------------------------------------------------


def _run_json(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(ns: argparse.Namespace) -> int:
        if ns.json:
            ns.headless = True
        return func(ns)

    return run


def _validate_json(
    func: Callable[[argparse.Namespace], int],
) -> Callable[[argparse.Namespace], int]:
    def run(ns: argparse.Namespace) -> int:
        if not ns.json:
            return func(ns)
        results = [_validate_one(name, ns) for name in ns.configs]
        _print_json({"valid": all(r["valid"] for r in results), "configs": results})
        return 0 if all(r["valid"] for r in results) else 2

    return run


def _validate_one(name: str, ns: argparse.Namespace) -> dict[str, object]:
    from tui_tuner.core.config_load import load_config
    from tui_tuner.report.validation import validation_dict
    from tui_tuner.study_dir import check_runnable

    path = Path(name)
    try:
        if _is_profile(path):
            from tui_tuner.sim.profiles import ProfileError, load_profile_file

            try:
                profile = load_profile_file(path)
            except ProfileError as err:
                raise UserError(f"invalid simulator profile: {err}") from None
            return {"config": name, "valid": True, "kind": "sim_profile", "profile": profile.name}
        overrides: dict[str, object] = {}
        if ns.model:
            given = Path(ns.model).expanduser()
            overrides["server.model"] = str(given.resolve()) if given.exists() else ns.model
        if ns.study_name:
            overrides["study.name"] = ns.study_name
        config = load_config(path, overrides)
        return {"config": name, **validation_dict(config, check_runnable(config))}
    except UserError as err:
        problems: Sequence[Any] = getattr(err, "problems", ())
        return {
            "config": name,
            "valid": False,
            "error": str(err),
            "problems": [
                {
                    "line": getattr(p, "line", None),
                    "key": getattr(p, "key", None),
                    "message": str(getattr(p, "message", p)),
                }
                for p in problems
            ],
        }


def _is_profile(path: Path) -> bool:
    """A simulator profile (`base:` and overrides), not a study (as `cli._is_sim_profile`)."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    study_keys = {"study", "server", "search_space", "parameters", "objective", "workload"}
    return isinstance(data, dict) and "base" in data and not study_keys & data.keys()
