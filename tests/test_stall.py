"""A server that froze inside the measured window (SIGSTOP, a swapping host, a stuck driver):
its figure is not the configuration's, so the trial runs again and is never the best.

The unit part reads GuideLLM report timings; the end-to-end part stops the simulated server's
process group for a few seconds while the fake GuideLLM (which writes the real timings of the
requests it sent) measures it.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.fakes.engine import measurement
from tests.fakes.studies import leftovers, records, sim_study, start, tuner, wait_for
from tui_tuner.adapters.guidellm.report import longest_stall
from tui_tuner.core.measurement import STALL_MIN_S, stalled


def bench(spans: list[tuple[float, float, float]], begin: float, end: float) -> dict[str, Any]:
    """A report's benchmark with requests (start, first token, end)."""
    items = [
        {
            "info": {
                "timings": {
                    "request_start": s,
                    "first_token_iteration": f,
                    "last_token_iteration": e,
                    "request_end": e,
                }
            }
        }
        for s, f, e in spans
    ]
    return {"start_time": begin, "end_time": end, "requests": {"successful": items}}


def steady(begin: float, end: float, every: float = 0.2) -> list[tuple[float, float, float]]:
    out, t = [], begin
    while t + every <= end:
        out.append((t, t + every / 4, t + every))
        t += every
    return out


def test_the_longest_stall_is_the_longest_time_without_a_token_with_requests_in_flight() -> None:
    assert longest_stall(bench(steady(0, 10), 0, 10)) == 0.0
    # Frozen from 4 s to 9 s: the request in flight then ends late.
    frozen = [*steady(0, 4), (4.0, 9.0, 9.1), *steady(9.2, 12)]
    assert longest_stall(bench(frozen, 0, 12)) == pytest.approx(5.0)
    # Nothing in flight (a rate-limited client idling) is no stall.
    idle = [*steady(0, 4), *steady(9.2, 12)]
    assert longest_stall(bench(idle, 0, 12)) < 0.1  # the next request's first 50 ms
    # A report without timings says nothing.
    assert longest_stall({"requests": {"successful": [{"info": {}}]}}) == 0.0


def test_a_stall_is_judged_against_the_request_latency() -> None:
    m = measurement(1000.0, p95_ms=400.0)  # p50 200 ms: the floor is STALL_MIN_S
    assert not stalled(m)
    assert stalled(_with(m, STALL_MIN_S + 0.5))
    slow = measurement(1000.0, p95_ms=20_000.0)  # p50 10 s: seconds without a token are normal
    assert not stalled(_with(slow, 15.0)) and stalled(_with(slow, 31.0))


def _with(m: Any, stall_s: float) -> Any:
    from dataclasses import replace

    return replace(m, stall_s=stall_s)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_server_frozen_inside_the_window_is_measured_again(
    tmp_path: Path, tiny_model: Path
) -> None:
    config = sim_study(tmp_path, tiny_model, name="stall", study="n_trials: 1, baseline: false",
                       options=(8,), duration_s=8)  # fmt: skip
    study, events = tmp_path / "study", tmp_path / "events.jsonl"
    proc = start(tuner("tune", config, "--study-dir", str(study), "--events-jsonl", str(events)))
    wait_for(events, '"phase": "measuring"', proc)
    time.sleep(1)
    server = next(
        p for p in psutil.process_iter(["cmdline"])
        if "stall-profile.yaml" in " ".join(p.info["cmdline"] or ()) and p.pid != proc.pid
    )  # fmt: skip
    group = os.getpgid(server.pid)
    os.killpg(group, signal.SIGSTOP)
    time.sleep(4)
    os.killpg(group, signal.SIGCONT)
    output, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, output[-3000:]
    done = records(study)
    first, again = done[0], done[1]
    assert first.rerun and "measured through a stall" in first.note, first.note
    assert first.measurement is not None and first.measurement.stall_s >= 3.5
    assert again.params == first.params and again.state == "complete"
    assert again.measurement is not None and not stalled(again.measurement)
    assert "best: trial 1" in output
    assert not leftovers(str(tmp_path))
