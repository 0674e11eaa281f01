"""`show`, `studies` and `export` (issue 12): each format gives back the study's own numbers,
the command has no float artefacts, a study another process holds opens read-only, and every
``--json`` parses. The studies are fake-adapter runs (a second each); the browser check of the
HTML report is in test_results_html.py, a real simulated study in test_results_sim.py."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import importlib.util
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from tests.conftest import ROOT
from tests.fakes.engine import Fakes, measurement
from tui_tuner.cli import build_parser, main
from tui_tuner.core.config_load import load_config
from tui_tuner.core.trial import TrialRecord
from tui_tuner.engine.orchestrator import Orchestrator
from tui_tuner.engine.records import record_attrs
from tui_tuner.engine.study import StudyStore, default_storage_url
from tui_tuner.engine.trial_runner import TrialRunner
from tui_tuner.report.export import config_entries
from tui_tuner.report.facts import noise_of, tidy_value

CONFIG = """
study: {{name: {name}, seed: 1, sampler: grid, n_trials: 11, noise_repeats: 1,
        remeasure_top: 0{storage}}}
server: {{command: ["fake-serve"], model: org/model-1b, flags: {{max_model_len: 4096}}}}
workload: {{duration_s: 1, warmup_s: 0, streams: 8}}
objective: {objective}
search_space:
  max_num_seqs: {{options: [8, 16, 3]}}
  gpu_memory_utilization: {{type: float, low: 0.8, high: 0.9, step: 0.05}}
"""
#: The injected best trial's value: what Optuna's step arithmetic gives for 0.85.
ARTEFACT = 0.8500000000000001


def make_study(
    directory: Path,
    name: str,
    storage: str | None = None,
    objective: str = "{kind: throughput}",
    best_p95_ms: float = 900.0,
) -> Path:
    """A finished fake-adapter study in ``directory``: the baseline, the nine configurations of
    its grid (max_num_seqs 3 fails as oom_startup), and an injected best trial whose float
    has the artefact and three repeats."""
    directory.mkdir(parents=True)
    extra = f", storage: '{storage}'" if storage else ""
    text = CONFIG.format(name=name, storage=extra, objective=objective)
    (directory / "config.yaml").write_text(text)
    config = load_config(directory / "config.yaml")
    url = storage or default_storage_url(directory)
    fakes = Fakes()
    store = StudyStore(config, url)
    runner = TrialRunner(config, directory, fakes, fakes, fakes, lambda e: None)
    asyncio.run(Orchestrator(config, store, runner, lambda e: None, study_dir=directory).run())
    pareto = "pareto" in objective
    values = (4000.0, best_p95_ms) if pareto else (4000.0,)
    best = TrialRecord(
        number=-1, state="complete", params={}, measurement=measurement(4000.0, best_p95_ms),
        values=values, constraints={"server_failed": 0.0},
        timings={"launching": 3.0, "ready": 0.5, "warmup": 1.0, "measuring": 10.0,
                 "teardown": 0.2, "total": 14.7},
        repeats_output_tok_s=(3900.0, 4000.0, 4100.0), started_at=1.0e9, finished_at=1.0e9 + 15,
    )  # fmt: skip
    store.study.add_trial(optuna.trial.create_trial(
        params={"max_num_seqs": 16, "gpu_memory_utilization": ARTEFACT},
        distributions={
            "max_num_seqs": optuna.distributions.CategoricalDistribution((8, 16, 3)),
            "gpu_memory_utilization": optuna.distributions.FloatDistribution(0.8, 0.9, step=0.05),
        },
        values=list(values), user_attrs={"tuner": record_attrs(best)},
    ))  # fmt: skip
    return directory


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_study(tmp_path_factory.mktemp("results") / "studies" / "alpha", "alpha")


def records_of(directory: Path) -> dict[int, TrialRecord]:
    config = load_config(directory / "config.yaml")
    return {r.number: r for r in StudyStore(config, default_storage_url(directory)).records()}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_tidy_value_writes_floats_as_the_user_did() -> None:
    assert tidy_value(ARTEFACT, 0.05) == 0.85 and str(tidy_value(ARTEFACT, 0.05)) == "0.85"
    assert str(tidy_value(0.1 + 0.2)) == "0.3"
    assert tidy_value(0.123456, 0.001) == 0.123
    assert tidy_value(16) == 16 and tidy_value(True) is True and tidy_value("auto") == "auto"


def test_export_command_has_no_float_artefacts(
    study: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "export", str(study), "--format", "command")
    assert code == 0
    line = out.strip()
    assert line.startswith("vllm serve org/model-1b --max-model-len 4096 ")
    assert "--max-num-seqs 16 --gpu-memory-utilization 0.85" in line
    assert not re.search(r"\d\.\d*(0{6,}|9{6,})\d", line), line
    assert "--host" not in line and "--port" not in line and "api-key" not in line
    # The s key's files get the same values.
    from tui_tuner.report.export import export_best

    view_records = list(records_of(study).values())
    exported = export_best(load_config(study / "config.yaml"), view_records, study / "out")
    assert exported is not None and exported.command == line
    assert "0.8500000000000001" not in exported.command_path.read_text()
    assert "gpu-memory-utilization: 0.85\n" in exported.config_path.read_text()


def test_export_command_of_a_chosen_trial_and_errors(
    study: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "export", str(study), "--format", "command", "--trial", "0")
    assert code == 0 and out.strip() == "vllm serve org/model-1b --max-model-len 4096"
    code, _, err = run(capsys, "export", str(study), "--format", "command", "--trial", "99")
    assert code == 2 and "no finished trial 99" in err
    code, _, err = run(capsys, "export", str(study), "--format", "csv", "--trial", "1")
    assert code == 2 and "--trial" in err


def test_export_yaml_is_the_trials_flags(study: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "export", str(study), "--format", "yaml")
    assert code == 0
    best = max((r for r in records_of(study).values() if r.measurement),
               key=lambda r: r.measurement.output_tok_s)  # type: ignore[union-attr]  # fmt: skip
    config = load_config(study / "config.yaml")
    expected = config_entries(config.server, {**best.params, "gpu_memory_utilization": 0.85})
    assert yaml.safe_load(out) == expected
    assert "0.8500000000000001" not in out


def test_export_json_reproduces_every_trial(
    study: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "export", str(study), "--format", "json")
    assert code == 0
    data = json.loads(out)
    stored = records_of(study)
    assert [t["number"] for t in data["trials"]] == sorted(stored)
    for t in data["trials"]:
        r = stored[t["number"]]
        m = r.measurement
        assert t["measurement"] == (None if m is None else m.to_dict())
        assert t["failure_class"] == r.failure_class
        assert t["timings_s"] == dict(r.timings)
        assert t["baseline"] == r.baseline
        params = {**r.params}
        if params.get("gpu_memory_utilization") == ARTEFACT:
            params["gpu_memory_utilization"] = 0.85
        assert t["params"] == params
    assert data["failures"] == {"oom_startup": 3}
    assert data["best"][0]["output_tok_s"] == 4000.0
    assert data["noise"]["known"] and data["noise"]["cv_pct"] == pytest.approx(2.5)


def test_export_csv_reproduces_every_trial(study: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_file = study.parent / "trials.csv"
    code, _, err = run(capsys, "export", str(study), "--format", "csv", "-o", str(out_file))
    assert code == 0 and "wrote" in err
    rows = list(csv.DictReader(io.StringIO(out_file.read_text())))
    stored = records_of(study)
    assert [int(row["number"]) for row in rows] == sorted(stored)
    for row in rows:
        r = stored[int(row["number"])]
        if r.measurement is None:
            assert row["output_tok_s"] == ""
        else:
            assert float(row["output_tok_s"]) == r.measurement.output_tok_s
            assert float(row["request_latency_p95_ms"]) == r.measurement.request_latency_p95_ms
            assert int(row["successful_requests"]) == r.measurement.successful_requests
        assert row["failure_class"] == (r.failure_class or "")
        if "measuring" in r.timings:
            assert float(row["measuring_s"]) == r.timings["measuring"]
        if not r.baseline:
            assert int(row["max_num_seqs"]) == r.params["max_num_seqs"]
        assert row["simulated"] == "False"


def _md_table(text: str, heading: str) -> list[list[str]]:
    """The rows of the first table after ``heading`` (header and rule left out)."""
    table: list[str] = []
    for line in text.split(heading, 1)[1].splitlines():
        if line.startswith("|"):
            table.append(line)
        elif table:
            break
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in table]
    return [r for r in rows[2:] if not r[0].startswith("---")]


def test_export_markdown_reproduces_the_numbers(
    study: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "export", str(study), "--format", "markdown")
    assert code == 0
    stored = records_of(study)
    result = _md_table(out, "## Baseline against best")
    assert [r[0] for r in result] == ["baseline", "best"]
    for row in result:
        m = stored[int(row[1])].measurement
        assert m is not None
        assert float(row[2].replace(",", "")) == pytest.approx(m.output_tok_s, abs=0.051)
        assert float(row[3].replace(",", "")) == pytest.approx(m.request_latency_p95_ms, abs=0.051)
    base = stored[int(result[0][1])].measurement
    gain = (4000.0 / base.output_tok_s - 1) * 100  # type: ignore[union-attr]
    assert result[1][5] == f"{gain:+.1f}%"
    top = _md_table(out, "## Top trials")
    tok = [float(r[1].replace(",", "")) for r in top]
    assert tok == sorted(tok, reverse=True) and tok[0] == 4000.0
    for row in top:
        m = stored[int(row[0])].measurement
        assert float(row[1].replace(",", "")) == pytest.approx(m.output_tok_s, abs=0.051)  # type: ignore[union-attr]
    assert "gpu_memory_utilization=0.85" in out and "0.8500000000000001" not in out
    assert "Noise: ±2.5%" in out
    assert "vllm serve org/model-1b" in out and "tui-tuner resume" in out
    assert "SIMULATED" not in out  # a fake server, not the simulated one


def test_show_prints_best_gain_noise_failures_time_and_plot(
    study: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "show", str(study))
    assert code == 0
    assert "study alpha (throughput): finished, 11 of 11 trials" in out
    assert "4,000.0" in out and "noise: ±2.5%" in out
    assert "beyond the noise" in out
    assert "failures by class: 3 oom_startup" in out
    assert re.search(r"time: .* in trials.*launching .*measuring", out)
    assert "output tok/s" in out and "p95 latency ms" in out  # the plot's axes
    assert "--gpu-memory-utilization 0.85" in out


def test_show_json_parses(study: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "show", str(study), "--json")
    data = json.loads(out)
    assert code == 0 and data["state"] == "finished" and data["trials_done"] == 11
    assert data["best"][0]["params"] == {"max_num_seqs": 16, "gpu_memory_utilization": 0.85}
    assert data["time"]["phases_s"]["measuring"] > 0 and not data["simulated"]
    assert data["client_limited"] == 0


HOLDER = """
import sys, time
from pathlib import Path
from tui_tuner.core.config_load import load_config
from tui_tuner.engine.study import StudyStore, default_storage_url
from tui_tuner.study_dir import StudyDir
d = Path(sys.argv[1])
StudyDir(d).hold()
config = load_config(d / "config.yaml")
store = StudyStore(config, default_storage_url(d))
store.ask(config.space)
print("holding", flush=True)
time.sleep(120)
"""


def test_show_on_a_study_another_process_holds(
    study: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    held = tmp_path / "held"
    shutil.copytree(study, held)
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(held)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "holding"
        before = hashlib.sha256((held / "study.db").read_bytes()).hexdigest()
        files = sorted(p.name for p in held.iterdir())
        code, out, _ = run(capsys, "show", str(held))
        assert code == 0 and f"running by pid {proc.pid}" in out and "1 running" in out
        code, out, _ = run(capsys, "show", str(held), "--json")
        data = json.loads(out)
        assert data["state"] == "running" and data["trials_running"] == 1
        code, out, _ = run(capsys, "export", str(held), "--format", "command")
        assert code == 0 and "0.85" in out
        code, out, _ = run(capsys, "studies", str(tmp_path), "--json")
        assert [s["state"] for s in json.loads(out)["studies"]] == ["running"]
        # Read-only: not a byte of the storage changed, no file appeared.
        assert hashlib.sha256((held / "study.db").read_bytes()).hexdigest() == before
        assert sorted(p.name for p in held.iterdir()) == files
    finally:
        proc.kill()
        proc.wait()


def test_studies_lists_a_directory_of_two(
    study: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "studies"
    shutil.copytree(study, root / "alpha")
    make_study(root / "beta", "beta")
    (root / "not-a-study").mkdir()
    code, out, _ = run(capsys, "studies", str(root))
    assert code == 0 and "alpha" in out and "beta" in out and "finished" in out
    assert "4,000.0 (#" in out and "11/11" in out
    code, out, _ = run(capsys, "studies", str(root), "--json")
    rows = json.loads(out)["studies"]
    assert [r["name"] for r in rows] == ["alpha", "beta"]
    assert all(r["trials_done"] == 11 and r["best_output_tok_s"] == 4000.0 for r in rows)
    assert all(r["age_s"] is not None for r in rows)


def test_studies_and_show_on_a_storage_url(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    make_study(tmp_path / "a", "one", storage=url)
    make_study(tmp_path / "b", "two", storage=url)
    code, out, _ = run(capsys, "studies", url, "--json")
    assert [r["name"] for r in json.loads(out)["studies"]] == ["one", "two"]
    code, _, err = run(capsys, "show", url)
    assert code == 2 and "--study NAME" in err and "one, two" in err
    code, out, _ = run(capsys, "show", url, "--study", "two", "--json")
    data = json.loads(out)
    assert code == 0 and data["name"] == "two" and data["best"][0]["output_tok_s"] == 4000.0
    assert data["config_known"] is False and data["model"] == "org/model-1b"


def test_validate_json_parses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = ROOT / "sample_configs" / "max-throughput.yaml"
    bad = tmp_path / "bad.yaml"
    bad.write_text("study: {name: x}\nserver: {model: m}\nobjective: {kind: fastest}\n")
    code, out, _ = run(capsys, "validate", str(good), "--json")
    data = json.loads(out)
    assert code == 0 and data["valid"] and data["configs"][0]["kind"] == "study"
    assert data["configs"][0]["parameters"]
    code, out, _ = run(capsys, "validate", str(good), str(bad), "--json")
    data = json.loads(out)
    assert code == 2 and not data["valid"]
    assert data["configs"][1]["valid"] is False and data["configs"][1]["problems"]


def test_noise_counts_repeats_and_repeated_configurations() -> None:
    def rec(n: int, tok: float, baseline: bool = False, **kw: object) -> TrialRecord:
        return TrialRecord(n, "complete", {} if baseline else {"max_num_seqs": 8},
                           baseline, measurement(tok), **kw)  # type: ignore[arg-type]  # fmt: skip

    assert not noise_of([rec(0, 100, True), rec(1, 200)]).known
    noise = noise_of([rec(0, 100, True), rec(1, 200), rec(2, 110, True)])
    # The baseline twice: the pooled coefficient of variation of 100 and 110.
    assert noise.known and noise.configurations == 1 and noise.measurements == 2
    assert noise.cv_pct == pytest.approx(5 / 105 * 2**0.5 * 100)
    assert "no configuration was measured more than once" in noise_of([]).describe()


@pytest.mark.parametrize("name", ["show", "studies", "export"])
def test_new_commands_have_help_with_examples(name: str) -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    text = sub.choices[name].format_help()  # type: ignore[attr-defined]
    assert "examples:" in text and f"tui-tuner {name}" in text


def test_html_needs_plotly_says_so(
    study: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import tui_tuner.report.html as html_module

    monkeypatch.setattr(html_module, "plotly_available", lambda: False)
    code, _, err = run(capsys, "export", str(study), "--format", "html")
    assert code == 2 and "pip install 'tui-tuner[report]'" in err
    assert len(err.strip().splitlines()) == 1


def test_a_pareto_study_shows_its_front_and_sla(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    objective = "{kind: pareto, sla: {p95_request_latency_ms: 1012}}"
    study = make_study(tmp_path / "p", "front", objective=objective, best_p95_ms=1011.0)
    code, out, _ = run(capsys, "show", str(study), "--json")
    data = json.loads(out)
    # The injected trial (4000 tok/s, 1011 ms), the baseline (1000, 1010), the three seqs 8
    # (800, 1008); seqs 16 (1016 ms) misses the SLA.
    tok = [b["output_tok_s"] for b in data["best"]]
    assert code == 0 and tok == [4000.0, 1000.0, 800.0, 800.0, 800.0]
    assert data["pareto_size"] == 5
    code, out, _ = run(capsys, "show", str(study))
    assert "highest-throughput point of the Pareto front" in out and "infeasible" in out
    if importlib.util.find_spec("plotly") is not None:
        code, out, _ = run(capsys, "export", str(study), "--format", "html")
        # The limit's line, labelled (plotly writes "<" as \u003c in the figure's JSON).
        assert code == 0 and "SLA p95_request_latency_ms \\u003c= 1012" in out
        assert "Pareto front" in out and "baseline (trial 0)" in out


def test_show_states_the_gains_interval_when_the_study_measured_its_noise() -> None:
    from rich.console import Console

    from tui_tuner.report.facts import study_facts
    from tui_tuner.report.show import show_study

    config = load_config(ROOT / "sample_configs" / "demo-sim.yaml")
    params = {"max_num_seqs": 64}

    def rec(n: int, tok: float, baseline: bool = False) -> TrialRecord:
        return TrialRecord(n, "complete", {} if baseline else params, baseline, measurement(tok),
                           constraints={"server_failed": 0.0})  # fmt: skip

    records = [rec(0, 1000, True), rec(1, 1020, True), rec(2, 1490), rec(3, 1510)]
    console = Console(file=io.StringIO(), width=100, highlight=False)
    for item in show_study(config, records, state="finished"):
        console.print(item)
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert "95% interval" in out and "noise: ±1.2%" in out
    facts = study_facts(config, records)
    low, high = facts["gain_interval_pct"]  # type: ignore[misc]
    assert low < 48.5 < high and facts["confidence"]


@pytest.mark.parametrize("command", ["show", "studies", "export"])
def test_a_database_optuna_never_wrote_is_one_line(
    tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import sqlite3

    db = tmp_path / "other.db"
    sqlite3.connect(db).execute("create table notes (text)").connection.close()
    target = str(db) if command == "show" else f"sqlite:///{db}"
    argv = [command, target] + (["--format", "csv"] if command == "export" else [])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"sqlite:///{db} holds no study: it has none of Optuna's tables" in err
    assert "Traceback" not in err
