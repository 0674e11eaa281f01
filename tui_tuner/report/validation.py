"""What `tui-tuner validate` prints: a configuration's study, constraints and search space, and
with ``--dry-run`` the exact commands a study would run. Starts nothing."""

from __future__ import annotations

import shlex
from pathlib import Path

from rich.console import Console

from tui_tuner.core.commands import API_KEY_ENV, load_for, serve_command, server_argv
from tui_tuner.core.config import StudyConfig
from tui_tuner.core.space import split_params

__all__ = ["print_validation"]


def print_validation(
    console: Console, config_path: Path, c: StudyConfig, problems: list[str], *, dry_run: bool
) -> None:
    """What `tui-tuner validate` prints of a configuration that loaded: its study, constraints
    and space, the ``problems`` that would make every trial fail as warnings, and with
    ``dry_run`` the commands a study would run."""
    console.print(f"{config_path}: valid")
    console.print(
        f"  study {c.study.name}: objective {c.objective.kind}, sampler {c.study.sampler}, "
        f"trials {c.study.n_trials or '-'}, time budget "
        f"{f'{c.study.time_budget_s:g} s' if c.study.time_budget_s else '-'}, baseline "
        f"{'on' if c.study.baseline else 'off'}"
    )
    for term in c.objective.sla:
        console.print(f"  constraint: {term.metric} <= {term.limit:g}")
    if c.objective.latency_vs_baseline:
        console.print("  constraint: p95 request latency <= the baseline's")
    size = c.space.size()
    count = "unbounded (continuous)" if size is None else f"{size:,} configurations"
    console.print(f"  search space: {len(c.space.enabled())} parameters, {count}")
    for p in c.space:
        state = "" if p.enabled else " (disabled)"
        console.print(f"    {p.key}: {p.kind} {p.describe()}{state}")
    for note in c.notes:
        console.print(f"  [cyan]note:[/] {note}")
    for problem in problems:
        console.print(f"  [yellow]warning:[/] {problem}")
    if dry_run:
        _dry_run(console, c)


def _dry_run(console: Console, c: StudyConfig) -> None:
    """The baseline's and a mid-space trial's commands, exactly as a trial would start them."""
    console.print("dry run (nothing is started):")
    mid: dict[str, object] = {}
    for p in c.space.enabled():
        choices = p.choices()
        if choices:
            mid[p.key] = choices[len(choices) // 2]
        elif p.low is not None and p.high is not None:
            mid[p.key] = (p.low + p.high) / 2
    for label, params in (("baseline", {}), ("a trial", mid)):
        argv = server_argv(c.server, split_params(params), host=c.server.host, port=8000)
        env = f"{API_KEY_ENV}='<random per trial>' " if c.server.api_key else ""
        console.print(f"  {label} server: {env}{shlex.join(argv)}", soft_wrap=True)
    streams, rate = load_for(c.workload, split_params(mid))
    load = (
        f"{streams} concurrent streams" if c.workload.profile == "concurrent" else f"{rate} req/s"
    )
    console.print(
        f"  load: GuideLLM {c.workload.profile}, {load}, {c.workload.warmup_s:g} s warmup + "
        f"{c.workload.duration_s:g} s measured, x{c.workload.repeats}"
    )
    console.print(f"  export would read: {serve_command(c.server, mid)}", soft_wrap=True)
