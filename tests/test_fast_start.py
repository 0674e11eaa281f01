"""``server.fast_start``: random weights and one compile cache per study, where the ranking stays
valid; refused where a figure depends on the generated text; never in an exported command; and
the simulated server's start-up phases that show the saving (simulated figures)."""

from __future__ import annotations

import re
import shlex
import textwrap
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tests.conftest import SimProcess
from tui_tuner.core.commands import (
    compile_cache_root,
    serve_command,
    server_argv,
    server_env,
    without_sim_options,
)
from tui_tuner.core.config import ServerSettings, StudyConfig, StudySettings
from tui_tuner.core.config_load import ConfigError, parse_config
from tui_tuner.core.errors import UserError
from tui_tuner.core.fast_start import speculative_option
from tui_tuner.core.measurement import Measurement
from tui_tuner.core.space import split_params
from tui_tuner.core.trial import TrialRecord
from tui_tuner.report.export import export_best
from tui_tuner.sim.compile_cache import MARKER
from tui_tuner.sim.hardware import compile_family, plan_memory, resolve, startup_seconds
from tui_tuner.sim.profiles import get_profile
from tui_tuner.study_dir import prepare_compile_cache

BASE = """\
study: {name: fast, n_trials: 3}
server:
  model: org/model
  fast_start: true
"""


def _load(text: str) -> StudyConfig:
    return parse_config(textwrap.dedent(text), Path("study.yaml"))


def _problems(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        _load(text)
    return str(caught.value)


# -- configuration ---------------------------------------------------------------------------


def test_fast_start_is_off_by_default_and_read_as_a_bool() -> None:
    assert not _load("study: {name: s, n_trials: 1}\nserver: {model: m}\n").server.fast_start
    assert _load(BASE).server.fast_start
    assert "fast_start" in _problems(BASE.replace("true", "sometimes"))


def test_speculative_decoding_in_extra_args_is_refused_naming_file_and_field() -> None:
    text = BASE + '  extra_args: ["--speculative-config", "{\\"method\\": \\"ngram\\"}"]\n'
    message = _problems(text)
    assert "study.yaml:5" in message and "server.extra_args[0]" in message
    assert "speculative decoding cannot be measured with server.fast_start" in message
    assert "set fast_start: false" in message
    # The same file without fast_start is fine.
    assert _load(text.replace("fast_start: true", "fast_start: false")).server.extra_args


@pytest.mark.parametrize(
    "arg",
    ["-sc", "--speculative-config={}", "--speculative_config", "--spec-method", "--spec-model",
     "--spec-tokens=3", "--speculative-config.method", "-sc.num_speculative_tokens"],
)  # fmt: skip
def test_every_spelling_of_speculative_decoding_is_seen(arg: str) -> None:
    assert speculative_option(arg)


@pytest.mark.parametrize("arg", ["--seed", "--specialize-active-lora", "-O3", "--served-model"])
def test_other_arguments_are_not_speculative(arg: str) -> None:
    assert not speculative_option(arg)


def test_a_dataset_workload_is_refused_with_random_weights(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "hello"}\n')
    message = _problems(BASE + f"workload: {{dataset: {prompts}}}\n")
    assert "workload.dataset" in message and "end-of-sequence" in message


def test_load_format_dummy_in_extra_args_must_go_through_fast_start() -> None:
    text = "study: {name: s, n_trials: 1}\nserver:\n  model: m\n"
    for args in ('["--load-format", "dummy"]', '["--load-format=DUMMY"]'):
        message = _problems(text + f"  extra_args: {args}\n")
        assert "server.extra_args[0]" in message and "server.fast_start: true" in message
    # Another load format is the user's business.
    assert _load(text + '  extra_args: ["--load-format", "safetensors"]\n').server.extra_args


# -- command lines -----------------------------------------------------------------------------


def test_trials_get_random_weights_and_the_studys_cache(tmp_path: Path) -> None:
    server = ServerSettings(model="m", fast_start=True, extra_args=("--seed", "1"))
    argv = server_argv(server, split_params({"max_num_seqs": 8}), host="h", port=1)
    i = argv.index("--load-format")
    assert argv[i : i + 2] == ["--load-format", "dummy"]
    assert argv[-4:] == ["--host", "h", "--port", "1"]
    env = server_env(server, "key", study_dir=tmp_path)
    assert (
        env["VLLM_CACHE_ROOT"] == str(tmp_path / "vllm-cache") == str(compile_cache_root(tmp_path))
    )
    # The user's own cache root wins; without fast_start nothing changes.
    own = ServerSettings(model="m", fast_start=True, env={"VLLM_CACHE_ROOT": "/c"})
    assert server_env(own, None, study_dir=tmp_path) == {"VLLM_CACHE_ROOT": "/c"}
    plain = ServerSettings(model="m")
    assert "--load-format" not in server_argv(plain, split_params({}), host="h", port=1)
    assert server_env(plain, None, study_dir=tmp_path) == {}


def test_the_exported_command_never_has_random_weights(tmp_path: Path) -> None:
    server = ServerSettings(model="org/m", fast_start=True, extra_args=("--sim-seed", "3"))
    assert "load-format" not in serve_command(server, {"max_num_seqs": 64})
    assert without_sim_options(("--load-format", "dummy", "--seed", "2")) == ["--seed", "2"]
    assert without_sim_options(("--load-format=dummy",)) == []
    m = Measurement(100.0, 200.0, 1.0, 1, 2, 3, 1, 2, 3, 1, 2, 1, 10, 0, 0, 4.0, 60.0)
    records = [TrialRecord(number=1, state="complete", params={"max_num_seqs": 64},
                           measurement=m, constraints={"server_failed": 0.0})]  # fmt: skip
    config = StudyConfig(StudySettings(name="s"), server)
    out = export_best(config, records, tmp_path, now=datetime(2026, 12, 3, tzinfo=timezone.utc))
    assert out is not None
    for path in (out.command_path, out.config_path):
        assert "load-format" not in path.read_text() and "dummy" not in path.read_text()
    assert shlex.split(out.command)[:3] == ["vllm", "serve", "org/m"]


# -- the study's compile cache -----------------------------------------------------------------


def test_the_cache_is_created_owner_only(tmp_path: Path) -> None:
    root = tmp_path / "study" / "vllm-cache"
    prepare_compile_cache(root)
    assert root.is_dir() and root.stat().st_mode & 0o777 == 0o700
    assert list(root.iterdir()) == []  # the probe is gone


def test_a_cache_that_cannot_be_written_stops_the_study_before_any_trial(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    with pytest.raises(UserError, match=r"server.fast_start: the compile cache .* cannot be"):
        prepare_compile_cache(blocker / "vllm-cache")


# -- the simulated start-up (simulated figures) ------------------------------------------------


def _phases(*flags: str, cached: bool = False) -> dict[str, float]:
    from tui_tuner.core.vllm_flags import ServeArgs

    profile = get_profile("llama-8b-h100")
    values: dict[str, object] = {}
    if "--enforce-eager" in flags:
        values["enforce_eager"] = True
    cfg = resolve(ServeArgs("m", values), profile)
    plan = plan_memory(cfg, profile)
    return startup_seconds(
        cfg, profile, plan, dummy_weights="dummy" in flags, compile_cached=cached
    )


def test_simulated_phases_dummy_weights_and_a_warm_cache() -> None:
    real, dummy = _phases(), _phases("dummy")
    assert real["load_weights"] > 5.0 > 0.2 > dummy["load_weights"]  # 15 GiB at 2.5 GB/s
    warm = _phases(cached=True)
    assert warm["compile"] == pytest.approx(0.3 * real["compile"])
    assert _phases("--enforce-eager", cached=True)["compile"] == 0.0
    # Without the new options the phases are what they were.
    assert {k: v for k, v in real.items() if k != "compile"} == {
        k: v for k, v in warm.items() if k != "compile"
    }


def test_compile_family_ignores_what_only_sizes_the_kv_cache() -> None:
    from tui_tuner.core.vllm_flags import ServeArgs

    profile = get_profile("llama-8b-h100")

    def family(**values: object) -> str:
        return compile_family(resolve(ServeArgs("m", values), profile), "m", profile)

    base = family()
    assert family(gpu_memory_utilization=0.8, enable_prefix_caching=False) == base
    assert family(max_num_seqs=64) != base and family(optimization_level=1) != base


def _seconds(log: str, pattern: str) -> float:
    found = re.search(pattern, log)
    assert found is not None, log
    return float(found[1])


def _start(start_sim: Callable[..., SimProcess], env: dict[str, str], *flags: str) -> str:
    sim = start_sim("--sim-time-scale", "20", *flags, env=env)
    log = sim.log()
    sim.process.terminate()
    sim.process.wait(10)
    return log


def test_sim_second_start_of_a_family_loads_the_compiled_graphs(
    start_sim: Callable[..., SimProcess], tmp_path: Path
) -> None:
    env = {"VLLM_CACHE_ROOT": str(tmp_path / "cache")}
    cold = _start(start_sim, env)
    assert "Compiling a graph for compile range" in cold
    markers = list((tmp_path / "cache" / "torch_compile_cache").glob(f"*/{MARKER}"))
    assert len(markers) == 1
    warm = _start(start_sim, env)
    assert "Directly load the compiled graph(s)" in warm
    compile_cold = _seconds(cold, r"torch.compile takes ([\d.]+) s")
    compile_warm = _seconds(warm, r"torch.compile takes ([\d.]+) s")
    assert compile_warm == pytest.approx(0.3 * compile_cold, rel=0.01)
    init = r"init engine \(profile, create kv cache, warmup model\) took ([\d.]+) s"
    assert _seconds(warm, init) < _seconds(cold, init) - 19  # 28 vs 8.4 simulated s (at 20x)
    # Another family (a different batch limit) compiles again.
    other = _start(start_sim, env, "--max-num-seqs", "64")
    assert "Compiling a graph" in other


def test_sim_dummy_weights_load_in_a_fraction_of_the_time(
    start_sim: Callable[..., SimProcess],
) -> None:
    real = _start(start_sim, {}, "--enforce-eager")
    dummy = _start(start_sim, {}, "--enforce-eager", "--load-format", "dummy")
    pattern = r"Model loading took [\d.]+ GiB memory and ([\d.]+) seconds"
    assert _seconds(dummy, pattern) < _seconds(real, pattern) / 20
    assert "Loading dummy weights" in dummy and "Loading dummy weights" not in real


def test_sim_without_a_cache_root_writes_nothing_and_compiles_cold(
    start_sim: Callable[..., SimProcess], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VLLM_CACHE_ROOT", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    log = _start(start_sim, {"HOME": str(tmp_path)})
    assert "Using cache directory" not in log and "Compiling a graph" in log
    assert not (tmp_path / ".cache").exists()


def test_sim_cache_root_that_cannot_be_written_fails_like_vllm(
    start_sim: Callable[..., SimProcess], tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    sim = start_sim("--sim-time-scale", "50", env={"VLLM_CACHE_ROOT": str(blocker)}, wait=False)
    assert sim.process.wait(30) == 1
    log = sim.log()
    assert "NotADirectoryError" in log and "Engine core initialization failed" in log


# -- a whole study -----------------------------------------------------------------------------


def test_a_fast_start_study_shares_one_cache_and_exports_real_weights(tmp_path: Path) -> None:
    """Three trials on the simulated server that differ only in what vLLM does not hash
    (gpu_memory_utilization): the first compiles, the next two load its graphs; every server
    had random weights; the exported command has none."""
    from tests.conftest import FAST_PROFILE
    from tests.test_guidellm_faults import FAKE, run_tuner

    config = tmp_path / "fast.yaml"
    config.write_text(f"""
study: {{name: fast, n_trials: 3, sampler: grid, seed: 0, baseline: false, remeasure_top: 0}}
server:
  command: ["tui-tuner", "sim-serve"]
  model: sim-model
  fast_start: true
  extra_args: ["--sim-profile-file", "{FAST_PROFILE}", "--sim-time-scale", "4"]
  startup_timeout_s: 60
workload: {{prompt_tokens: 64, output_tokens: 16, streams: 4, duration_s: 1, warmup_s: 0,
           benchmark_grace_s: 30}}
search_space: {{gpu_memory_utilization: {{options: [0.8, 0.85, 0.9]}}}}
""")
    study = tmp_path / "study"
    result = run_tuner(
        ["tune", str(config), "--headless", "--study-dir", str(study), "--guidellm", str(FAKE)],
        {"FAKE_GUIDELLM_MODE": "ok"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    trials = sorted((study / "trials").iterdir())
    assert len(trials) == 3
    for trial in trials:
        assert "--load-format dummy" in (trial / "command.txt").read_text()
    logs = [(t / "server.log").read_text() for t in trials]
    assert "Compiling a graph" in logs[0]
    assert all("Directly load the compiled graph(s)" in log for log in logs[1:])
    assert len(list((study / "vllm-cache" / "torch_compile_cache").glob(f"*/{MARKER}"))) == 1
    assert "load-format" not in result.stdout  # the answer's command
    for fmt in ("command", "yaml"):
        exported = run_tuner(["export", str(study), "--format", fmt], {})
        assert exported.returncode == 0, exported.stderr
        assert "gpu-memory-utilization" in exported.stdout.replace("_", "-")
        assert "load-format" not in exported.stdout and "dummy" not in exported.stdout


def test_the_dry_run_shows_the_cache_the_random_weights_and_an_auto_warmup(
    tmp_path: Path,
) -> None:
    from tests.test_guidellm_faults import run_tuner

    config = tmp_path / "c.yaml"
    config.write_text(BASE + "workload: {warmup_s: auto, warmup_max_s: 12, duration_s: 30}\n")
    result = run_tuner(["validate", str(config), "--dry-run"], {"COLUMNS": "300"})
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "VLLM_CACHE_ROOT=STUDY_DIR/vllm-cache" in out and "--load-format dummy" in out
    assert "until the throughput settles (at most 12 s), then at least 30 s measured" in out
    export = out.split("export would read:")[1]
    assert "load-format" not in export
