"""The end of a study in words and numbers: best trial(s), gain over the baseline, the command.

Pure apart from reading how this program was started (`own_command`): it reads TrialRecords and
returns Rich renderables and text; the console sink prints them. Every value the user chose (a
study name, a parameter value, a model) goes into a `Text` or through `escape`, so brackets in it
are printed, not read as Rich markup.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

from rich.console import Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from tui_tuner.core.commands import serve_command
from tui_tuner.core.confidence import answer
from tui_tuner.core.config import StudyConfig
from tui_tuner.core.objectives import best_trials, gain_over
from tui_tuner.core.trial import TrialRecord, baseline_of

__all__ = [
    "baseline_of",
    "best_table",
    "end_of_study",
    "format_params",
    "outcome_lines",
    "own_command",
]


def format_params(params: Mapping[str, object], *, baseline: bool = False) -> str:
    if baseline:
        return "vLLM defaults (baseline)"
    return " ".join(f"{k}={_short(v)}" for k, v in params.items()) or "-"


def _short(value: object) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def best_table(config: StudyConfig, records: Sequence[TrialRecord]) -> Table:
    """Baseline and best trial(s) with their figures and gains, units in the headers.

    Configurations can be long, so they are the table's caption, one line per trial: the
    numbers stay readable at 80 columns.
    """
    sim = "SIMULATED server: " if config.server.simulated else ""
    title = f"{sim}study {escape(config.study.name)}: objective {config.objective.kind}"
    table = Table(title=title, title_justify="left", caption_justify="left")
    table.add_column("trial", justify="right", no_wrap=True)
    for name in ("output tok/s", "p95 ms", "TTFT p95 ms", "gain tok/s", "p95 change"):
        table.add_column(name, justify="right", no_wrap=True)
    base = baseline_of(records)
    rows = [base] if base is not None else []
    rows += [r for r in best_trials(config.objective.kind, records) if r is not base]
    captions = []
    for r in rows:
        m = r.measurement
        assert m is not None
        gain = gain_over(base.measurement, m) if base is not None and base.measurement else None
        table.add_row(
            f"{r.number}",
            f"{m.output_tok_s:,.1f}",
            f"{m.request_latency_p95_ms:,.0f}",
            f"{m.ttft_p95_ms:,.0f}",
            "-" if gain is None or r is base else f"{gain.output_tok_s_pct:+.1f}%",
            "-" if gain is None or r is base else gain.p95_words(),
        )
        captions.append(f"trial {r.number}: {escape(format_params(r.params, baseline=r.baseline))}")
    table.caption = "\n".join(captions) or "no measured trial yet"
    return table


def outcome_lines(config: StudyConfig, records: Sequence[TrialRecord]) -> list[str]:
    """Counts by state and failure class, then the command of the best trial."""
    counts = Counter(
        "interrupted"
        if r.interrupted
        else "measured again"
        if r.repeat
        else "rejected before a launch"
        if r.rejected
        else r.label
        for r in records
        if r.state not in ("waiting", "running")
    )
    done = ", ".join(f"{n} {label}" for label, n in sorted(counts.items()))
    lines = ["trials: " + (done or "none finished")]
    best = best_trials(config.objective.kind, records)
    if not best:
        lines.append("no feasible measured trial yet")
        return lines
    pick = best[0]
    if pick.baseline:
        lines.append("the baseline (vLLM defaults) is still the best; run it with:")
    else:
        what = "best" if len(best) == 1 else "highest-throughput point of the Pareto front"
        lines.append(f"{what}: trial {pick.number}; run it with:")
    lines.append("  " + serve_command(config.server, pick.params))
    curve = None if pick.measurement is None else pick.measurement.load_curve
    if curve is not None:  # goodput: the load at which its figures hold
        lines.append(f"  {curve.words()}")
    if config.server.simulated:
        lines.append(
            "  (measured on the SIMULATED server: a starting point to verify on real hardware)"
        )
    return lines


def end_of_study(
    config: StudyConfig, records: Sequence[TrialRecord], study_dir: Path, *, resumable: bool
) -> list[RenderableType]:
    """What is printed when a study ends, headless or after the TUI: the best table (or that
    nothing was measured), the counts and the command to paste, then how to resume."""
    measured = baseline_of(records) is not None or bool(best_trials(config.objective.kind, records))
    out: list[RenderableType] = []
    if measured:
        out.append(best_table(config, records))
    else:
        finished = any(r.state not in ("waiting", "running") for r in records)
        why = "no trial finished with a measurement" if finished else "no trial finished"
        out.append(Text(f"nothing was measured: {why}", style="yellow"))
    lines = outcome_lines(config, records)
    out.append(Text(lines[0]))
    sure = answer(config.objective.kind, records)
    if sure is not None and sure.baseline is not None:
        # Sentences, wrapped at word boundaries (a `Text` alone is printed unwrapped, so that
        # the command below can be copied whole).
        out.append(Group(*(Text(line) for line in sure.lines())))
    out += [Text(line) for line in lines[1:]]
    if resumable:
        out.append(Text(f"resume with: {own_command()} resume {shlex.quote(str(study_dir))}"))
    return out


def own_command(argv0: str | None = None, on_path: str | None = "") -> str:
    """The shell command that runs this tui-tuner again: `tui-tuner` when that is on PATH and is
    the one running, else the path of the running executable (after `make demo` it is
    `.venv/bin/tui-tuner`, not on PATH), else `PYTHON -m tui_tuner`. ``argv0`` and ``on_path``
    (what PATH finds) stand in for `sys.argv[0]` and `shutil.which` in tests."""
    argv0 = sys.argv[0] if argv0 is None else argv0
    if on_path == "":
        on_path = shutil.which("tui-tuner")
    running = os.path.abspath(argv0) if argv0 else ""
    if Path(argv0).name.startswith("tui-tuner") and Path(running).is_file():
        if on_path and Path(on_path).resolve() == Path(running).resolve():
            return "tui-tuner"
        return shlex.quote(running)
    return f"{shlex.quote(sys.executable)} -m tui_tuner"
