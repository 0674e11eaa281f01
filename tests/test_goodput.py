"""objective.kind: goodput: the highest load meeting the SLA, found by GuideLLM's goodput search.

The SLA terms mapped onto GuideLLM's objectives, its command line, the real report of a search
on the simulated server read into a measurement with its load curve, the configuration's
checks, a study against fake adapters, and what the trial detail and the exports say.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from tests.conftest import FAST_PROFILE, SimProcess
from tests.fakes.engine import Fakes, make_config, measurement
from tui_tuner.adapters.guidellm import run_guidellm
from tui_tuner.adapters.guidellm.command import GuidellmWorkload, build_guidellm_command
from tui_tuner.adapters.guidellm.report import parse_guidellm_report
from tui_tuner.core.config import SlaTerm
from tui_tuner.core.config_load import parse_config
from tui_tuner.core.errors import UserError
from tui_tuner.core.load_curve import GoodputSearch, LoadCurve, goodput_slo
from tui_tuner.core.measurement import Measurement
from tui_tuner.core.trial import TrialRecord
from tui_tuner.engine.orchestrator import Orchestrator
from tui_tuner.engine.ports import BenchRequest, ProgressCallback
from tui_tuner.engine.study import StudyStore, default_storage_url
from tui_tuner.engine.trial_runner import TrialRunner
from tui_tuner.report.formats import csv_text, markdown_text
from tui_tuner.report.load_plot import load_curve_plot
from tui_tuner.report.summary import outcome_lines
from tui_tuner.ui.model import StudyModel
from tui_tuner.ui.screens.detail import detail_text

FIXTURE = Path(__file__).parent / "fixtures" / "guidellm" / "report_goodput.json"


def test_sla_terms_map_onto_guidellm_objectives() -> None:
    slo, target = goodput_slo([("ttft_p95_ms", 500.0), ("request_latency_p95_ms", 4000.0),
                               ("itl_p95_ms", 50.0)])  # fmt: skip
    assert slo == {"ttft_ms": 500.0, "e2el_ms": 4000.0, "tpot_ms": 50.0} and target == 0.95
    assert goodput_slo([("ttft_p99_ms", 1.0)])[1] == 0.99
    with pytest.raises(ValueError, match="one percentile"):
        goodput_slo([("ttft_p95_ms", 1.0), ("itl_p50_ms", 1.0)])
    with pytest.raises(ValueError, match="p50_itl_ms"):
        goodput_slo([("tpot_p50_ms", 1.0)])
    with pytest.raises(ValueError, match="at least one"):
        goodput_slo([])


def test_the_command_asks_for_guidellms_goodput_profile() -> None:
    search = GoodputSearch({"ttft_ms": 300.0, "e2el_ms": 1500.0}, 0.95, 2, 64, 5)
    w = GuidellmWorkload(64, 32, streams=2, max_duration_s=7, warmup=1, cooldown=0,
                         goodput=search)  # fmt: skip
    cmd = build_guidellm_command("guidellm", "http://h:1", "m", None, w, Path("r.json"))
    profile = cmd[cmd.index("--profile") + 1]
    assert profile == ("kind=goodput,warmup=1,cooldown=0,initial_streams=2,max_streams=64,"
                       "max_probes=5,target_attainment=0.95")  # fmt: skip
    metrics = json.loads(cmd[cmd.index("--metrics") + 1])
    assert metrics == {"kind": "generative", "sample_size": 0,
                       "slo": {"ttft_ms": 300.0, "e2el_ms": 1500.0}}  # fmt: skip
    with pytest.raises(ValueError, match="concurrent"):
        GuidellmWorkload(64, 32, profile="constant", rate=1.0, goodput=search)


def test_a_real_goodput_report_reads_as_the_level_found_with_its_curve() -> None:
    m = parse_guidellm_report(FIXTURE)
    curve = m.load_curve
    assert curve is not None
    assert [lv.streams for lv in curve.levels] == [2, 4, 8, 16, 32]
    assert curve.best_streams == 16 and curve.lowest_failing_streams == 32
    assert curve.stop_reason == "max_probes_exhausted"
    assert curve.slo == {"ttft_ms": 300.0, "e2el_ms": 1500.0}
    assert curve.best is not None and m.output_tok_s == curve.best.output_tok_s
    assert [lv.passed for lv in curve.levels] == [True, True, True, True, False]
    assert Measurement.from_dict(json.loads(json.dumps(m.to_dict()))) == m
    assert curve.words() == "SLA holds up to 16 streams (fails at 32; max_probes_exhausted)"
    plot = load_curve_plot(curve)
    assert plot is not None and "SLA 1500 ms" in plot.plain and "✗" in plot.plain
    # The trial detail (TUI) shows the curve as a table and a plot.
    record = TrialRecord(3, "complete", {"max_num_seqs": 8}, measurement=m, server_of=1)
    shown = detail_text(record, StudyModel(make_config(Path("."), [8])))
    assert "Load curve" in shown and "SLA 1500 ms" in shown and "highest meeting" in shown
    assert "measured on the server trial 1 started" in shown
    # Any other report: its last benchmark, no curve.
    concurrent = FIXTURE.with_name("report_concurrent.json")
    assert parse_guidellm_report(concurrent).load_curve is None


GOODPUT_YAML = """
study: {name: g, n_trials: 2}
server: {model: m, command: [fake-serve]}
workload: {streams: 4}
objective:
  kind: goodput
"""


def _problems(text: str, tmp_path: Path) -> str:
    path = tmp_path / "study.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as err:
        parse_config(text, path)
    return str(err.value)


def test_goodput_needs_an_sla_it_can_search_against(tmp_path: Path) -> None:
    said = _problems(GOODPUT_YAML, tmp_path)
    assert "study.yaml" in said and "objective.sla" in said and "goodput" in said
    said = _problems(GOODPUT_YAML + "  sla: {p50_tpot_ms: 20}\n", tmp_path)
    assert "p50_itl_ms" in said
    searched = GOODPUT_YAML + "  sla: {p95_ttft_ms: 500}\nsearch_space:\n" \
        "  workload.streams: {options: [4, 8]}\n"  # fmt: skip
    assert "do not search workload.streams" in _problems(searched, tmp_path)


class GoodputFakes(Fakes):
    """The fake benchmark, answering a goodput search with the real report's curve: the level
    found carries this configuration's throughput; --max-num-seqs 9 meets the SLA nowhere."""

    requests: list[BenchRequest]

    async def run(
        self, request: BenchRequest, on_line: object, on_progress: ProgressCallback
    ) -> Measurement:
        self.requests = [*getattr(self, "requests", []), request]
        m = await super().run(request, on_line, on_progress)  # type: ignore[arg-type]
        curve = parse_guidellm_report(FIXTURE).load_curve
        assert curve is not None and request.goodput is not None
        if "9" in self.launched[-1]:
            curve = replace(curve, best_streams=None, lowest_failing_streams=2)
        return replace(m, load_curve=curve, ttft_p95_ms=100.0)


async def test_a_goodput_study_maximises_the_throughput_at_the_load_found(tmp_path: Path) -> None:
    sla = (SlaTerm("p95_ttft_ms", "ttft_p95_ms", 300.0),)
    config = make_config(tmp_path, [8, 9, 16], n_trials=4, kind="goodput", sla=sla)
    config = replace(config, workload=replace(config.workload, streams=2))
    fakes = GoodputFakes()
    store = StudyStore(config, default_storage_url(tmp_path))
    runner = TrialRunner(config, tmp_path, fakes, fakes, fakes, lambda e: None)
    orch = Orchestrator(config, store, runner, lambda e: None, study_dir=tmp_path)
    outcome = await orch.run()
    search = fakes.requests[0].goodput
    assert search == GoodputSearch({"ttft_ms": 300.0}, 0.95, 2, 1024, 15)
    by_seqs = {r.params.get("max_num_seqs"): r for r in outcome.records}
    assert by_seqs[16].values == (measurement(1600.0).output_tok_s,)
    assert by_seqs[16].feasible is True
    assert by_seqs[9].values == (0.0,) and by_seqs[9].feasible is False
    stored = by_seqs[16].measurement
    assert stored is not None and isinstance(stored.load_curve, LoadCurve)
    assert "SLA holds up to 16 streams" in markdown_text(config, outcome.records, {})
    said = outcome_lines(config, outcome.records)  # the end of a study, headless or TUI
    assert "  SLA holds up to 16 streams (fails at 32; max_probes_exhausted)" in said
    header, *rows = csv_text(config, outcome.records).splitlines()
    column = header.split(",").index("sla_holds_up_to_streams")
    assert {row.split(",")[column] for row in rows} >= {"16", ""}


@pytest.mark.slow
async def test_guidellms_goodput_search_on_the_simulated_server(
    start_sim: Callable[..., SimProcess], tiny_model: Path, guidellm_exe: Path, tmp_path: Path
) -> None:
    """The command this tuner builds, run by the real GuideLLM 0.8.1 against sim-serve with
    max-num-seqs 4: the search passes the low levels, the report reads as the level found."""
    sim = start_sim("--max-num-seqs", "4", "--enforce-eager", "--sim-profile-file",
                    str(FAST_PROFILE), model=str(tiny_model))  # fmt: skip
    search = GoodputSearch({"ttft_ms": 300.0, "e2el_ms": 1500.0}, 0.95, 1, 32, 4)
    workload = GuidellmWorkload(64, 32, streams=1, max_duration_s=5, warmup=1, cooldown=0,
                                seed=0, goodput=search)  # fmt: skip
    report = tmp_path / "report.json"
    cmd = build_guidellm_command(guidellm_exe, sim.url, str(tiny_model), tiny_model, workload,
                                 report)  # fmt: skip
    lines: list[str] = []
    code = await run_guidellm(cmd, env={"HF_HUB_OFFLINE": "1"}, on_line=lines.append,
                              log_path=tmp_path / "guidellm.log", timeout_s=400)  # fmt: skip
    assert code == 0, "\n".join(lines[-30:])
    m = parse_guidellm_report(report)
    curve = m.load_curve
    assert curve is not None and curve.slo == {"ttft_ms": 300.0, "e2el_ms": 1500.0}
    assert 1 <= len(curve.levels) <= 4 and curve.levels[0].streams == 1
    assert curve.levels[0].passed  # one stream on an idle server meets a 300 ms TTFT
    assert curve.best_streams is not None and m.output_tok_s == curve.best.output_tok_s  # type: ignore[union-attr]
