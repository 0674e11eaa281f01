"""Failure classes of a trial, and the vLLM log patterns that identify them.

A failed trial is a result, not a crash of the study: the engine records its class, a one-line
message a user can act on, the exit code and the last log lines. The class decides what the
tuner does next: a failure caused by the configuration (`CONFIG_CAUSED`) tells the sampler that
region of the space is infeasible; an environment failure (a busy GPU or port, a slow start)
says nothing about the flags.

The patterns match vLLM 0.33's messages (REFERENCE.md 1.5, 6), 0.10's spellings where they
differ, and the simulated server's, which prints the same texts. Each line is matched after
removing vLLM's `(<proc> pid=N) LEVEL MM-DD HH:MM:SS [file:line] ` header, because vLLM prints
an engine process's traceback with that header on every line.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

from tui_tuner.core.vllm_flags import removed

TAIL_LINES = 40
_SCAN_LINES = 4000  # the root cause is near the end; tracebacks of 3 processes fit easily
_MESSAGE_CHARS = 300


class FailureClass(str, Enum):  # StrEnum needs Python 3.11; the package supports 3.10
    INVALID_ARGS = "invalid_args"
    OOM_STARTUP = "oom_startup"
    KV_CAPACITY = "kv_capacity"
    STARTUP_TIMEOUT = "startup_timeout"
    SERVER_CRASHED = "server_crashed"
    BENCHMARK_FAILED = "benchmark_failed"
    TOO_MANY_ERRORS = "too_many_errors"
    PORT_IN_USE = "port_in_use"
    GPU_BUSY = "gpu_busy"
    SERVER_KILLED = "server_killed"

    def __str__(self) -> str:
        return self.value


#: classes caused by the configuration itself (the same flags would fail again) vs the environment
CONFIG_CAUSED: frozenset[FailureClass] = frozenset(
    {FailureClass.INVALID_ARGS, FailureClass.OOM_STARTUP, FailureClass.KV_CAPACITY}
    | {FailureClass.SERVER_CRASHED, FailureClass.TOO_MANY_ERRORS}
)


#: classes about the machine, not about one configuration: another process holds the GPU or the
#: port. Such a trial runs again once, and is never told as infeasible.
MACHINE_WIDE: frozenset[FailureClass] = frozenset({FailureClass.GPU_BUSY, FailureClass.PORT_IN_USE})


@dataclass(frozen=True)
class Failure:
    """Why a trial failed. `phase` is "startup", "ready" (smoke request) or "load"."""

    cls: FailureClass
    message: str
    exit_code: int | None
    tail: tuple[str, ...]
    phase: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "message", _one_line(self.message))
        object.__setattr__(self, "tail", tuple(str(t) for t in self.tail)[-TAIL_LINES:])

    @property
    def config_caused(self) -> bool:
        return self.cls in CONFIG_CAUSED

    def to_dict(self) -> dict[str, object]:
        return {
            "class": self.cls.value,
            "message": self.message,
            "exit_code": self.exit_code,
            "tail": list(self.tail),
            "phase": self.phase,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Failure:
        """Inverse of `to_dict`; raises ValueError on an unknown class or malformed fields."""
        code = data.get("exit_code")
        tail = data.get("tail", ())
        if code is not None and (isinstance(code, bool) or not isinstance(code, int)):
            raise ValueError(f"exit_code must be an int or null, got {code!r}")
        if not isinstance(tail, list | tuple):
            raise ValueError(f"tail must be a list of lines, got {type(tail).__name__}")
        return cls(
            FailureClass(str(data.get("class", data.get("cls")))),
            str(data.get("message", "")),
            code,
            tuple(str(t) for t in tail),
            str(data.get("phase", "startup")),
        )


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_HEADER = re.compile(
    r"^(?:\([^()]*pid=\d+\)\s*)?"
    r"(?:(?:DEBUG|INFO|WARNING|ERROR|CRITICAL)\s+\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?\s+"
    r"\[[^\]]*\]\s?)?"
)
_LEVEL_ERROR = re.compile(r"^(?:\([^()]*pid=\d+\)\s*)?(?:ERROR|CRITICAL)\s")
_ARGPARSE = re.compile(r"^(?:vllm[\w ]*|[\w.-]+\.py|tui-tuner[\w -]*): error: (.+)$")
_EXCEPTION = re.compile(r"^((?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception|Exit|Interrupt)): ")
_WRAPPER = re.compile(
    r"Engine core initialization failed|EngineCore encountered an issue|See root cause above"
)


def clean_line(line: str) -> str:
    """A log line without colour codes, vLLM's header and the trailing newline."""
    return _HEADER.sub("", _ANSI.sub("", line.rstrip("\r\n"))).rstrip()


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MESSAGE_CHARS else text[: _MESSAGE_CHARS - 3] + "..."


def _without_exception(text: str) -> str:
    """`ValueError: msg` -> `msg`: the exception name says nothing a user needs."""
    return _EXCEPTION.sub("", text, count=1)


def _first_sentence(text: str, longer_than: int = 160) -> str:
    """vLLM's long messages append advice after the first sentence; keep the fact."""
    if len(text) <= longer_than:
        return text
    end = text.find(". ", 40)
    return text[: end + 1] if end > 0 else text


def last_error_line(lines: Sequence[str]) -> str | None:
    """The most telling line: argparse's error, else the last exception that is not vLLM's
    "see root cause above" wrapper, else the last ERROR log line, else the wrapper."""
    cleaned = [clean_line(x) for x in lines[-_SCAN_LINES:]]
    for text in reversed(cleaned):
        if _ARGPARSE.match(text):
            return text
    wrapper: str | None = None
    for text in reversed(cleaned):
        if _EXCEPTION.match(text):
            if not _WRAPPER.search(text):
                return text
            wrapper = wrapper or text
    for raw in reversed(lines[-_SCAN_LINES:]):
        if _LEVEL_ERROR.match(_ANSI.sub("", raw)) and not _WRAPPER.search(raw):
            return clean_line(raw)
    return wrapper


def _exit_text(code: int | None) -> str:
    if code is None:
        return "stopped answering"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


# Each rule: a pattern searched from the end of the cleaned log, and how to word the failure.
_Match = tuple[int, re.Match[str]]
_Handler = Callable[[list[str], _Match], tuple[FailureClass, str]]


def _says(cls: FailureClass, template: str) -> _Handler:
    """Fill `template` with the match's groups and `{fact}`: the `fact` group if the pattern
    has one, else the matched line without its exception name, cut to its first sentence."""

    def word(lines: list[str], found: _Match) -> tuple[FailureClass, str]:
        m = found[1]
        text = m["fact"] if "fact" in m.re.groupindex else _without_exception(lines[found[0]])
        return cls, template.format(*m.groups(), fact=_first_sentence(text))

    return word


def _argparse(lines: list[str], found: _Match) -> tuple[FailureClass, str]:
    error = found[1][1]
    message = f"vLLM rejected an argument: {error}"
    if error.startswith("unrecognized arguments:"):
        names = (t.split("=", 1)[0] for t in error.split(":", 1)[1].split() if t.startswith("-"))
        notes = [r.explain() for r in map(removed, names) if r is not None]
        message += "".join(f" ({note})" for note in notes)
    return FailureClass.INVALID_ARGS, message


def _kv_len(lines: list[str], found: _Match) -> tuple[FailureClass, str]:
    text = lines[found[0]]
    need = re.search(r"\(([\d.]+) GiB KV cache is needed", text)
    have = re.search(r"available KV cache memory \(([\d.]+) GiB\)", text)
    est = re.search(r"estimated maximum model length is (-?\d+)", text)
    message = f"--max-model-len {found[1][1]} does not fit in the KV cache"
    if need and have:
        message += f" (needs {need[1]} GiB, {have[1]} GiB available)"
    if est:
        message += f"; the estimated maximum model length is {est[1]}"
    message += ". Lower --max-model-len or raise --gpu-memory-utilization"
    return FailureClass.KV_CAPACITY, message


_FREE_NUMBERS = re.compile(r"\(([\d.]+)/([\d.]+) GiB\).*?utilization \(([\d.]+), ([\d.]+) GiB\)")


def _free_memory(lines: list[str], found: _Match) -> tuple[FailureClass, str]:
    """An idle GPU still has its CUDA context allocated: if almost nothing but that is used,
    the utilization itself is too high (config), not another process (environment)."""
    m = _FREE_NUMBERS.search(lines[found[0]])
    if m is None:
        return FailureClass.GPU_BUSY, f"GPU busy: {_without_exception(lines[found[0]])}"
    free, total = float(m[1]), float(m[2])
    if total - free <= 1.0 + 0.01 * total:
        return FailureClass.OOM_STARTUP, (
            f"--gpu-memory-utilization {m[3]} asks for {m[4]} GiB but an idle GPU has only "
            f"{m[1]} of {m[2]} GiB free (the CUDA context holds the rest); lower it"
        )
    return FailureClass.GPU_BUSY, (
        f"GPU busy: only {m[1]} of {m[2]} GiB free at start-up (other processes hold "
        f"{total - free:.2f} GiB); --gpu-memory-utilization {m[3]} needs {m[4]} GiB"
    )


def _pydantic(lines: list[str], found: _Match) -> tuple[FailureClass, str]:
    """A field bound: the field's name is on the line above `Input should be ...`."""
    index, m = found
    field = lines[index - 1].strip() if index > 0 else ""
    got = re.search(r"input_value=([^,\]]+)", lines[index])
    detail = f"{field}: {m[1]}" if field and " " not in field else m[1]
    return FailureClass.INVALID_ARGS, f"vLLM rejected a value: {detail}" + (
        f" (got {got[1]})" if got else ""
    )


_OOM = re.compile(r"CUDA out of memory|OutOfMemoryError|can't allocate memory")
_CONFIG_ERRORS = (
    r"max_num_batched_tokens \(\d+\) (?:is smaller than max_model_len|must be greater than or"
    r" equal to max_num_seqs)|User-specified max_model_len|max_num_active_seqs .*cannot be greater"
    r"|long_prefill_token_threshold .*cannot be greater|No common block size for"
    r"|must be divisible by tensor parallel size|Pipeline parallel size \(\d+\) is larger than"
    r"|number of required GPUs exceeds|max_model_len must be a positive integer"
)
_F = FailureClass

#: Order matters: a start-up log can match several rules (vLLM's sampler OOM also says "CUDA out
#: of memory"; "Cannot auto-fit" also says "not enough GPU memory"), so the specific rule wins.
# fmt: off
_STARTUP_RULES: tuple[tuple[re.Pattern[str], _Handler], ...] = (
    (_ARGPARSE, _argparse),
    (re.compile(r"address already in use|\[Errno (?:98|48)\]", re.I),
     _says(_F.PORT_IN_USE, "the port is already in use: {fact}")),
    (re.compile(r"Free memory on device\b.*on startup is less than desired"), _free_memory),
    (re.compile(r"models?'?s? max seq len \((\d+)\)"), _kv_len),  # 0.10: models's
    (re.compile(r"No available memory for the cache blocks"),
     _says(_F.KV_CAPACITY, "no GPU memory is left for the KV cache after weights and "
           "activations: raise --gpu-memory-utilization, or lower --max-num-seqs / "
           "--max-num-batched-tokens")),
    (re.compile(r"Cannot auto-fit max_model_len"),
     _says(_F.KV_CAPACITY, "--max-model-len auto: not even one token of KV cache fits; raise "
           "--gpu-memory-utilization")),
    (re.compile(r"out of memory occurred when warming up sampler with (\d+)"),
     _says(_F.OOM_STARTUP, "out of GPU memory warming up the sampler with {0} dummy requests; "
           "lower --max-num-seqs or --gpu-memory-utilization")),
    (re.compile(r"Failed to load model - not enough GPU memory"),
     _says(_F.OOM_STARTUP, "the model weights do not fit in GPU memory (vLLM: Failed to load "
           "model - not enough GPU memory); use more tensor parallelism or quantization")),
    (_OOM, _says(_F.OOM_STARTUP, "out of memory during start-up: {fact}")),
    (re.compile(r"Value error, (?P<fact>.+?)(?: \[type=.*)?$"),
     _says(_F.INVALID_ARGS, "vLLM rejected the configuration: {fact}")),
    (re.compile(r"(Input should be .+?)(?: \[type=.*)?$"), _pydantic),
    (re.compile(_CONFIG_ERRORS), _says(_F.INVALID_ARGS, "vLLM rejected the configuration: {fact}")),
)
# fmt: on


def _search(pattern: re.Pattern[str], lines: list[str]) -> _Match | None:
    for index in range(len(lines) - 1, -1, -1):
        m = pattern.search(lines[index])
        if m is not None:
            return index, m
    return None


def _tail(lines: Sequence[str]) -> tuple[str, ...]:
    return tuple(x.rstrip("\r\n") for x in lines[-TAIL_LINES:])


def _with_last_error(text: str, lines: Sequence[str]) -> str:
    last = last_error_line(lines)
    return f"{text}; last error: {last}" if last else text


def classify_startup(exit_code: int | None, lines: Sequence[str], *, timed_out: bool) -> Failure:
    """Classify a server that never became healthy.

    Log evidence wins over the exit status: a known root cause is named even when the process
    was killed at the start-up timeout. Exit code 2 is argparse's, so it is `invalid_args` even
    without its line. An unknown cause is `server_crashed` (config-caused: the same flags would
    most likely fail the same way, and a failed config is never retried verbatim anyway).
    """
    cleaned = [clean_line(x) for x in lines[-_SCAN_LINES:]]
    for pattern, word in _STARTUP_RULES:
        found = _search(pattern, cleaned)
        if found is not None:
            cls, message = word(cleaned, found)
            return Failure(cls, message, exit_code, _tail(lines), "startup")
    if exit_code == 2:
        message = _with_last_error("vLLM rejected its arguments (exit code 2)", lines)
        return Failure(FailureClass.INVALID_ARGS, message, exit_code, _tail(lines), "startup")
    if timed_out:
        last = next((x for x in reversed(cleaned) if x.strip()), "")
        message = "the server did not become healthy before the start-up timeout"
        message += f"; last line: {last}" if last else ""
        return Failure(FailureClass.STARTUP_TIMEOUT, message, exit_code, _tail(lines), "startup")
    killed = _killed_from_outside(exit_code, lines, "start-up", "startup")
    if killed is not None:
        return killed
    message = _with_last_error(f"the server {_exit_text(exit_code)} during start-up", lines)
    return Failure(FailureClass.SERVER_CRASHED, message, exit_code, _tail(lines), "startup")


def _killed_from_outside(
    exit_code: int | None, lines: Sequence[str], when: str, phase: str
) -> Failure | None:
    """A server ended by a signal while the tuner sent none (the classify functions are only
    called before the tuner stops a server), with no error in its log: an operator's kill, or
    the host's OOM killer, not its flags. None otherwise."""
    if exit_code is None or exit_code >= 0 or last_error_line(lines) is not None:
        return None
    if _search(_OOM, [clean_line(x) for x in lines[-_SCAN_LINES:]]) is not None:
        return None
    message = (
        f"the server {_exit_text(exit_code)} during {when}, a signal the tuner did not send, "
        "with no error in its log: killed from outside (an operator, or the host's OOM "
        "killer), not by its flags; it runs again"
    )
    return Failure(FailureClass.SERVER_KILLED, message, exit_code, _tail(lines), phase)


def classify_under_load(
    exit_code: int | None, lines: Sequence[str], *, phase: str = "load"
) -> Failure:
    """The server died or went unhealthy after it was ready (smoke request or benchmark).

    `server_crashed`, unless a signal nobody in the tuner sent ended it with a clean log
    (`server_killed`, which runs again: see `_killed_from_outside`). An out-of-memory under
    load says so, because it means the flags leave too little headroom for a full batch (lower
    gpu-memory-utilization or batch sizes).
    """
    where = "the readiness check" if phase == "ready" else "the benchmark"
    killed = _killed_from_outside(exit_code, lines, where, phase)
    if killed is not None:
        return killed
    cleaned = [clean_line(x) for x in lines[-_SCAN_LINES:]]
    oom = _search(_OOM, cleaned)
    if oom is not None:
        what = _first_sentence(_without_exception(cleaned[oom[0]]))
        message = f"out of memory under load during {where} ({what}); the server "
        message += _exit_text(exit_code)
    elif exit_code is None:
        message = _with_last_error(f"the server became unhealthy during {where}", lines)
    else:
        message = _with_last_error(f"the server {_exit_text(exit_code)} during {where}", lines)
    return Failure(FailureClass.SERVER_CRASHED, message, exit_code, _tail(lines), phase)


def benchmark_failure(message: str, lines: Sequence[str], *, phase: str = "load") -> Failure:
    """The load generator failed while the server stayed healthy: an environment problem."""
    return Failure(FailureClass.BENCHMARK_FAILED, message, None, _tail(lines), phase)


def too_many_errors(errored: int, finished: int, limit: float, lines: Sequence[str]) -> Failure:
    """More than `limit` (a fraction, 0.05 = 5%) of the finished requests (successful plus
    errored) failed: the server ran but the configuration does not serve this workload."""
    share = errored / finished if finished > 0 else 1.0
    message = (
        f"{errored} of {finished} finished requests failed ({share:.0%}), "
        f"above the limit of {limit * 100:g}%"
    )
    return Failure(FailureClass.TOO_MANY_ERRORS, message, None, _tail(lines), "load")
