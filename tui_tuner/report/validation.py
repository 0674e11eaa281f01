"""What `tui-tuner validate` prints: a configuration's study, constraints and search space, and
with ``--dry-run`` the exact commands a study would run. Starts nothing.

Every value from the file goes through `escape`: ``options: [auto, fp8]`` is text to print, not
Rich markup to read.
"""

from __future__ import annotations

import itertools
import shlex
import textwrap
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.text import Text

from tui_tuner.core.commands import (
    API_KEY_ENV,
    CACHE_ROOT_ENV,
    COMPILE_CACHE_DIR,
    load_for,
    serve_command,
    server_argv,
)
from tui_tuner.core.config import StudyConfig
from tui_tuner.core.space import split_params
from tui_tuner.core.vllm_rules import CROSS_FIELD_FLAGS, Violation, given_violations

__all__ = ["print_validation", "rejected_by_vllm", "validation_dict"]


def print_validation(
    console: Console, config_path: Path, c: StudyConfig, problems: list[str], *, dry_run: bool
) -> None:
    """What `tui-tuner validate` prints of a configuration that loaded: its study, constraints
    and space, the ``problems`` that would make every trial fail and the configurations vLLM
    would refuse as warnings, and with ``dry_run`` the commands a study would run."""
    console.print(f"{escape(str(config_path))}: valid", soft_wrap=True)
    console.print(
        f"  study {escape(c.study.name)}: objective {c.objective.kind}, sampler "
        f"{c.study.sampler}, trials {c.study.n_trials or '-'}, time budget "
        f"{f'{c.study.time_budget_s:g} s' if c.study.time_budget_s else '-'}, baseline "
        f"{'on' if c.study.baseline else 'off'}"
    )
    for term in c.objective.sla:
        console.print(f"  constraint: {escape(term.metric)} <= {term.limit:g}")
    if c.objective.latency_vs_baseline:
        console.print("  constraint: p95 request latency <= the baseline's")
    size = c.space.size()
    count = "unbounded (continuous)" if size is None else f"{size:,} configurations"
    console.print(f"  search space: {len(c.space.enabled())} parameters, {count}")
    for p in c.space:
        state = "" if p.enabled else " (disabled)"
        console.print(f"    {escape(p.key)}: {p.kind} {escape(p.describe())}{state}")
    for note in c.notes:
        _labelled(console, "note:", "cyan", note)
    rejected = rejected_by_vllm(c)
    for problem in [*problems, *([rejected] if rejected else [])]:
        _labelled(console, "warning:", "yellow", problem)
    if dry_run:
        _dry_run(console, c)


def validation_dict(c: StudyConfig, problems: list[str]) -> dict[str, object]:
    """`validate --json`: what `print_validation` says of a configuration that loaded, as data.
    ``warnings``: the problems that would make every trial fail, and what vLLM would refuse."""
    rejected = rejected_by_vllm(c)
    return {
        "valid": True,
        "kind": "study",
        "study": c.study.name,
        "objective": c.objective.kind,
        "sampler": c.study.sampler,
        "n_trials": c.study.n_trials,
        "time_budget_s": c.study.time_budget_s,
        "baseline": c.study.baseline,
        "simulated": c.server.simulated,
        "model": c.server.model,
        "constraints": [{"metric": t.metric, "limit": t.limit} for t in c.objective.sla],
        "latency_vs_baseline": c.objective.latency_vs_baseline,
        "space_size": c.space.size(),
        "parameters": [
            {"key": p.key, "kind": p.kind, "range": p.describe(), "enabled": p.enabled}
            for p in c.space
        ],
        "notes": list(c.notes),
        "warnings": [*problems, *([rejected] if rejected else [])],
    }


def _labelled(console: Console, label: str, style: str, text: str) -> None:
    """``  label: text``, the text wrapped under itself rather than under the label."""
    indent = 2 + len(label) + 1
    lines = textwrap.wrap(text, max(console.width - indent, 30), break_on_hyphens=False)
    for i, line in enumerate(lines or [""]):
        head = Text.assemble("  ", (label, style), " ") if i == 0 else Text(" " * indent)
        console.print(head + Text(line), soft_wrap=True)


#: Past this many combinations of the flags vLLM cross-checks, `rejected_by_vllm` says nothing.
MAX_COMBINATIONS = 100_000


def rejected_by_vllm(c: StudyConfig) -> str | None:
    """How many configurations of the space vLLM is sure to refuse at start-up, with an example
    (None: none, or too many to count). Such a trial fails as invalid_args after a server
    start; a study can still run, but a space where half the points can only fail wastes half
    its budget."""
    checked = [
        p for p in c.space.enabled() if p.key in CROSS_FIELD_FLAGS and p.choices() is not None
    ]
    if not checked:
        return None
    rest = 1
    for p in c.space.enabled():
        if p not in checked:
            rest *= p.count() or 0  # 0: a continuous parameter, no finite count
    combos = 1
    for p in checked:
        combos *= len(p.choices() or ())
    if combos > MAX_COMBINATIONS:
        return None
    fixed = {k: v for k, v in c.server.flags.items() if k in CROSS_FIELD_FLAGS}
    bad = 0
    example: tuple[dict[str, object], Violation] | None = None
    for values in itertools.product(*(p.choices() or () for p in checked)):
        chosen: dict[str, object] = {p.key: v for p, v in zip(checked, values, strict=True)}
        found = given_violations({**fixed, **chosen})
        if found:
            bad += 1
            example = example or (chosen, found[0])
    if example is None:
        return None
    chosen, violation = example
    shown = " ".join(
        f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in chosen.items()
    )
    reason = violation.message.split(". ")[0].rstrip(".")
    if rest:
        total = f"{bad * rest:,} of its {combos * rest:,} configurations"
    else:
        names = ", ".join(p.key for p in checked)
        total = f"{bad:,} of the {combos:,} combinations of {names}"
    return (
        f"vLLM would reject {total} at start-up (the tuner tells the search so "
        f"without a launch), e.g. {shown}: {reason}"
    )


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
        if c.server.fast_start and CACHE_ROOT_ENV not in c.server.env:
            env += f"{CACHE_ROOT_ENV}=STUDY_DIR/{COMPILE_CACHE_DIR} "
        console.print(f"  {label} server: {env}{escape(shlex.join(argv))}", soft_wrap=True)
    streams, rate = load_for(c.workload, split_params(mid))
    load = (
        f"{streams} concurrent streams" if c.workload.profile == "concurrent" else f"{rate} req/s"
    )
    warmup = f"{c.workload.warmup_s:g} s warmup + {c.workload.duration_s:g} s measured"
    if c.workload.warmup_auto:
        warmup = (f"warmup until the throughput settles (at most {c.workload.warmup_s:g} s), "
                  f"then at least {c.workload.duration_s:g} s measured")  # fmt: skip
    console.print(f"  load: GuideLLM {c.workload.profile}, {load}, {warmup}, x{c.workload.repeats}")
    console.print(f"  export would read: {escape(serve_command(c.server, mid))}", soft_wrap=True)
