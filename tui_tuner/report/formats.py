"""`tui-tuner export --format ...`: a study's trials as JSON, CSV or a Markdown report.

(`command` and `yaml` are `export.trial_command` and `export.config_text`, shared with the `s`
key's files; `html` is `html.py`.) Every figure is the stored one; floats the user chose are
written as the user wrote them (`facts.tidy_params`). A study measured on the SIMULATED server
says so in every format: a note in JSON and Markdown, a ``simulated`` column in CSV.

Pure: records and the configuration in, text out.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import fields

from tui_tuner.core.config import StudyConfig
from tui_tuner.core.measurement import Measurement
from tui_tuner.core.objectives import best_trials, latency_words
from tui_tuner.core.trial import PHASES, TrialRecord, baseline_of
from tui_tuner.report.export import trial_command
from tui_tuner.report.facts import (
    SIMULATED_NOTE,
    noise_of,
    record_dict,
    study_facts,
    tidy_params,
)
from tui_tuner.report.load_plot import load_curve_lines

__all__ = ["MEASUREMENT_COLUMNS", "csv_text", "json_text", "markdown_text", "workload_text"]

MEASUREMENT_COLUMNS = tuple(
    f.name for f in fields(Measurement) if f.name not in ("warnings", "load_curve")
)
TIMING_COLUMNS = (*PHASES, "total")


def json_text(
    config: StudyConfig, records: Sequence[TrialRecord], setup: Mapping[str, object]
) -> str:
    """Every trial with its parameters, measurement, state, failure class and timings, and the
    study's facts (best, gain, noise, failures, time)."""
    data = {
        "format": "tui-tuner-study/1",
        **study_facts(config, records),
        "setup": dict(setup),
        "workload": workload_text(config),
        "trials": [record_dict(r, config.space) for r in records],
    }
    return json.dumps(data, indent=1, default=str) + "\n"


def csv_text(config: StudyConfig, records: Sequence[TrialRecord]) -> str:
    """One row per trial: number, state, parameters (one column each), every measured figure,
    each phase's seconds. ``simulated`` says on each row where the figures came from."""
    keys: list[str] = []
    for r in records:
        keys += [k for k in r.params if k not in keys]
    header = ["number", "state", "baseline", "feasible", "failure_class", "duplicate_of",
              "rerun", "simulated", *keys, *MEASUREMENT_COLUMNS, "sla_holds_up_to_streams",
              *(f"{t}_s" for t in TIMING_COLUMNS), "started_at", "finished_at", "note"]  # fmt: skip
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for r in records:
        d = record_dict(r, config.space)
        params: Mapping[str, object] = d["params"]  # type: ignore[assignment]
        m = r.measurement.to_dict() if r.measurement is not None else {}
        writer.writerow([
            r.number, d["state"], r.baseline, _cell(r.feasible), _cell(r.failure_class),
            _cell(r.duplicate_of), r.rerun, config.server.simulated,
            *(_cell(params.get(k)) for k in keys),
            *(_cell(m.get(c)) for c in MEASUREMENT_COLUMNS), _cell(_sla_streams(r)),
            *(_cell(r.timings.get(t)) for t in TIMING_COLUMNS),
            _cell(r.started_at), _cell(r.finished_at), r.note,
        ])  # fmt: skip
    return out.getvalue()


def _sla_streams(r: TrialRecord) -> int | None:
    """A goodput trial's answer: the highest concurrency at which the SLA held."""
    curve = None if r.measurement is None else r.measurement.load_curve
    return None if curve is None else curve.best_streams


def _cell(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    return value


def workload_text(config: StudyConfig) -> str:
    w = config.workload
    load = f"{w.streams} concurrent streams" if w.profile == "concurrent" else f"{w.rate} req/s"
    return (
        f"GuideLLM {w.profile}, {load}, {w.prompt_tokens} prompt / {w.output_tokens} output "
        f"tokens, {w.warmup_s:g} s warmup + {w.duration_s:g} s measured"
        + (f", x{w.repeats} (median kept)" if w.repeats > 1 else "")
        + (f", dataset {w.dataset}" if w.dataset else "")
    )


def _md(text: object) -> str:
    """A table cell: pipes escaped, one line."""
    return " ".join(str(text).splitlines()).replace("|", "\\|")


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _pct(value: object) -> str:
    return "-" if not isinstance(value, (int, float)) else f"{value:+.1f}%"


def _latency(value: object) -> str:
    """A latency's change: better always reads as better (lower is better)."""
    return "-" if not isinstance(value, (int, float)) else latency_words(value)


def _params_text(config: StudyConfig, r: TrialRecord) -> str:
    if r.baseline:
        return "vLLM defaults (baseline)"
    params = tidy_params(config.space, r.params)
    return " ".join(f"{k}={v}" for k, v in params.items()) or "-"


def top_trials(config: StudyConfig, records: Sequence[TrialRecord], n: int) -> list[TrialRecord]:
    """The ``n`` best measured feasible trials by the objective (the front first if Pareto)."""
    measured = [
        r for r in records
        if r.state == "complete" and r.measurement is not None and r.feasible
        and r.duplicate_of is None
    ]  # fmt: skip
    front = [r.number for r in best_trials(config.objective.kind, records)]
    latency = config.objective.kind == "latency"

    def key(r: TrialRecord) -> tuple[float, ...]:
        m = r.measurement
        assert m is not None
        if latency:
            return (m.request_latency_p95_ms, r.number)
        return (r.number not in front, -m.output_tok_s, r.number)

    return sorted(measured, key=key)[:n]


def markdown_text(
    config: StudyConfig,
    records: Sequence[TrialRecord],
    setup: Mapping[str, object],
    *,
    study_dir: str | None = None,
    top: int = 10,
) -> str:
    """A short report for a pull request or a wiki: set-up, baseline against best with the
    noise, the top trials, and how to reproduce."""
    facts = study_facts(config, records)
    lines = [f"# tui-tuner study `{config.study.name}`", ""]
    if config.server.simulated:
        lines += [f"> **SIMULATED**: {SIMULATED_NOTE}.", ""]
    budget = config.study.n_trials
    lines += ["## Set-up", "", "| | |", "|---|---|"]
    rows = [
        ("model", config.server.model),
        ("GPU", setup.get("gpu") or "not recorded"),
        ("vLLM", setup.get("vllm") or "not recorded"),
        ("GuideLLM", setup.get("guidellm") or "not recorded"),
        ("workload", workload_text(config)),
        ("objective", config.objective.kind + "".join(
            f", {t.metric} <= {t.limit:g}" for t in config.objective.sla)),
        ("trials", f"{facts['trials_done']} done" + (f" of {budget}" if budget else "")),
    ]  # fmt: skip
    lines += [f"| {a} | {_md(b)} |" for a, b in rows]
    lines += ["", "## Baseline against best", ""]
    lines += _result_table(facts)
    noise = noise_of(records)
    lines += ["", f"Noise: {noise.describe()}."]
    best = best_trials(config.objective.kind, records)
    lines += ["", "## Top trials", ""]
    lines += ["| trial | output tok/s | p95 latency ms | TTFT p95 ms | configuration |",
              "|---:|---:|---:|---:|---|"]  # fmt: skip
    for r in top_trials(config, records, top):
        m = r.measurement
        assert m is not None
        lines.append(
            f"| {r.number} | {_fmt(m.output_tok_s)} | {_fmt(m.request_latency_p95_ms)} | "
            f"{_fmt(m.ttft_p95_ms)} | {_md(_params_text(config, r))} |"
        )
    curve = best[0].measurement.load_curve if best and best[0].measurement else None
    if curve is not None:  # goodput: where the SLA holds, level by level
        lines += ["", "## Where the SLA holds", "", f"Trial {best[0].number}: {curve.words()}.",
                  "", "```text", *load_curve_lines(curve), "```"]  # fmt: skip
    lines += ["", "## Reproduce", ""]
    if best:
        lines += [f"The best configuration (trial {best[0].number}):", "", "```sh",
                  trial_command(config, best[0]), "```", ""]  # fmt: skip
    if study_dir:
        lines += ["Continue or re-run the study:", "", "```sh",
                  f"tui-tuner resume {study_dir}", "```", ""]  # fmt: skip
    lines.append("Made with tui-tuner.")
    return "\n".join(lines) + "\n"


def _result_table(facts: Mapping[str, object]) -> list[str]:
    rows: list[tuple[str, Mapping[str, object]]] = []
    base = facts.get("baseline")
    if isinstance(base, Mapping):
        rows.append(("baseline", base))
    for entry in facts.get("best") or []:  # type: ignore[attr-defined]
        if not (isinstance(base, Mapping) and entry["number"] == base["number"]):
            rows.append(("best", entry))
    if not rows:
        return ["No trial was measured."]
    out = ["| | trial | output tok/s | p95 latency ms | TTFT p95 ms | gain tok/s | p95 vs base |",
           "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for label, e in rows:
        out.append(
            f"| {label} | {e['number']} | {_fmt(e['output_tok_s'])} | "  # type: ignore[arg-type]
            f"{_fmt(e['request_latency_p95_ms'])} | {_fmt(e['ttft_p95_ms'])} | "  # type: ignore[arg-type]
            f"{_pct(e['gain_output_tok_s_pct'])} | {_latency(e['gain_request_latency_p95_pct'])} |"
        )
    return out


def baseline_number(records: Sequence[TrialRecord]) -> int | None:
    base = baseline_of(records)
    return None if base is None else base.number
