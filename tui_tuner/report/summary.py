"""The end of a study in words and numbers: best trial(s), gain over the baseline, the command.

Pure: it reads TrialRecords and returns Rich renderables and text; the console sink prints them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from rich.table import Table

from tui_tuner.core.commands import serve_command
from tui_tuner.core.config import StudyConfig
from tui_tuner.core.objectives import best_trials, gain_over
from tui_tuner.core.trial import TrialRecord, baseline_of

__all__ = ["baseline_of", "best_table", "format_params", "outcome_lines"]


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
    title = f"{sim}study {config.study.name}: objective {config.objective.kind}"
    table = Table(title=title, title_justify="left", caption_justify="left")
    table.add_column("trial", justify="right", no_wrap=True)
    for name in ("output tok/s", "p95 latency ms", "TTFT p95 ms", "gain tok/s", "gain p95"):
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
            "-" if gain is None or r is base else f"{gain.request_latency_p95_pct:+.1f}%",
        )
        captions.append(f"trial {r.number}: {format_params(r.params, baseline=r.baseline)}")
    table.caption = "\n".join(captions) or "no measured trial yet"
    return table


def outcome_lines(config: StudyConfig, records: Sequence[TrialRecord]) -> list[str]:
    """Counts by state and failure class, then the command of the best trial."""
    counts = Counter(
        "interrupted" if r.interrupted else r.label
        for r in records
        if r.state not in ("waiting", "running")
    )
    lines = ["trials: " + ", ".join(f"{n} {label}" for label, n in sorted(counts.items()))]
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
    if config.server.simulated:
        lines.append(
            "  (measured on the SIMULATED server: a starting point to verify on real hardware)"
        )
    return lines
