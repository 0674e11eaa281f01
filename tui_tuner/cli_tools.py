"""The `import` and `profile` subcommands: other tools' files in, a trace of the best trial out.

`cli.py` registers them (`add_tools`) and turns their `UserError`s into one line and exit code 2,
as for every command. Heavy modules are imported inside each command.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["add_tools"]

Command = Callable[..., argparse.ArgumentParser]


def _import(ns: argparse.Namespace) -> int:
    from tui_tuner.core.errors import UserError
    from tui_tuner.importers.native import import_config, render

    sweep = (ns.serve_cmd, ns.serve_params, ns.bench_cmd, ns.bench_params)
    if ns.config and any(sweep):
        raise UserError("give a configuration file or `vllm bench sweep` inputs, not both")
    if not ns.config and not any(sweep):
        raise UserError(
            "nothing to import: give a configuration file (the predecessor's vllm_config.yaml) "
            "or --serve-cmd/--serve-params/--bench-params (see import --help)"
        )
    out = Path(ns.output) if ns.output else None
    if out is not None and out.exists() and not ns.force:
        raise UserError(f"{out} exists; give --force to replace it, or another -o")
    if ns.config:
        overrides: dict[str, object] = {}
        if ns.model:
            overrides["server.model"] = ns.model
        if ns.study_name:
            overrides["study.name"] = ns.study_name
        imported = import_config(Path(ns.config), overrides)
    else:
        from tui_tuner.importers.sweep import read_params, sweep_mapping

        name = ns.study_name or (out.stem if out is not None else "imported-sweep")
        mapping, notes = sweep_mapping(
            serve_cmd=ns.serve_cmd,
            serve_params=read_params(Path(ns.serve_params)) if ns.serve_params else None,
            bench_cmd=ns.bench_cmd,
            bench_params=read_params(Path(ns.bench_params)) if ns.bench_params else None,
            model=ns.model,
            name=name,
        )
        sources = [s for s in (ns.serve_cmd and "--serve-cmd", ns.serve_params,
                               ns.bench_cmd and "--bench-cmd", ns.bench_params) if s]  # fmt: skip
        imported = render(mapping, notes, sources=[str(s) for s in sources])
    if out is None:
        sys.stdout.write(imported.text)
        for note in imported.notes:
            print(f"tui-tuner: note: {note}", file=sys.stderr)
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(imported.text, encoding="utf-8")
    space = imported.config.space
    print(f"written: {out} (study {imported.config.study.name}, {len(space.params)} parameters)")
    for note in imported.notes:
        print(f"  note: {note}")
    print(f"check it: tui-tuner validate {out} --dry-run; run it: tui-tuner tune {out}")
    return 0


def _profile(ns: argparse.Namespace) -> int:
    from tui_tuner.profiling import profile_trial

    return profile_trial(
        Path(ns.study_dir),
        trial=ns.trial,
        duration_s=ns.duration,
        guidellm=ns.guidellm,
        with_stack=ns.with_stack,
    )


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def add_tools(sub: argparse._SubParsersAction[Any], command: Command) -> None:
    """Add `import` and `profile` with `cli._command` (their help line and examples)."""
    imp = command(
        sub,
        "import",
        "write a tui-tuner configuration from `vllm bench sweep` inputs or the predecessor's "
        "vllm_config.yaml, with a note for what has no equivalent",
        ["tui-tuner import vllm_config.yaml --model Qwen/Qwen3-8B --study-name old -o study.yaml",
         "tui-tuner import --serve-cmd 'vllm serve meta-llama/Llama-3.1-8B' "
         "--serve-params serve_hparams.json --bench-params bench_hparams.json -o sweep.yaml"],
        _import,
    )  # fmt: skip
    imp.add_argument(
        "config", nargs="?", metavar="CONFIG", help="a configuration file (the predecessor's)"
    )
    imp.add_argument("--serve-cmd", metavar="CMD", help="the sweep's `vllm serve ...` command")
    imp.add_argument("--serve-params", metavar="FILE", help="the sweep's --serve-params JSON")
    imp.add_argument("--bench-cmd", metavar="CMD", help="the sweep's `vllm bench serve ...`")
    imp.add_argument("--bench-params", metavar="FILE", help="the sweep's --bench-params JSON")
    imp.add_argument("--model", metavar="MODEL", help="set server.model")
    imp.add_argument("--study-name", metavar="NAME", help="set study.name (default: -o's name)")
    imp.add_argument("-o", "--output", metavar="FILE", help="write it here (default: stdout)")
    imp.add_argument("--force", action="store_true", help="replace an existing -o FILE")
    prof = command(
        sub,
        "profile",
        "run a study's best (or chosen) configuration once more with vLLM's torch profiler on, "
        "for a short load, and save the trace beside the trial",
        ["tui-tuner profile studies/my-study",
         "tui-tuner profile studies/my-study --trial 7 --duration 20"],
        _profile,
    )  # fmt: skip
    prof.add_argument("study_dir", metavar="STUDY_DIR", help="the study's directory")
    prof.add_argument(
        "--trial", type=int, default=None, metavar="N", help="this trial (default: the best)"
    )
    prof.add_argument(
        "--duration",
        type=_seconds,
        default=10.0,
        metavar="S",
        help="seconds of profiled load (default: 10; traces grow fast)",
    )
    prof.add_argument(
        "--with-stack",
        action="store_true",
        help="record Python call stacks too (several times larger traces, slower to write)",
    )
    prof.add_argument("--guidellm", default=None, metavar="PATH", help="GuideLLM executable")
