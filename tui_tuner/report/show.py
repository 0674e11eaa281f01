"""What `tui-tuner show` and `tui-tuner studies` print: a study's answer and how far to trust
it, and a table of studies.

Pure: records, the configuration and a few facts about the study's state in, Rich renderables
out. Every value the user chose goes through `escape` or a `Text`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from rich import box
from rich.console import RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from tui_tuner.core.confidence import answer
from tui_tuner.core.config import StudyConfig
from tui_tuner.core.objectives import best_trials, gain_over
from tui_tuner.core.trial import PHASES, TrialRecord, baseline_of, counts_against_budget
from tui_tuner.report.export import trial_command
from tui_tuner.report.facts import (
    SIMULATED_NOTE,
    Noise,
    failure_counts,
    noise_of,
    state_counts,
    time_spent,
)
from tui_tuner.report.plot import points_from, render_pareto
from tui_tuner.report.summary import best_table

__all__ = ["ago", "duration", "show_study", "studies_table", "verdict"]


def duration(seconds: float | None) -> str:
    """``42 s``, ``3 min 05 s``, ``2 h 04 min``."""
    if seconds is None:
        return "-"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def ago(seconds: float | None) -> str:
    """``42 s ago``, ``23 min ago``, ``5 h ago``, ``3 d ago``."""
    if seconds is None:
        return "-"
    s = max(0, round(seconds))
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if s >= size:
            return f"{s // size} {unit} ago"
    return f"{s} s ago"


def verdict(gain_pct: float | None, noise: Noise) -> str:
    """How far a throughput gain can be trusted against the study's noise: beyond it when the
    gain is more than twice the coefficient of variation (about a 95% band for one run)."""
    if gain_pct is None:
        return ""
    if noise.cv_pct is None:
        return "the study has no measure of its noise (no configuration was measured twice)"
    if abs(gain_pct) > 2 * noise.cv_pct:
        return f"beyond the noise (±{noise.cv_pct:.1f}%)"
    return f"within the noise (±{noise.cv_pct:.1f}%): not a clear gain"


def show_study(
    config: StudyConfig,
    records: Sequence[TrialRecord],
    *,
    state: str,
    holder: str | None = None,
    age_s: float | None = None,
    width: int = 80,
    config_known: bool = True,
) -> list[RenderableType]:
    """The study's answer: state and progress, best (or front) against the baseline with the
    noise, counts by state and failure class, where the time went, the plot and the command."""
    out: list[RenderableType] = []
    done = sum(counts_against_budget(r) for r in records)
    budget = config.study.n_trials
    progress = f"{done} of {budget} trials" if budget else f"{done} trials"
    who = f" by {holder}" if holder else ""
    head = Text.assemble(
        ("study ", ""), (config.study.name, "bold"), f" ({config.objective.kind}): ",
        (state, "bold"), f"{who}, {progress}, last activity {ago(age_s)}",
    )  # fmt: skip
    out.append(head)
    if config.server.simulated:
        out.append(Text(f"SIMULATED: {SIMULATED_NOTE}", style="bold yellow"))
    if not config_known:
        note = (
            "(read from the storage alone: the study's configuration is in its directory; "
            "fixed flags and the budget are not known here)"
        )
        out.append(Text(note, style="dim"))
    base = baseline_of(records)
    best = best_trials(config.objective.kind, records)
    if base is not None or best:
        out.append(best_table(config, records))
    else:
        out.append(Text("nothing measured yet", style="yellow"))
    noise = noise_of(records)
    out.append(Text(f"noise: {noise.describe()}"))
    sure = answer(config.objective.kind, records) if config.objective.kind != "pareto" else None
    if sure is not None and sure.noise is not None:  # the gain's interval, the runner-up
        out += [Text(line) for line in sure.lines() if not line.startswith("noise")]
    elif best and base is not None and base.measurement and best[0] is not base:
        gain = gain_over(base.measurement, best[0].measurement)  # type: ignore[arg-type]
        if gain is not None:
            pct = gain.output_tok_s_pct
            out.append(
                Text(
                    f"gain of trial {best[0].number}: {pct:+.1f}% output tok/s, "
                    f"{verdict(pct, noise)}"
                )
            )
    out += _counts(records)
    out.append(_time(records))
    points = points_from(records, config.objective.kind)
    if points:
        title = "SIMULATED: " if config.server.simulated else ""
        out.append(render_pareto(points, max(width, 40), 16, title=f"{title}trials"))
    if best:
        which = "best" if len(best) == 1 else "highest-throughput point of the Pareto front"
        out.append(Text(f"{which}: trial {best[0].number}; run it with:"))
        out.append(Text("  " + trial_command(config, best[0])))
    return out


def _counts(records: Sequence[TrialRecord]) -> list[Text]:
    states = state_counts(records)
    done = ", ".join(f"{n} {label}" for label, n in states.items()) or "none finished"
    running = sum(r.state == "running" for r in records)
    waiting = sum(r.state == "waiting" for r in records)
    more = (f", {running} running" if running else "") + (f", {waiting} queued" if waiting else "")
    out = [Text(f"trials: {done}{more}")]
    failures = failure_counts(records)
    text = ", ".join(f"{n} {cls}" for cls, n in failures.items()) or "none"
    out.append(Text(f"failures by class: {text}"))
    limited = sum(r.client_limited and r.measurement is not None for r in records)
    if limited:
        out.append(Text(f"client-limited: {limited} measured trial(s): GuideLLM could not keep "
                        "the load, so their figures may be the client's, not the server's",
                        style="yellow"))  # fmt: skip
    return out


def _time(records: Sequence[TrialRecord]) -> Text:
    spent = time_spent(records)
    total = sum(spent.phases.values())
    parts = [
        f"{p} {duration(spent.phases[p])} ({spent.phases[p] / total * 100:.0f}%)"
        for p in PHASES
        if total > 0 and spent.phases[p] > 0
    ]
    wall = f"; {duration(spent.wall_s)} wall clock" if spent.wall_s is not None else ""
    where = ": " + ", ".join(parts) if parts else ""
    return Text(f"time: {duration(spent.trials_s)} in trials{wall}{where}")


def studies_table(rows: Sequence[Mapping[str, object]], where: str) -> RenderableType:
    """`tui-tuner studies`: one row per study (`results.StudyView.summary`)."""
    if not rows:
        return Text(f"no study in {where}")
    table = Table(title=f"studies in {escape(where)}", title_justify="left",
                  caption_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)  # fmt: skip
    heads = ("study", "state", "trials", "best tok/s", "p95 ms", "age", "directory")
    cells = []
    for r in rows:
        budget = r.get("trials_budget")
        progress = f"{r['trials_done']}/{budget}" if budget else f"{r['trials_done']}"
        tok, p95 = r.get("best_output_tok_s"), r.get("best_request_latency_p95_ms")
        best = f"{tok:,.1f} (#{r['best_trial']})" if isinstance(tok, float) else "-"
        if r.get("pareto_size"):
            best += f" of {r['pareto_size']}"
        star = "*" if r.get("simulated") else ""
        directory = r.get("study_dir")
        cells.append((
            f"{r['name']}{star}", str(r["state"]), progress, best,
            f"{p95:,.0f}" if isinstance(p95, float) else "-", ago(r.get("age_s")),  # type: ignore[arg-type]
            Path(str(directory)).name if directory else str(r.get("storage") or ""),
        ))  # fmt: skip
        if star:
            table.caption = "* measured on the SIMULATED server (no GPU)"
    for i, head in enumerate(heads):
        last = i == len(heads) - 1
        width = max(len(head), *(len(c[i]) for c in cells))
        table.add_column(head, justify="left" if i < 2 or last else "right", no_wrap=True,
                         min_width=None if last else width, overflow="ellipsis")  # fmt: skip
    for c in cells:
        table.add_row(*(Text(v) for v in c))
    return table
