"""The failure classifier against vLLM-like logs (reconstructed) and the simulator's (captured).

Each fixture is a whole log; the test names the class and words the message must contain, so a
reworded message still passes while a misclassification fails.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tui_tuner.core.failures import (
    CONFIG_CAUSED,
    TAIL_LINES,
    Failure,
    FailureClass,
    benchmark_failure,
    classify_startup,
    classify_under_load,
    clean_line,
    last_error_line,
    too_many_errors,
)

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).resolve().parents[1]
F = FailureClass

# name -> (class, words the message contains); under-load cases are classified as such
VLLM_CASES: dict[str, tuple[FailureClass, tuple[str, ...]]] = {
    "argparse_invalid_int": (
        F.INVALID_ARGS,
        ("argument --max-num-seqs: invalid int value: 'abc'",),
    ),
    "unrecognized_cuda_graph_sizes": (
        F.INVALID_ARGS,
        ("unrecognized arguments: --cuda-graph-sizes", "--cudagraph-capture-sizes"),
    ),
    "unrecognized_unknown_flag": (F.INVALID_ARGS, ("--no-such-flag",)),
    "pydantic_max_num_seqs": (
        F.INVALID_ARGS,
        ("max_num_seqs: Input should be greater than or equal to 1", "(got -5)"),
    ),
    "max_model_len_too_large": (F.INVALID_ARGS, ("User-specified max_model_len (100000)",)),
    "batched_tokens_below_seqs": (
        F.INVALID_ARGS,
        ("max_num_batched_tokens (64) must be greater than or equal to max_num_seqs (128)",),
    ),
    "kv_capacity_v033": (F.KV_CAPACITY, ("max-model-len 2048", "maximum model length is 384")),
    "kv_capacity_v010": (F.KV_CAPACITY, ("max-model-len 131072", "maximum model length is 49872")),
    "no_cache_blocks": (F.KV_CAPACITY, ("KV cache", "--gpu-memory-utilization")),
    "auto_fit_no_memory": (F.KV_CAPACITY, ("--max-model-len auto",)),
    "gpu_busy": (F.GPU_BUSY, ("30.12 of 79.19 GiB free", "0.92 needs 72.85 GiB")),
    "cuda_oom_weights": (F.OOM_STARTUP, ("weights do not fit",)),
    "sampler_warmup_oom": (F.OOM_STARTUP, ("sampler with 1024 dummy requests", "--max-num-seqs")),
    "port_in_use": (F.PORT_IN_USE, ("Address already in use",)),
    "unknown_crash": (
        F.SERVER_CRASHED,
        ("exited with code 1 during start-up", "illegal memory access"),
    ),
    "cpu_block_size": (F.INVALID_ARGS, ("No common block size for 16",)),
    "startup_hang": (F.STARTUP_TIMEOUT, ("Dynamo bytecode transform time",)),
    "cpu_attention_under_load": (F.SERVER_CRASHED, ("head_dim=16", "exited with code 1")),
    "cuda_oom_under_load": (F.SERVER_CRASHED, ("out of memory under load", "Tried to allocate")),
}
UNDER_LOAD = {"cpu_attention_under_load", "cuda_oom_under_load", "oom_under_load"}

SIM_CASES: dict[str, tuple[FailureClass, tuple[str, ...]]] = {
    "invalid_int": (F.INVALID_ARGS, ("argument --max-num-seqs: invalid int value: 'abc'",)),
    "invalid_choice": (F.INVALID_ARGS, ("argument --dtype: invalid choice: 'bogus'",)),
    "unrecognized_removed_flag": (
        F.INVALID_ARGS,
        ("--cuda-graph-sizes 8 16", "was removed in vLLM 0.11"),
    ),
    "unrecognized_unknown_flag": (F.INVALID_ARGS, ("--no-such-flag 3",)),
    "pydantic_max_num_seqs": (F.INVALID_ARGS, ("max_num_seqs: Input should be", "(got -5)")),
    "max_model_len_too_large": (F.INVALID_ARGS, ("User-specified max_model_len (200000)",)),
    "batched_tokens_below_seqs": (F.INVALID_ARGS, ("max_num_batched_tokens (64)",)),
    "tp_not_divisible": (F.INVALID_ARGS, ("divisible by tensor parallel size (3)",)),
    "block_size_unsupported": (F.INVALID_ARGS, ("No common block size for 8",)),
    "gpu_busy": (F.GPU_BUSY, ("other processes hold 20.60 GiB",)),
    "gpu_mem_util_1": (F.OOM_STARTUP, ("--gpu-memory-utilization 1.0", "idle GPU")),
    "weights_do_not_fit": (F.OOM_STARTUP, ("weights do not fit",)),
    "no_cache_blocks": (F.KV_CAPACITY, ("no GPU memory is left for the KV cache",)),
    "kv_capacity": (F.KV_CAPACITY, ("max-model-len 131072", "maximum model length is 49872")),
    "sampler_warmup_oom": (F.OOM_STARTUP, ("sampler with 1024 dummy requests",)),
    "port_in_use": (F.PORT_IN_USE, ("address already in use",)),
    "oom_under_load": (F.SERVER_CRASHED, ("out of memory under load", "exited with code 1")),
}


def _cases(folder: str) -> dict[str, dict[str, object]]:
    data: dict[str, dict[str, object]] = json.loads((FIXTURES / folder / "cases.json").read_text())
    return data


def _classify(name: str, exit_code: int | None, lines: list[str]) -> Failure:
    if name in UNDER_LOAD:
        return classify_under_load(exit_code, lines)
    return classify_startup(exit_code, lines, timed_out=exit_code is None)


def _check(failure: Failure, expected: tuple[FailureClass, tuple[str, ...]], log: str) -> None:
    cls, words = expected
    assert failure.cls is cls, f"{failure.message}\n--- log ---\n{log}"
    for word in words:
        assert word in failure.message, failure.message
    assert "\n" not in failure.message
    assert len(failure.tail) <= TAIL_LINES


@pytest.mark.parametrize("folder, table", [("vllm_logs", VLLM_CASES), ("sim_logs", SIM_CASES)])
def test_every_fixture_has_an_expectation(folder: str, table: dict[str, object]) -> None:
    logs = {p.stem for p in (FIXTURES / folder).glob("*.log")}
    assert logs == set(table) == set(_cases(folder))


@pytest.mark.parametrize("name", sorted(VLLM_CASES))
def test_reconstructed_vllm_log(name: str) -> None:
    case = _cases("vllm_logs")[name]
    log = (FIXTURES / "vllm_logs" / f"{name}.log").read_text()
    code = case["exit_code"]
    assert code is None or isinstance(code, int)
    _check(_classify(name, code, log.splitlines()), VLLM_CASES[name], log)


@pytest.mark.parametrize("name", sorted(SIM_CASES))
def test_captured_sim_log(name: str) -> None:
    case = _cases("sim_logs")[name]
    log = (FIXTURES / "sim_logs" / f"{name}.log").read_text()
    code = case["exit_code"]
    assert isinstance(code, int)
    _check(_classify(name, code, log.splitlines()), SIM_CASES[name], log)


@pytest.mark.parametrize("name", sorted(set(SIM_CASES) - UNDER_LOAD))
def test_sim_still_fails_like_fixture(name: str, tiny_model: Path) -> None:
    """The simulator's current output, not just the captured one, classifies the same."""
    case = _cases("sim_logs")[name]
    flags = case["flags"]
    assert isinstance(flags, list)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        if name == "port_in_use":
            holder.listen()
        else:
            holder.close()
        proc = subprocess.run(
            [sys.executable, "-m", "tui_tuner", "sim-serve", str(tiny_model), "--port", str(port)]
            + [str(f) for f in flags],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
    log = proc.stdout + proc.stderr
    assert proc.returncode == case["exit_code"], log
    _check(_classify(name, proc.returncode, log.splitlines()), SIM_CASES[name], log)


def test_clean_line_strips_header_and_colour() -> None:
    raw = "\x1b[1;36m(EngineCore_DP0 pid=7)\x1b[0m ERROR 11-22 10:00:31 [core.py:1] ValueError: x\n"
    assert clean_line(raw) == "ValueError: x"
    assert clean_line("INFO 08-20 09:12:01 [__init__.py:241] hello") == "hello"
    assert clean_line("(APIServer pid=1) Traceback (most recent call last):") == (
        "Traceback (most recent call last):"
    )


def test_last_error_line_prefers_the_root_cause_over_the_wrapper() -> None:
    lines = [
        "(EngineCore_DP0 pid=2) ValueError: No common block size for 16.",
        "(APIServer pid=1) RuntimeError: Engine core initialization failed. See root cause above.",
    ]
    assert last_error_line(lines) == "ValueError: No common block size for 16."
    assert last_error_line(lines[1:]) == (
        "RuntimeError: Engine core initialization failed. See root cause above."
    )
    assert last_error_line(["(APIServer pid=1) ERROR 11-22 10:00:00 [x.py:1] boom"]) == "boom"
    assert last_error_line(["INFO 11-22 10:00:00 [x.py:1] fine", ""]) is None


def test_log_evidence_beats_the_timeout_and_exit_code_2_alone_is_invalid_args() -> None:
    oom = ["torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB."]
    assert classify_startup(-9, oom, timed_out=True).cls is F.OOM_STARTUP
    bare = classify_startup(2, ["usage: vllm serve"], timed_out=False)
    assert bare.cls is F.INVALID_ARGS
    assert "exit code 2" in bare.message


def test_unknown_start_up_exit_is_server_crashed_with_the_signal_named() -> None:
    crashed = ["INFO 11-22 10:00:00 [x.py:1] Loading", "RuntimeError: engine died"]
    failure = classify_startup(-6, crashed, timed_out=False)
    assert failure.cls is F.SERVER_CRASHED
    assert failure.phase == "startup"
    assert "killed by SIGABRT" in failure.message and "engine died" in failure.message
    assert classify_startup(None, [], timed_out=True).cls is F.STARTUP_TIMEOUT
    assert classify_startup(1, ["INFO fine"], timed_out=False).cls is F.SERVER_CRASHED


def test_a_signal_the_tuner_did_not_send_with_a_clean_log_is_server_killed() -> None:
    """An operator's kill -9 or the host's OOM killer says nothing about the flags: the trial
    is `server_killed`, which is not config-caused, so the configuration runs again."""
    clean = ["INFO 11-22 10:00:00 [x.py:1] Loading"]
    for failure in (
        classify_startup(-9, clean, timed_out=False),
        classify_under_load(-9, clean),
        classify_under_load(-15, clean, phase="ready"),
    ):
        assert failure.cls is F.SERVER_KILLED, failure
        assert not failure.config_caused
        assert "killed by SIG" in failure.message and "not by its flags" in failure.message
    # With an error or an out-of-memory in its log, the death is the server's own.
    oom = [*clean, "torch.OutOfMemoryError: CUDA out of memory."]
    assert classify_under_load(-9, oom).cls is F.SERVER_CRASHED
    assert classify_startup(-9, [*clean, "ValueError: bad"], timed_out=False).cls is not (
        F.SERVER_KILLED
    )


def test_under_load_unhealthy_and_ready_phase() -> None:
    failure = classify_under_load(None, ["ERROR 11-22 10:00:00 [x.py:1] stuck"], phase="ready")
    assert failure.cls is F.SERVER_CRASHED
    assert failure.phase == "ready"
    assert "unhealthy during the readiness check" in failure.message
    assert "stuck" in failure.message


def test_benchmark_and_error_rate_failures() -> None:
    bench = benchmark_failure("guidellm exited with code 1", ["Traceback", "KeyError: 'x'"])
    assert (bench.cls, bench.phase, bench.exit_code) == (F.BENCHMARK_FAILED, "load", None)
    assert bench.cls not in CONFIG_CAUSED
    errors = too_many_errors(12, 40, 0.1, [])
    assert errors.cls is F.TOO_MANY_ERRORS
    assert errors.message == "12 of 40 finished requests failed (30%), above the limit of 10%"
    assert "0 of 0" in too_many_errors(0, 0, 0.05, []).message


def test_config_caused_classes() -> None:
    env = {F.STARTUP_TIMEOUT, F.BENCHMARK_FAILED, F.PORT_IN_USE, F.GPU_BUSY, F.SERVER_KILLED}
    assert set(FailureClass) - CONFIG_CAUSED == env
    assert Failure(F.KV_CAPACITY, "m", 1, (), "startup").config_caused
    assert str(F.GPU_BUSY) == "gpu_busy"


def test_failure_round_trips_and_normalises() -> None:
    lines = [f"line {i}" for i in range(100)]
    failure = Failure(F.OOM_STARTUP, "two\nlines", 1, tuple(lines), "startup")
    assert failure.message == "two lines"
    assert failure.tail == tuple(lines[-TAIL_LINES:])
    data = json.loads(json.dumps(failure.to_dict()))
    assert data["class"] == "oom_startup"
    assert Failure.from_dict(data) == failure
    with pytest.raises(ValueError):
        Failure.from_dict({**data, "class": "nope"})
    with pytest.raises(ValueError):
        Failure.from_dict({**data, "exit_code": "1"})
