"""``workload.warmup_s``: seconds, or ``auto`` with a bound (``workload.warmup_max_s``).

A fixed warm-up is a guess: too short and the measured window holds the ramp-up (every stream's
first prefill at once), which ranks configurations by how they start; too long and every trial
pays for it. ``auto`` lets the run's own data say where the throughput settled, no later than
the bound (``adapters/guidellm/settle.py`` explains how, and why the tuner computes those
figures itself).
"""

from __future__ import annotations

from tui_tuner.core.config import ObjectiveSettings, WorkloadSettings
from tui_tuner.core.config_problems import Context, Invalid, Section, show, to_float

__all__ = ["AUTO", "DEFAULT_WARMUP_MAX_S", "check_warmup", "read_warmup"]

AUTO = "auto"
#: The bound of ``warmup_s: auto`` unless ``warmup_max_s`` gives one.
DEFAULT_WARMUP_MAX_S = 30.0


def _seconds_or_auto(value: object, name: str) -> float:
    if isinstance(value, str) and value.strip().lower() != AUTO:
        raise Invalid(f"{show(value)} is not allowed; give seconds (such as 10) or auto")
    return to_float(ge=0)(value, name)


def read_warmup(ctx: Context, sec: Section, default_s: float) -> tuple[float, float | None]:
    """(warmup_s, warmup_max_s): with ``auto`` both are the bound, else (seconds, None)."""
    raw = sec.raw("warmup_s")
    if isinstance(raw, str) and raw.strip().lower() == AUTO:
        bound = sec.read("warmup_max_s", DEFAULT_WARMUP_MAX_S, to_float(gt=0))
        return bound, bound
    if sec.has("warmup_max_s"):
        ctx.problem(
            sec.path("warmup_max_s"),
            sec.raw("warmup_max_s"),
            "bounds warmup_s: auto only; write warmup_s: auto, or remove warmup_max_s",
        )
    return sec.read("warmup_s", default_s, _seconds_or_auto), None


def check_warmup(ctx: Context, workload: WorkloadSettings, objective: ObjectiveSettings) -> None:
    """``auto`` cuts one load level's transient; a goodput search probes many levels in one
    GuideLLM run, each with GuideLLM's own warm-up, which ``auto`` would leave at zero."""
    if workload.warmup_auto and objective.kind == "goodput":
        ctx.problem(
            "workload.warmup_s",
            AUTO,
            "auto measures one load level; a goodput search probes many in one GuideLLM run, "
            "each with GuideLLM's own warm-up: give warmup_s in seconds",
        )
