"""Security checks: no shell, no flag injection, servers on loopback, a fresh API key per trial
that the server demands and nothing writes down, and study files readable by their owner only.

The end-to-end part runs one short headless study (the baseline and one trial) on the simulated
server with the fake GuideLLM, which records the API keys it was given (FAKE_GUIDELLM_KEYFILE).
"""

from __future__ import annotations

import ast
import asyncio
import json
import os
import shutil
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.conftest import FAST_PROFILE, ROOT, SimProcess
from tui_tuner.core.commands import server_argv, server_env
from tui_tuner.core.config import ServerSettings
from tui_tuner.core.config_load import ConfigError, parse_config
from tui_tuner.core.space import flag_args, split_params
from tui_tuner.core.vllm_flags import lookup
from tui_tuner.engine.study import TrialPlan
from tui_tuner.engine.trial_runner import TrialRunner

pytestmark = pytest.mark.timeout(180)

PACKAGE = ROOT / "tui_tuner"
FAKE = ROOT / "tests" / "fakes" / "fake_guidellm.py"
HEAD = "study: {name: t, n_trials: 4}\n"

# -- (a) no shell anywhere ---------------------------------------------------------------------

SHELL_CALLS = {
    "os.system",
    "os.popen",
    "subprocess.getoutput",
    "subprocess.getstatusoutput",
    "asyncio.create_subprocess_shell",
    "pty.spawn",
}
SHELL_METHODS = {"subprocess_shell"}  # loop.subprocess_shell
SHELL_MODULES = {"pty", "pexpect", "ptyprocess", "sh", "plumbum", "commands"}
EXEC_CALLS = {
    "subprocess.run",
    "subprocess.Popen",
    "subprocess.call",
    "subprocess.check_call",
    "subprocess.check_output",
    "asyncio.create_subprocess_exec",
}
SHELLS = {"sh", "bash", "zsh", "dash", "/bin/sh", "/bin/bash", "/usr/bin/env"}


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _is_text(node: ast.expr) -> bool:
    """A command given as one string: a literal, an f-string, or text glued together."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.JoinedStr):
        return True
    return isinstance(node, ast.BinOp) and (_is_text(node.left) or _is_text(node.right))


def shell_uses(source: str, where: str = "<source>") -> list[str]:
    """Every way ``source`` could run a command through a shell, as ``where:line: what``."""
    found = []
    tree = ast.parse(source)
    for node in ast.walk(tree):
        line = f"{where}:{getattr(node, 'lineno', 0)}"
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        found += [
            f"{line}: imports {n}"
            for n in names
            if n.split(".")[0] in SHELL_MODULES or n in SHELL_CALLS
        ]
        if isinstance(node, ast.List | ast.Tuple) and len(node.elts) >= 2:
            first, second = node.elts[0], node.elts[1]
            if (
                isinstance(first, ast.Constant)
                and first.value in SHELLS
                and isinstance(second, ast.Constant)
                and second.value in ("-c", "-lc", "sh", "bash")
            ):
                found.append(f"{line}: a shell command line {first.value!r} {second.value!r}")
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        for kw in node.keywords:
            if kw.arg == "shell" and not (
                isinstance(kw.value, ast.Constant) and kw.value.value is False
            ):
                found.append(f"{line}: {name}(shell=...)")
        if name in SHELL_CALLS or name.rsplit(".", 1)[-1] in SHELL_METHODS:
            found.append(f"{line}: {name}()")
        if name in EXEC_CALLS and node.args and _is_text(node.args[0]):
            found.append(f"{line}: {name}() with the command as one string")
    return found


@pytest.mark.parametrize(
    "snippet",
    [
        "import subprocess\nsubprocess.run('ls -l', shell=True)",
        "import subprocess\nsubprocess.Popen(cmd, shell=flag)",
        "import os\nos.system('ls')",
        "import os\nos.popen('ls').read()",
        "from os import system",
        "import subprocess\nsubprocess.check_output(f'ls {path}')",
        "import subprocess\nsubprocess.run('ls ' + path)",
        "import asyncio\nawait asyncio.create_subprocess_shell('ls')",
        "await loop.subprocess_shell(factory, 'ls')",
        "import pty\npty.spawn(['bash'])",
        "import pexpect",
        "argv = ['sh', '-c', text]",
        "argv = ('/bin/bash', '-c', text)",
    ],
)
def test_the_shell_scan_finds_each_way_in(snippet: str) -> None:
    assert shell_uses(snippet), snippet


def test_the_package_never_runs_a_shell() -> None:
    sources = sorted(PACKAGE.rglob("*.py"))
    assert len(sources) > 50  # the whole package, sim and UI included
    found = [hit for p in sources for hit in shell_uses(p.read_text(), str(p.relative_to(ROOT)))]
    assert not found, "\n".join(found)


# -- (b) values cannot inject flags ------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "server: {model: /m}\n"
            "search_space: {max_num_seqs: {options: ['4 --trust-remote-code']}}",
            "search_space.max_num_seqs.options[0]: expected an integer, got the text "
            "'4 --trust-remote-code'",
        ),
        (
            "server: {model: /m}\nsearch_space: {max_num_seqs: {options: ['--api-key=x']}}",
            "search_space.max_num_seqs.options[0]: expected an integer",
        ),
        (
            "server: {model: /m}\nsearch_space: {kv_cache_dtype: {options: [auto, '--api-key=x']}}",
            "search_space.kv_cache_dtype.options[1]: '--api-key=x' is not allowed; "
            "--kv-cache-dtype takes one of",
        ),
        (
            "server: {model: /m}\n"
            "search_space: {max_num_batched_tokens: {options: ['8k --host 0.0.0.0']}}",
            "'8k --host 0.0.0.0' is not allowed; --max-num-batched-tokens takes an integer",
        ),
        (
            "server: {model: /m}\nsearch_space: {workload.streams: {options: ['8 --rate 9']}}",
            "search_space.workload.streams.options[0]",
        ),
        (
            "server: {model: /m, flags: {served_model_name: '--api-key=x'}}",
            "server.flags.served_model_name: '--api-key=x' is not allowed; --served-model-name "
            "takes no value starting with '-'",
        ),
        (
            "server: {model: /m, flags: {api_key: x}}",
            "server.flags.api_key: --api-key is set by the tuner",
        ),
        (
            "server: {model: /m, flags: {host: 0.0.0.0}}",
            "server.flags.host: --host is set by the tuner: set server.host instead",
        ),
        (
            "server: {model: /m, extra_args: [--api-key, x]}",
            "server.extra_args[0]: --api-key is set by the tuner",
        ),
        (
            "server: {model: /m, extra_args: ['--api_key=x']}",
            "server.extra_args[0]: --api-key is set by the tuner",
        ),
        (
            "server: {model: /m, extra_args: [--trust-remote-code, --host=0.0.0.0]}",
            "server.extra_args[1]: --host is set by the tuner: set server.host instead",
        ),
        (
            "server: {model: /m, extra_args: [--port, '9000']}",
            "server.extra_args[0]: --port is set by the tuner: the tuner picks a free port",
        ),
        (
            "server: {model: --trust-remote-code}",
            "server.model: '--trust-remote-code' is not allowed; model must not start with '-'",
        ),
        (
            "server: {model: /m, host: --api-key=x}",
            "server.host: '--api-key=x' is not allowed; host must not start with '-'",
        ),
    ],
)
def test_the_loader_refuses_values_that_would_be_read_as_flags(body: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(HEAD + body + "\n", Path("config.yaml"))
    assert expected in str(info.value), str(info.value)


def test_every_value_reaches_the_server_as_its_own_argument() -> None:
    server = ServerSettings(
        model="/models/my model",
        flags={"served_model_name": "name with spaces", "max_model_len": 4096},
        extra_args=("--trust-remote-code",),
    )
    params = {"kv_cache_dtype": "fp8", "max_num_seqs": 64, "enforce_eager": True,
              "gpu_memory_utilization": 0.9, "workload.streams": 8}  # fmt: skip
    argv = server_argv(server, split_params(params), host="127.0.0.1", port=8123)
    assert argv[:3] == ["vllm", "serve", "/models/my model"]
    for pair in (["--served-model-name", "name with spaces"], ["--kv-cache-dtype", "fp8"],
                 ["--max-num-seqs", "64"], ["--gpu-memory-utilization", "0.9"]):  # fmt: skip
        i = argv.index(pair[0])
        assert argv[i : i + 2] == pair
    assert "--enforce-eager" in argv and "8" not in argv  # a workload knob is not a flag
    # What only the tuner sets comes last, once each, so nothing before it can override it.
    assert argv[-4:] == ["--host", "127.0.0.1", "--port", "8123"]
    for flag in ("--host", "--port"):
        assert argv.count(flag) == 1
    assert "--api-key" not in argv  # the key is in the environment: see below
    served = lookup("served_model_name")
    assert served is not None and flag_args(served, "a --b") == ["--served-model-name", "a --b"]


def test_the_api_key_travels_in_the_servers_environment_not_its_arguments() -> None:
    """`ps` shows every process's arguments to every user; its environment only to its owner."""
    server = ServerSettings(model="/m", env={"VLLM_LOGGING_LEVEL": "INFO"})
    assert server_env(server, "k" * 48) == {"VLLM_LOGGING_LEVEL": "INFO", "VLLM_API_KEY": "k" * 48}
    assert server_env(server, None) == {"VLLM_LOGGING_LEVEL": "INFO"}


# -- the study: one short run whose files, events and output the checks below read ---------------


@dataclass
class Study:
    directory: Path
    study_dir: Path
    events: Path
    result: subprocess.CompletedProcess[str]
    keys: list[str]
    #: Addresses the trial servers listened on, seen while they ran.
    listening: set[str]
    #: Command lines of the study's processes (servers, GuideLLM), seen while they ran.
    command_lines: set[str]


def _command_lines(marker: str) -> set[str]:
    found = set()
    for proc in psutil.process_iter(["cmdline"]):
        line = " ".join(proc.info["cmdline"] or ())
        if marker in line:
            found.add(line)
    return found


def _listening(marker: str) -> set[str]:
    """``ip:port`` of the listening TCP sockets of live processes whose command names ``marker``."""
    found = set()
    for proc in psutil.process_iter(["cmdline"]):
        if marker in " ".join(proc.info["cmdline"] or ()) and "sim-serve" in proc.info["cmdline"]:
            try:
                conns = proc.net_connections(kind="tcp")
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            found |= {f"{c.laddr.ip}:{c.laddr.port}" for c in conns
                      if c.status == psutil.CONN_LISTEN}  # fmt: skip
    return found


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Study]:
    directory = tmp_path_factory.mktemp("security")
    profile = directory / "sim-profile.yaml"
    shutil.copyfile(FAST_PROFILE, profile)
    config = directory / "secure.yaml"
    config.write_text(f"""
study: {{name: secure, n_trials: 2, seed: 0, sampler: grid, noise_repeats: 1, remeasure_top: 0}}
server:
  command: ["tui-tuner", "sim-serve"]
  model: sim-model
  extra_args: ["--sim-profile-file", "{profile}", "--sim-time-scale", "4"]
  startup_timeout_s: 60
workload: {{prompt_tokens: 64, output_tokens: 16, streams: 4, duration_s: 2, warmup_s: 0}}
search_space: {{max_num_seqs: {{options: [16]}}}}
""")
    study_dir, events, keyfile = directory / "study", directory / "events.jsonl", directory / "keys"
    cmd = [sys.executable, "-m", "tui_tuner", "tune", str(config), "--headless", "--study-dir",
           str(study_dir), "--guidellm", str(FAKE), "--events-jsonl", str(events)]  # fmt: skip
    env = {**os.environ, "FAKE_GUIDELLM_MODE": "ok", "FAKE_GUIDELLM_KEYFILE": str(keyfile)}
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env
    ) as tuner:
        listening: set[str] = set()
        command_lines: set[str] = set()
        deadline = time.monotonic() + 120
        while tuner.poll() is None and time.monotonic() < deadline:
            listening |= _listening(str(directory))
            command_lines |= _command_lines(str(directory))
            time.sleep(0.1)
        out, err = tuner.communicate(timeout=max(1.0, deadline - time.monotonic()))
    result = subprocess.CompletedProcess(cmd, tuner.returncode, out, err)
    assert result.returncode == 0, out + err
    keys = keyfile.read_text().split() if keyfile.exists() else []
    yield Study(directory, study_dir, events, result, keys, listening, command_lines)


# -- (c) loopback unless the configuration says otherwise ----------------------------------------


class _NoLauncher:
    def free_port(self, host: str) -> int:
        return 8123


def _trial_argv(tmp_path: Path, server_part: str) -> list[str]:
    config = parse_config(HEAD + server_part + "\n", Path("config.yaml"))
    runner = TrialRunner(config, tmp_path, _NoLauncher(), None, None, lambda _: None)  # type: ignore[arg-type]
    plan = TrialPlan(number=1, params={}, baseline=False)
    progress, _, _ = asyncio.run(runner.prepare(plan))
    return progress.argv


def test_a_trial_server_binds_loopback_unless_configured(tmp_path: Path) -> None:
    argv = _trial_argv(tmp_path / "a", "server: {model: /m}")
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    argv = _trial_argv(tmp_path / "b", "server: {model: /m, host: 0.0.0.0}")
    assert argv[argv.index("--host") + 1] == "0.0.0.0"


def test_the_running_servers_listened_on_loopback_only(study: Study) -> None:
    assert study.listening, "no trial server was seen listening"
    assert {address.split(":")[0] for address in study.listening} == {"127.0.0.1"}
    for number in ("0000", "0001"):
        command = (study.study_dir / "trials" / number / "command.txt").read_text()
        assert "--host 127.0.0.1 " in command and "--api-key" not in command
        assert command.startswith("# VLLM_API_KEY: this trial's random API key (not kept)\n")


# -- (d) a random API key per trial, which the server demands ------------------------------------


def test_each_trial_gets_its_own_long_random_key(study: Study) -> None:
    assert len(study.keys) == 2 and len(set(study.keys)) == 2, study.keys
    for key in study.keys:
        assert len(key) >= 32 and all(c in "0123456789abcdef" for c in key), key


def _status(url: str, key: str | None, body: dict[str, object] | None = None) -> int:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data, headers, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as err:
        return err.code


def test_the_simulated_server_demands_its_api_key(
    start_sim: Callable[..., SimProcess],
) -> None:
    key = "0123456789abcdef" * 3
    sim = start_sim("--api-key", key, "--sim-profile-file", str(FAST_PROFILE),
                    "--sim-time-scale", "4")  # fmt: skip
    completion = {"model": "sim-model", "prompt": "hi", "max_tokens": 2}
    assert _status(sim.url + "/v1/completions", None, completion) == 401
    assert _status(sim.url + "/v1/completions", "wrong", completion) == 401
    assert _status(sim.url + "/v1/models", None) == 401
    assert _status(sim.url + "/v1/completions", key, completion) == 200
    assert _status(sim.url + "/health", None) == 200  # as vLLM: health needs no key
    assert key not in sim.log()


def test_the_simulated_server_demands_the_key_it_finds_in_its_environment(
    start_sim: Callable[..., SimProcess],
) -> None:
    key = "fedcba9876543210" * 3
    sim = start_sim("--sim-profile-file", str(FAST_PROFILE), env={"VLLM_API_KEY": key})
    assert _status(sim.url + "/v1/models", None) == 401
    assert _status(sim.url + "/v1/models", key) == 200


# -- (e) owner-only files -----------------------------------------------------------------------


def test_the_study_directory_and_its_files_are_owner_only(study: Study) -> None:
    assert stat.S_IMODE(study.study_dir.stat().st_mode) == 0o700
    modes = {
        str(p.relative_to(study.study_dir)): stat.S_IMODE(p.stat().st_mode)
        for p in study.study_dir.rglob("*")
    }
    assert {"config.yaml", "study.db", "overrides.json", "trials/0001/report.json"} <= set(modes)
    wrong = {
        name: oct(mode)
        for name, mode in modes.items()
        if mode != (0o700 if (study.study_dir / name).is_dir() else 0o600)
    }
    assert not wrong, wrong


# -- (f) the key is never written down ----------------------------------------------------------


def test_the_api_key_is_written_nowhere(study: Study) -> None:
    assert len(study.keys) == 2
    places = {str(p): p.read_bytes() for p in study.study_dir.rglob("*") if p.is_file()}
    places["events"] = study.events.read_bytes()
    places["stdout"] = study.result.stdout.encode()
    places["stderr"] = study.result.stderr.encode()
    assert any(b"study.db" in name.encode() for name in places) and len(places) > 10
    for key in study.keys:
        leaked = [where for where, data in places.items() if key.encode() in data]
        assert not leaked, f"the API key is in {leaked}"


def test_no_command_line_shows_the_api_key(study: Study) -> None:
    """Both sides of each trial were seen running, and neither had the key in its arguments."""
    assert any("sim-serve" in line for line in study.command_lines)
    assert any("fake_guidellm" in line and "--scenario" in line for line in study.command_lines)
    for key in study.keys:
        assert not [line for line in study.command_lines if key in line]
