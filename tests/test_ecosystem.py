"""The tools people already use open tui-tuner's results as they are (issue 12): optuna-dashboard
reads a finished study's storage, and `textual serve` serves the TUI to a browser.
docs/ecosystem.md documents both commands."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.engine import Fakes, make_config
from tests.test_orchestrator import build
from tui_tuner.adapters.vllm_server import free_port
from tui_tuner.engine.study import default_storage_url

BIN = Path(sys.executable).parent


def _get(url: str, timeout: float = 5) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, response.read()


def _wait(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if _get(url, timeout=2)[0] == 200:
                return
        except (urllib.error.URLError, OSError):
            pass
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode}:\n{log.read_text()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no answer from {url} in {timeout} s:\n{log.read_text()}")
        time.sleep(0.2)


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


def _start(
    cmd: list[str], log: Path, procs: list[subprocess.Popen[bytes]]
) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    procs.append(proc)
    return proc


async def test_optuna_dashboard_lists_the_trials_and_their_values(
    tmp_path: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    exe = shutil.which("optuna-dashboard", path=str(BIN)) or shutil.which("optuna-dashboard")
    if exe is None:
        pytest.fail("optuna-dashboard is missing: it is in the dev extra (pip install -e '.[dev]')")
    fakes = Fakes()
    config = make_config(tmp_path, [1, 8, 16, 32], n_trials=5)  # 1 fails: a failed trial too
    orch, _ = build(tmp_path, config, fakes)
    records = (await orch.run()).records
    url = default_storage_url(tmp_path)
    port = free_port()
    log = tmp_path / "dashboard.log"
    proc = _start([exe, url, "--host", "127.0.0.1", "--port", str(port)], log, started)
    base = f"http://127.0.0.1:{port}"
    _wait(base + "/api/studies", proc, log)

    studies = json.loads(_get(base + "/api/studies")[1])["study_summaries"]
    (study,) = [s for s in studies if s["study_name"] == config.study.name]
    assert [d.lower() for d in study["directions"]] == ["maximize"]
    detail = json.loads(_get(f"{base}/api/studies/{study['study_id']}")[1])
    trials = {t["number"]: t for t in detail["trials"]}
    assert sorted(trials) == [r.number for r in records]
    for r in records:
        shown = trials[r.number]
        assert (
            shown["state"] == "Complete"
        )  # a failed configuration is a complete, infeasible trial
        assert r.values is not None
        for value, expected in zip(shown["values"], r.values, strict=True):
            assert math.isclose(float(value), expected, rel_tol=1e-9)
        params = {p["name"]: p["param_external_value"] for p in shown["params"]}
        assert params == {k: str(v) for k, v in r.params.items()}
    # a failed configuration is there with its failure class among the user attributes
    failed = [r for r in records if r.state == "failed"]
    assert failed
    for r in failed:
        attrs = {a["key"]: a["value"] for a in trials[r.number]["user_attrs"]}
        assert str(r.failure_class) in json.dumps(attrs), attrs
    # the page itself is served (its scripts are bundled, nothing from the internet)
    status, page = _get(base + "/dashboard")
    assert status == 200 and b"<script" in page


def test_textual_serve_serves_the_tui_page(
    tmp_path: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    exe = shutil.which("textual", path=str(BIN)) or shutil.which("textual")
    if exe is None:
        pytest.fail("`textual` (textual-dev) is missing: it is in the dev extra")
    port = free_port()
    log = tmp_path / "serve.log"
    command = f"{sys.executable} -m tui_tuner demo --study-dir {tmp_path / 'study'}"
    cmd = [exe, "serve", "-c", command, "--host", "127.0.0.1", "--port", str(port)]
    proc = _start(cmd, log, started)
    base = f"http://127.0.0.1:{port}"
    _wait(base + "/", proc, log)
    page = _get(base + "/")[1].decode()
    assert "textual.js" in page and f"ws://127.0.0.1:{port}/ws" in page
    # what the page loads: its script and styles from the server, a font from Google's CDN
    assert _get(base + "/static/js/textual.js")[0] == 200
    assert _get(base + "/static/css/xterm.css")[0] == 200
    assert "https://fonts.googleapis.com/css?family=Roboto%20Mono" in page
    external = {u.split('"')[0] for u in page.split("https://")[1:]}
    assert external == {"fonts.googleapis.com/css?family=Roboto%20Mono"}, external
    # the app is started only when a browser opens the websocket: nothing has run yet
    assert not (tmp_path / "study").exists()


def _commands() -> list[str]:
    from tui_tuner.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return sorted(sub.choices)  # type: ignore[arg-type]


@pytest.mark.parametrize("command", _commands())
def test_every_command_has_help_with_an_example(command: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tui_tuner", command, "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    examples = result.stdout.split("\nexamples:\n")
    assert len(examples) == 2, f"{command} --help has no examples"
    assert f"tui-tuner {command}" in examples[1]
