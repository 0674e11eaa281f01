"""When ``objective.kind: goodput`` can run, checked with the rest of its file.

Goodput is the highest load that still meets the SLA, found by GuideLLM's goodput search on the
running server (`core/load_curve.py`). That search needs latency objectives, varies the
concurrency itself (so the study must not search it too, nor use a rate profile), and takes
the SLA terms only when they map onto its objectives (`load_curve.goodput_slo`).
"""

from __future__ import annotations

from collections.abc import Mapping

from tui_tuner.core.config import ObjectiveSettings, WorkloadSettings
from tui_tuner.core.config_problems import Context
from tui_tuner.core.load_curve import goodput_slo

__all__ = ["check_goodput"]


def check_goodput(
    ctx: Context,
    objective: ObjectiveSettings,
    workload: WorkloadSettings,
    paths: Mapping[str, str],
) -> None:
    """Every reason a goodput objective cannot run, each at its key."""
    if objective.kind != "goodput":
        return
    if not objective.sla:
        ctx.problem(
            "objective.sla", None,
            "required by objective.kind: goodput (the latency limits the load is searched "
            "against), such as {p95_ttft_ms: 500, p95_itl_ms: 50}",
        )  # fmt: skip
    else:
        try:
            goodput_slo([(t.metric, t.limit) for t in objective.sla])
        except ValueError as err:
            ctx.problem("objective.sla", None, f"{err} (objective.kind: goodput)")
    if workload.profile != "concurrent":
        ctx.problem(
            "workload.profile", workload.profile,
            "objective.kind: goodput searches the concurrency (GuideLLM's goodput profile); "
            "use profile: concurrent (workload.streams is the first level probed)",
        )  # fmt: skip
    for key in ("workload.streams", "workload.rate"):
        if key in paths:
            ctx.problem(
                paths[key], None,
                f"objective.kind: goodput finds the load itself; do not search {key}",
            )  # fmt: skip
    if workload.streams is not None and workload.streams > objective.max_streams:
        ctx.problem(
            "objective.max_streams", objective.max_streams,
            f"below workload.streams ({workload.streams}), the first level probed",
        )  # fmt: skip
