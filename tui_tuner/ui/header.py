"""The header line: study, state, what the trials count as, time, and the best result so far.

It is one line at any width, laid out on purpose: each part has a full form and shorter ones,
and when the line does not fit, the least important part is shortened first (the objective,
then the best trial's p95, the elapsed clock...), down to what an 80-column terminal shows:
the study, its state, the counts, the time left and the best throughput. When the tuner hands
out GPUs to trials side by side, it also says how many are busy ("GPUs 3/4 busy").
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text

from tui_tuner.ui.model import StudyModel

__all__ = ["gain_words", "header_text"]

_STATE_STYLE = {
    "running": "bold green",
    "paused": "bold yellow",
    "stopping": "bold yellow",
    "finished": "bold",
    "error": "bold red",
    "starting": "dim",
}


def _clock(seconds: float) -> str:
    s = int(seconds)
    if s >= 3600:
        return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}"
    return f"{s // 60:d}:{s % 60:02d}"


def gain_words(pct: float, *, lower_is_better: bool, name: str) -> tuple[str, str]:
    """A change against the baseline with better always a plus: ``("tok/s +12%", "green")``;
    a latency that grew 2.3% reads ``("p95 2.3% worse", "red")``, never ``+2.3%``."""
    better = -pct if lower_is_better else pct
    if round(better) == 0:
        return f"{name} ±0%", ""
    if lower_is_better:
        word = "better" if better > 0 else "worse"
        return f"{name} {abs(pct):.0f}% {word}", "green" if better > 0 else "red"
    return f"{name} {better:+.0f}%", "green" if better > 0 else "red"


@dataclass
class _Part:
    """One part of the header: its forms from the longest to the shortest (the last may be
    empty: the part is dropped), and how important it is (lower goes first)."""

    forms: list[Text]
    rank: int
    form: int = 0

    @property
    def text(self) -> Text:
        return self.forms[self.form]


def _t(*parts: str | tuple[str, str]) -> Text:
    return Text.assemble(*parts)


def header_text(model: StudyModel, width: int = 1000) -> Text:
    """The header for a terminal ``width`` columns wide."""
    cfg = model.config
    parts: list[_Part] = []
    name = cfg.study.name
    short_name = name if len(name) <= 14 else name[:13] + "…"
    parts.append(_Part([_t((f" {name} ", "bold reverse")),
                        _t((f" {short_name} ", "bold reverse"))], 9))  # fmt: skip
    if model.simulated or cfg.server.simulated:
        sim = "bold black on yellow"
        parts.append(_Part([_t(" ", (" SIMULATED ", sim)), _t(" ", (" SIM ", sim))], 5))
    parts.append(_Part([_t(f" {cfg.objective.kind}"), Text()], 1))
    parts.append(_Part([_t(" ", (model.state, _STATE_STYLE.get(model.state, "")))], 10))
    parts.append(_Part(_count_forms(model), 8))
    if model.gpus:  # the tuner hands out its GPUs to trials side by side
        busy = f"{model.gpus_busy()}/{len(model.gpus)}"
        parts.append(_Part([_t(f"  GPUs {busy} busy"), _t(f" GPUs {busy}"), Text()], 5))
    parts.append(_Part([_t(f"  {_clock(model.elapsed_s())}"), Text()], 3))
    eta = model.eta_s()
    if eta is not None and model.state in ("running", "paused"):
        parts.append(_Part([_t((f" (~{_clock(eta)} left)", "dim")),
                            _t((f" ~{_clock(eta)} left", "dim"))], 6))  # fmt: skip
    best = model.best()
    if best and best[0].measurement is not None:
        top, m = best[0], best[0].measurement
        parts.append(_Part([_t(("  best ", "bold"), (f"#{top.number}: ", "bold"),
                               (f"{m.output_tok_s:,.0f} tok/s", "bold")),
                            _t(("  best ", "bold"), (f"{m.output_tok_s:,.0f} tok/s", "bold"))],
                           7))  # fmt: skip
        if top.client_limited:
            parts.append(_Part([_t(("!", "bold yellow"))], 7))
        parts.append(_Part([_t(f", p95 {m.request_latency_p95_ms:,.0f} ms"), Text()], 2))
        gain = model.gain(top)
        if gain is not None and not top.baseline:
            words, style = gain_words(gain.output_tok_s_pct, lower_is_better=False, name="")
            parts.append(_Part([_t((f" ({words.strip()} vs baseline)", style)),
                                _t((f" {words.strip()}", style)), Text()], 4))  # fmt: skip
    noise = model.noise_pct()
    if noise is not None:
        parts.append(_Part([_t((f"  noise ±{noise:.1f}% (repeated runs)", "dim")),
                            _t((f"  noise ±{noise:.0f}%", "dim")), Text()], 4))  # fmt: skip
    if model.state in ("stopping", "finished", "error") and model.reason:
        parts.append(_Part([_t((f"  {model.reason}", "dim")), Text()], 0))
    _fit(parts, width)
    text = Text()
    for part in parts:
        text.append_text(part.text)
    text.truncate(width, overflow="ellipsis")
    return text


def _count_forms(model: StudyModel) -> list[Text]:
    """What the finished trials count as, in words that add up to the table's rows."""
    c = model.counts()
    budget = model.n_trials
    long = [f"measured {c.measured}"]
    short = [f"{c.measured} measured"]
    if c.failed:
        long.append(f"failed {c.failed}")
        short.append(f"{c.failed} failed")
    if c.pruned:
        long.append(f"pruned {c.pruned}")
        short.append(f"{c.pruned} pruned")
    full = "  " + " · ".join(long)
    terse = "  " + " ".join(short)
    if budget:
        full += f" · of {budget}"
        terse += f" /{budget}"
    extra = c.not_counted()
    if not extra:
        return [Text(full), Text(terse)]
    more = f" +{c.uncounted} not counted"
    return [Text(full + f" (+{' + '.join(extra)}, not counted)"), Text(terse + more), Text(terse)]


def _fit(parts: list[_Part], width: int) -> None:
    """Shorten the least important parts until the line fits (or nothing is left to shorten)."""
    while sum(p.text.cell_len for p in parts) > width:
        shorter = [p for p in parts if p.form < len(p.forms) - 1]
        if not shorter:
            return
        min(shorter, key=lambda p: p.rank).form += 1
