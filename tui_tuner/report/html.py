"""`tui-tuner export --format html`: one self-contained HTML file with the study's plots.

The history (each trial's figure and the best so far), the Pareto front (p95 latency against
output tok/s, with the SLA limits and the baseline marked), the parameter importances, and the
trial table. Plotly draws the plots; its JavaScript is inlined once (``include_plotlyjs=True``
on the first figure), so the file opens without a network. Plotly is the ``[report]`` extra:
without it, `PlotlyMissing` says how to get it.

Pure apart from importing plotly: records and the configuration in, text out.
"""

from __future__ import annotations

import html
import importlib.util
from collections.abc import Mapping, Sequence
from typing import Any

from tui_tuner.core.config import StudyConfig
from tui_tuner.core.errors import UserError
from tui_tuner.core.objectives import best_trials, pareto_front
from tui_tuner.core.trial import TrialRecord, baseline_of
from tui_tuner.report.export import trial_command
from tui_tuner.report.facts import SIMULATED_NOTE, noise_of, tidy_params
from tui_tuner.report.formats import top_trials, workload_text

__all__ = ["PlotlyMissing", "html_report", "plotly_available"]

INSTALL_HINT = "pip install 'tui-tuner[report]' (or pip install plotly)"


class PlotlyMissing(UserError):
    """The html format needs plotly, an optional extra."""


def plotly_available() -> bool:
    return importlib.util.find_spec("plotly") is not None


def html_report(
    config: StudyConfig,
    records: Sequence[TrialRecord],
    setup: Mapping[str, object],
    importances: Mapping[str, float] | str,
) -> str:
    """The whole HTML document. ``importances``: by parameter, or why there are none."""
    if not plotly_available():
        raise PlotlyMissing(f"the html format needs plotly, which is not installed: {INSTALL_HINT}")
    import plotly.io as pio

    sim = "SIMULATED: " if config.server.simulated else ""
    figures = [_history(config, records, sim), _pareto(config, records, sim)]
    if isinstance(importances, Mapping) and importances:
        figures.append(_importances(importances, sim))
    parts = [
        pio.to_html(fig, include_plotlyjs=(i == 0), full_html=False, default_width="100%",
                    default_height="460px", config={"displaylogo": False})
        for i, fig in enumerate(figures)
    ]  # fmt: skip
    e = html.escape
    body = [f"<h1>tui-tuner study {e(config.study.name)}</h1>"]
    if config.server.simulated:
        body.append(f'<p class="sim"><b>SIMULATED</b>: {e(SIMULATED_NOTE)}.</p>')
    body.append(_setup_table(config, records, setup))
    body.append(f"<p>Noise: {e(noise_of(records).describe())}.</p>")
    best = best_trials(config.objective.kind, records)
    if best:
        body.append(f"<p>Best: trial {best[0].number}. Run it with:</p>"
                    f"<pre>{e(trial_command(config, best[0]))}</pre>")  # fmt: skip
    body += ["<h2>History</h2>", parts[0], "<h2>Pareto front</h2>", parts[1]]
    body.append("<h2>Parameter importances</h2>")
    if isinstance(importances, str):
        body.append(f"<p>None: {e(importances)}.</p>")
    elif not importances:
        body.append("<p>None: no parameter was searched.</p>")
    else:
        body.append(parts[2])
    body += ["<h2>Trials</h2>", _trial_table(config, records)]
    title = f"{sim}tui-tuner study {config.study.name}"
    return (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
        f"<title>{e(title)}</title><style>{_STYLE}</style></head>\n<body>\n"
        + "\n".join(body) + "\n</body></html>\n"
    )  # fmt: skip


_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
td, th { border: 1px solid #ccc; padding: 2px 8px; text-align: right; }
td.l, th.l { text-align: left; }
.sim { background: #fff3cd; border: 1px solid #e0b000; padding: 0.5em; }
pre { background: #f4f4f4; padding: 0.5em; white-space: pre-wrap; }
"""


def _setup_table(
    config: StudyConfig, records: Sequence[TrialRecord], setup: Mapping[str, object]
) -> str:
    rows = [
        ("model", config.server.model),
        ("GPU", setup.get("gpu") or "not recorded"),
        ("vLLM", setup.get("vllm") or "not recorded"),
        ("GuideLLM", setup.get("guidellm") or "not recorded"),
        ("workload", workload_text(config)),
        ("objective", config.objective.kind),
        *((f"SLA {t.key}", f"<= {t.limit:g}") for t in config.objective.sla),
        ("trials", str(len(records))),
    ]
    cells = "".join(
        f'<tr><th class="l">{html.escape(a)}</th><td class="l">{html.escape(str(b))}</td></tr>'
        for a, b in rows
    )
    return f"<table>{cells}</table>"


def _measured(records: Sequence[TrialRecord]) -> list[TrialRecord]:
    return [
        r for r in records
        if r.state == "complete" and r.measurement is not None and r.duplicate_of is None
    ]  # fmt: skip


def _label(config: StudyConfig, r: TrialRecord) -> str:
    if r.baseline:
        return f"trial {r.number}: vLLM defaults (baseline)"
    params = tidy_params(config.space, r.params)
    return f"trial {r.number}: " + " ".join(f"{k}={v}" for k, v in params.items())


def _history(config: StudyConfig, records: Sequence[TrialRecord], sim: str) -> Any:
    import plotly.graph_objects as go

    latency = config.objective.kind == "latency"
    metric = "request_latency_p95_ms" if latency else "output_tok_s"
    unit = "p95 request latency (ms)" if latency else "output tok/s"
    fig = go.Figure()
    groups: dict[str, list[TrialRecord]] = {"feasible": [], "infeasible": [], "baseline": []}
    for r in _measured(records):
        groups["baseline" if r.baseline else "feasible" if r.feasible else "infeasible"].append(r)
    style = {"feasible": ("circle", "#1f77b4"), "infeasible": ("circle-open", "#999999"),
             "baseline": ("star", "#ff7f0e")}  # fmt: skip
    for name, rows in groups.items():
        if rows:
            symbol, colour = style[name]
            fig.add_trace(go.Scatter(
                x=[r.number for r in rows], y=[getattr(r.measurement, metric) for r in rows],
                mode="markers", name=name, text=[_label(config, r) for r in rows],
                marker={"symbol": symbol, "size": 11, "color": colour}))  # fmt: skip
    failed = [r for r in records if r.state == "failed" and not r.interrupted]
    if failed:
        fig.add_trace(go.Scatter(
            x=[r.number for r in failed], y=[0] * len(failed), mode="markers",
            name="failed", text=[f"trial {r.number}: {r.label}" for r in failed],
            marker={"symbol": "x", "size": 10, "color": "#d62728"}))  # fmt: skip
    xs, ys, best = [], [], None
    for r in sorted(_measured(records), key=lambda r: r.number):
        if not r.feasible:
            continue
        v = getattr(r.measurement, metric)
        best = v if best is None else (min(best, v) if latency else max(best, v))
        xs.append(r.number)
        ys.append(best)
    if xs:
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name="best so far",
                                 line={"shape": "hv", "color": "#2ca02c"}))  # fmt: skip
    fig.update_layout(title=f"{sim}{unit} by trial", xaxis_title="trial", yaxis_title=unit,
                      template="plotly_white")  # fmt: skip
    return fig


def _pareto(config: StudyConfig, records: Sequence[TrialRecord], sim: str) -> Any:
    import plotly.graph_objects as go

    measured = _measured(records)
    fig = go.Figure()
    for feasible, name, colour in ((True, "feasible", "#1f77b4"),
                                   (False, "infeasible", "#999999")):  # fmt: skip
        rows = [r for r in measured if bool(r.feasible) == feasible and not r.baseline]
        if rows:
            fig.add_trace(go.Scatter(
                x=[r.measurement.request_latency_p95_ms for r in rows],  # type: ignore[union-attr]
                y=[r.measurement.output_tok_s for r in rows],  # type: ignore[union-attr]
                mode="markers", name=name, text=[_label(config, r) for r in rows],
                marker={"size": 10, "color": colour}))  # fmt: skip
    ok = [r for r in measured if r.feasible]
    points = [(r.measurement.output_tok_s, r.measurement.request_latency_p95_ms) for r in ok]  # type: ignore[union-attr]
    front = sorted((points[i] for i in pareto_front(points)), key=lambda p: p[1])
    if front:
        fig.add_trace(go.Scatter(x=[p[1] for p in front], y=[p[0] for p in front],
                                 mode="lines+markers", name="Pareto front",
                                 line={"shape": "hv", "color": "#2ca02c"}))  # fmt: skip
    base = baseline_of(records)
    if base is not None and base.measurement is not None:
        fig.add_trace(go.Scatter(
            x=[base.measurement.request_latency_p95_ms], y=[base.measurement.output_tok_s],
            mode="markers", name=f"baseline (trial {base.number})",
            marker={"symbol": "star", "size": 18, "color": "#ff7f0e"}))  # fmt: skip
    for term in config.objective.sla:
        if term.metric == "request_latency_p95_ms":
            fig.add_vline(x=term.limit, line_dash="dash", line_color="#d62728",
                          annotation_text=f"SLA {term.key} <= {term.limit:g}")  # fmt: skip
    others = [f"{t.key} <= {t.limit:g}" for t in config.objective.sla
              if t.metric != "request_latency_p95_ms"]  # fmt: skip
    note = f" (also SLA: {', '.join(others)})" if others else ""
    fig.update_layout(title=f"{sim}output tok/s against p95 request latency{note}",
                      xaxis_title="p95 request latency (ms)", yaxis_title="output tok/s",
                      template="plotly_white")  # fmt: skip
    return fig


def _importances(importances: Mapping[str, float], sim: str) -> Any:
    import plotly.graph_objects as go

    items = sorted(importances.items(), key=lambda kv: kv[1])
    fig = go.Figure(go.Bar(x=[v for _, v in items], y=[k for k, _ in items], orientation="h",
                           marker={"color": "#9467bd"}))  # fmt: skip
    fig.update_layout(title=f"{sim}parameter importances (fANOVA, first objective)",
                      xaxis_title="share of the variance explained",
                      template="plotly_white")  # fmt: skip
    return fig


def _trial_table(config: StudyConfig, records: Sequence[TrialRecord]) -> str:
    e = html.escape
    head = ("trial", "state", "output tok/s", "p95 latency ms", "TTFT p95 ms", "configuration")
    left = ("state", "configuration")
    rows = [
        "<tr>"
        + "".join(f'<th class="l">{h}</th>' if h in left else f"<th>{h}</th>" for h in head)
        + "</tr>"
    ]
    top = {r.number for r in top_trials(config, records, 1)}
    for r in records:
        m = r.measurement
        figures = (
            ("-", "-", "-") if m is None else
            (f"{m.output_tok_s:,.1f}", f"{m.request_latency_p95_ms:,.1f}", f"{m.ttft_p95_ms:,.1f}")
        )  # fmt: skip
        state = "interrupted" if r.interrupted else r.label
        mark = " (best)" if r.number in top else ""
        if r.client_limited and m is not None:
            mark += " (client-limited)"
        config_text = _label(config, r).partition(": ")[2]
        rows.append(
            f'<tr><td>{r.number}</td><td class="l">{e(state)}{mark}</td>'
            + "".join(f"<td>{v}</td>" for v in figures)
            + f'<td class="l">{e(config_text)}</td></tr>'
        )
    return "<table>" + "".join(rows) + "</table>"
