"""The result commands on one real study of the SIMULATED server (`tui-tuner tune --headless
--json`, the fake GuideLLM): the run's last line is its answer as JSON, and `show` and every
export say that the figures are the simulator's."""

from __future__ import annotations

import csv
import io
import json
import subprocess
from pathlib import Path

import pytest

from tests.fakes.studies import sim_study, tuner
from tui_tuner.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sim_run(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> tuple[Path, str]:
    tmp = tmp_path_factory.mktemp("results-sim")
    config = sim_study(tmp, tiny_model, name="results-sim", study="n_trials: 3", options=(8, 16))
    study_dir = tmp / "study"
    done = subprocess.run(
        [*tuner("tune", config, "--study-dir", str(study_dir)), "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return study_dir, done.stdout


def test_headless_json_is_the_last_line(sim_run: tuple[Path, str]) -> None:
    study_dir, stdout = sim_run
    end = json.loads(stdout.strip().splitlines()[-1])
    assert end["exit_code"] == 0 and end["simulated"] is True and end["simulated_note"]
    assert end["study_dir"] == str(study_dir) and end["trials_done"] == 3
    assert end["best"] and end["command"].startswith("vllm serve ")
    assert "--sim-" not in end["command"] and "--port" not in end["command"]


def test_show_and_exports_say_simulated(
    sim_run: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    study_dir, _ = sim_run
    assert main(["show", str(study_dir)]) == 0
    shown = capsys.readouterr().out
    assert "SIMULATED" in shown and "finished" in shown and "vllm serve" in shown
    assert main(["export", str(study_dir), "--format", "command"]) == 0
    out = capsys.readouterr()
    assert "--sim-" not in out.out and "SIMULATED" in out.err
    assert main(["export", str(study_dir), "--format", "markdown"]) == 0
    markdown = capsys.readouterr().out
    assert "**SIMULATED**" in markdown and "| vLLM | " in markdown and "GuideLLM" in markdown
    assert main(["export", str(study_dir), "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert rows and all(r["simulated"] == "True" for r in rows)
    assert main(["export", str(study_dir), "--format", "yaml"]) == 0
    assert "SIMULATED" in capsys.readouterr().out
    assert main(["studies", str(study_dir.parent), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["studies"]
    assert [s["name"] for s in listed] == ["results-sim"] and listed[0]["simulated"]


#: Parses `vllm serve` arguments with vLLM's own parser (the `serve` subcommand's), starting
#: nothing; prints the namespace of each argument list as JSON.
VLLM_PARSE = """
import json, sys
from vllm.entrypoints.cli.serve import ServeSubcommand
from vllm.utils.argparse_utils import FlexibleArgumentParser
out = []
for argv in json.loads(sys.argv[1]):
    root = FlexibleArgumentParser(prog="vllm")
    ServeSubcommand().subparser_init(root.add_subparsers(dest="subparser"))
    ns = vars(root.parse_args(argv))
    out.append({k: v for k, v in ns.items() if k not in ("config", "dispatch_function")})
print("PARSED " + json.dumps(out, default=str))
"""


def test_vllm_parses_the_exported_command_and_yaml_alike(
    tmp_path: Path, vllm_exe: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.test_results import make_study

    study = make_study(tmp_path / "study", "parsed")
    assert main(["export", str(study), "--format", "command"]) == 0
    command = capsys.readouterr().out.split()
    config = tmp_path / "best.yaml"
    assert main(["export", str(study), "--format", "yaml", "-o", str(config)]) == 0
    assert command[:2] == ["vllm", "serve"]
    argvs = [command[1:], ["serve", command[2], "--config", str(config)]]
    done = subprocess.run(
        [str(vllm_exe.parent / "python"), "-c", VLLM_PARSE, json.dumps(argvs)],
        capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("PARSED ")), None)
    assert done.returncode == 0 and line, done.stdout[-2000:] + done.stderr[-2000:]
    from_command, from_yaml = json.loads(line.removeprefix("PARSED "))
    assert from_command == from_yaml
    assert from_command["gpu_memory_utilization"] == 0.85
    assert from_command["max_num_seqs"] == 16 and from_command["max_model_len"] == 4096


#: A rate, not streams: under 8 concurrent streams and no CUDA graphs (eager), max_num_seqs 16
#: and 32 cannot differ and would be measured once (core/equivalence.py).
CPU_STUDY = """
study: {{name: cpu-export, seed: 0, sampler: grid, n_trials: 3, noise_repeats: 1, remeasure_top: 0}}
server:
  command: ["{vllm}", "serve"]
  model: {model}
  flags: {{max_model_len: 1024, enforce_eager: true}}
  env: {{VLLM_CPU_KVCACHE_SPACE: "1"}}
workload: {{duration_s: 1, warmup_s: 0, profile: constant, rate: 8}}
search_space: {{max_num_seqs: {{options: [16, 32]}}}}
"""


@pytest.mark.timeout(900)
def test_a_real_vllm_starts_from_the_exported_yaml(
    tmp_path: Path, tiny_model: Path, vllm_exe: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The study's trials are the fakes' (their figures decide the best: max_num_seqs 32); the
    exported file then starts a real vllm-cpu server, which reads the searched flag from it."""
    import asyncio
    import os
    import signal
    import socket
    import time
    import urllib.request

    from tests.fakes.engine import Fakes
    from tui_tuner.core.config_load import load_config
    from tui_tuner.engine.orchestrator import Orchestrator
    from tui_tuner.engine.study import StudyStore, default_storage_url
    from tui_tuner.engine.trial_runner import TrialRunner

    study = tmp_path / "study"
    study.mkdir()
    (study / "config.yaml").write_text(CPU_STUDY.format(vllm=vllm_exe, model=tiny_model))
    config = load_config(study / "config.yaml")
    fakes = Fakes()
    store = StudyStore(config, default_storage_url(study))
    runner = TrialRunner(config, study, fakes, fakes, fakes, lambda e: None)
    asyncio.run(Orchestrator(config, store, runner, lambda e: None, study_dir=study).run())
    best = tmp_path / "best.yaml"
    assert main(["export", str(study), "--format", "yaml", "-o", str(best)]) == 0
    capsys.readouterr()
    text = best.read_text()
    assert "max-num-seqs: 32\n" in text and "enforce-eager: true\n" in text
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "server.log"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    with log.open("w") as out:
        server = subprocess.Popen(
            [str(vllm_exe), "serve", str(tiny_model), "--config", str(best),
             "--host", "127.0.0.1", "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            assert server.poll() is None, log.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5) as r:
                    models = json.loads(r.read())
                break
            except OSError:
                time.sleep(2)
        else:
            pytest.fail("the server did not answer in 600 s:\n" + log.read_text()[-3000:])
        assert models["data"][0]["id"] == str(tiny_model)
        started = log.read_text()
        assert '"max_num_seqs": 32' in started or "'max_num_seqs': 32" in started, started[-3000:]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
