"""Drive GuideLLM 0.8.1 as a subprocess: build its command, follow its log, read its report.

GuideLLM lives in its own virtual environment and is never imported here: it pulls in torch,
transformers and datasets, spawns worker processes, and its in-process API has no progress
hook. The CLI plus the JSON report is the stable contract, checked against the real 0.8.1
(``guidellm run --help`` and a run against ``guidellm mock-server``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from tui_tuner.core.errors import UserError
from tui_tuner.core.measurement import Measurement

__all__ = [
    "GUIDELLM_VERSION",
    "SCENARIO_NAME",
    "GuidellmNotFound",
    "GuidellmProgress",
    "GuidellmReportError",
    "GuidellmTimeout",
    "GuidellmWorkload",
    "ProfileKind",
    "backend_scenario",
    "build_guidellm_command",
    "parse_guidellm_report",
    "parse_progress_line",
]

GUIDELLM_VERSION = "0.8.1"
#: The file, in the trial's directory, that gives GuideLLM its backend and the API key.
SCENARIO_NAME = "guidellm-backend.json"
ProfileKind = Literal["concurrent", "constant", "poisson", "throughput", "synchronous"]
RequestFormat = Literal["/v1/completions", "/v1/chat/completions"]
_Scalar = str | int | float | bool | None


class GuidellmReportError(ValueError):
    """The report is missing, unreadable or holds no usable measurement."""


class GuidellmNotFound(UserError, FileNotFoundError):
    """The configured GuideLLM executable does not exist or cannot be run."""


class GuidellmTimeout(TimeoutError):
    """GuideLLM overran its time budget and its process group was killed.

    A separate type (rather than a plain exit code) because a hung load generator is a different
    failure from a crashed one, and a signal exit code alone cannot tell them apart.
    """

    def __init__(self, timeout_s: float, returncode: int | None) -> None:
        super().__init__(f"GuideLLM did not finish within {timeout_s:g} s and was killed")
        self.timeout_s = timeout_s
        self.returncode = returncode


# Lower bounds of the integer options; GuideLLM rejects smaller values only after start-up.
_AT_LEAST = {
    **dict.fromkeys(("prompt_tokens", "output_tokens", "streams", "max_concurrency"), 1),
    **dict.fromkeys(("max_errors", "max_requests", "prefix_count"), 1),
    **dict.fromkeys(("prompt_tokens_stdev", "output_tokens_stdev"), 1),
    "prefix_tokens": 0,
}


@dataclass(frozen=True)
class GuidellmWorkload:
    """The load one benchmark level applies.

    ``warmup``/``cooldown`` follow GuideLLM's own rule: a value below 1 is a fraction of
    ``max_duration_s``, 1 or more is seconds. Those periods are excluded from the metrics.
    """

    prompt_tokens: int
    output_tokens: int
    profile: ProfileKind = "concurrent"
    streams: int | None = None
    rate: float | None = None
    max_concurrency: int | None = None
    max_duration_s: float = 60.0
    warmup: float = 0.1
    cooldown: float = 0.1
    max_errors: int | None = 20
    max_requests: int | None = None
    prompt_tokens_stdev: int | None = None
    output_tokens_stdev: int | None = None
    prefix_tokens: int | None = None
    prefix_count: int | None = None
    seed: int | None = None
    request_format: RequestFormat = "/v1/completions"
    #: A prompt file (JSON/JSONL, CSV, text, Parquet) used instead of synthetic prompts; each
    #: request then asks for ``output_tokens`` new tokens.
    dataset: str | None = None

    def __post_init__(self) -> None:
        # Fail here, not 20 s into a GuideLLM start-up, and never let an option be silently
        # ignored (a stray ``streams`` on a poisson profile would mislabel the trial).
        if self.profile not in get_args(ProfileKind):
            raise ValueError(f"unknown profile {self.profile!r}")
        for name, low in _AT_LEAST.items():
            value = getattr(self, name)
            if value is not None and value < low:
                raise ValueError(f"{name} must be >= {low}, got {value}")
        for name, value in (("max_duration_s", self.max_duration_s), ("rate", self.rate)):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be positive, got {value}")
        for name, value in (("warmup", self.warmup), ("cooldown", self.cooldown)):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be >= 0, got {value}")
        if (self.profile == "concurrent") != (self.streams is not None):
            raise ValueError("streams is required for, and only for, the concurrent profile")
        if (self.profile in ("constant", "poisson")) != (self.rate is not None):
            raise ValueError("rate is required for, and only for, constant/poisson profiles")
        if self.max_concurrency is not None and self.profile in ("concurrent", "synchronous"):
            raise ValueError("max_concurrency applies to constant/poisson/throughput only")

    @property
    def target_concurrency(self) -> int | None:
        """Requests meant to be in flight, for :func:`client_limited` (None for rate profiles)."""
        if self.profile == "concurrent":
            return self.streams
        return 1 if self.profile == "synchronous" else None


# --- command line ------------------------------------------------------------------------------

# A string is passed as ``key=value`` only when GuideLLM's YAML-then-arg-string parser
# (``utils/cli.py:parse_arguments``) gives it back unchanged: no comma, '=', space or '#', not
# starting with a YAML indicator or digit, and not a YAML 1.1 bool/null word. Anything else goes
# in a JSON object, which GuideLLM also accepts and which cannot be misread.
_KV_SAFE = re.compile(r"[A-Za-z_/][A-Za-z0-9_./:@+-]*")
_YAML_WORDS = frozenset({"y", "n", "yes", "no", "true", "false", "on", "off", "null"})


def _kv_safe(value: _Scalar) -> bool:
    if isinstance(value, str):
        return bool(_KV_SAFE.fullmatch(value)) and value.lower() not in _YAML_WORDS
    return True


def _fmt(value: _Scalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value.is_integer():
            return str(int(value))
        # PyYAML 1.1 reads "1e-05" as a string; spell it out.
        return f"{value:.12f}".rstrip("0") if "e" in repr(value) else repr(value)
    return str(value)


def _option(kind: str, fields: Mapping[str, _Scalar]) -> str:
    items = {"kind": kind, **{k: v for k, v in fields.items() if v is not None}}
    if all(_kv_safe(v) for v in items.values()):
        return ",".join(f"{key}={_fmt(val)}" for key, val in items.items())
    return json.dumps(items, ensure_ascii=False)


def _backend(target: str, model: str, workload: GuidellmWorkload) -> dict[str, _Scalar]:
    backend: dict[str, _Scalar] = {
        "target": target,
        "model": model,
        "request_format": workload.request_format,
    }
    if workload.dataset is not None:
        backend["max_tokens"] = workload.output_tokens
    return backend


def backend_scenario(target: str, model: str, workload: GuidellmWorkload, api_key: str) -> str:
    """A GuideLLM scenario file (JSON) that holds only the backend, API key included.

    GuideLLM has no environment variable for the key, and an argument is visible to every user
    of the machine (``ps``), so with a key the backend goes in this file, written owner-only
    and passed with ``--scenario``; GuideLLM merges the other options of the command over it.
    """
    backend = {"kind": "openai_http", **_backend(target, model, workload), "api_key": api_key}
    return json.dumps({"spec": {"backend": backend}})


def build_guidellm_command(
    executable: str | Path,
    target: str,
    model: str,
    tokenizer: str | Path | None,
    workload: GuidellmWorkload,
    report_path: Path,
    scenario_path: Path | None = None,
) -> list[str]:
    """Argument list (never a shell string) for one ``guidellm run`` level.

    ``sample_size=0`` drops prompt/output text from the report; per-request timing records
    are still written (about 3.3 KB each), so long runs give reports of several MB. Only a JSON
    output is requested, which also stops GuideLLM writing its default CSV into the cwd. With
    ``scenario_path`` (the file :func:`backend_scenario` wrote, for a server that needs an API
    key) the backend is read from that file; otherwise it is an argument.
    """
    w = workload
    backend: list[str] = ["--backend", _option("openai_http", _backend(target, model, w))]
    if scenario_path is not None:
        backend = ["--scenario", str(scenario_path)]
    options: list[tuple[str, str, dict[str, _Scalar]]] = [
        # Only the fields relevant to the profile are set (the workload validates that).
        (
            "--profile",
            w.profile,
            {
                "streams": w.streams,
                "rate": w.rate,
                "max_concurrency": w.max_concurrency,
                "warmup": w.warmup,
                "cooldown": w.cooldown,
            },
        ),
        ("--constraint", "max_duration", {"seconds": w.max_duration_s}),
    ]
    if w.max_errors is not None:
        options.append(("--constraint", "max_errors", {"count": w.max_errors}))
    if w.max_requests is not None:
        options.append(("--constraint", "max_requests", {"count": w.max_requests}))
    data = (
        "prompt_tokens",
        "prompt_tokens_stdev",
        "output_tokens",
        "output_tokens_stdev",
        "prefix_tokens",
        "prefix_count",
    )
    if w.dataset is not None:
        options.append(("--data", _dataset_kind(w.dataset), {"path": w.dataset}))
    else:
        options.append(("--data", "synthetic_text", {k: getattr(w, k) for k in data}))
    if tokenizer is not None:
        options.append(("--tokenizer", "huggingface_auto", {"model": str(tokenizer)}))
    if w.seed is not None:
        options.append(("--seed", "static", {"value": w.seed}))
    options.append(("--metrics", "generative", {"sample_size": 0}))
    options.append(("--output", "json", {"path": str(report_path)}))
    cmd = [str(executable), "run", *backend]
    for flag, kind, fields in options:
        cmd += [flag, _option(kind, fields)]
    return [*cmd, "--disable-console-interactive"]


_DATASET_KINDS = {
    ".json": "json_file",
    ".jsonl": "json_file",
    ".csv": "csv_file",
    ".txt": "text_file",
    ".parquet": "parquet_file",
    ".arrow": "arrow_file",
}


def _dataset_kind(path: str) -> str:
    """GuideLLM's file deserializer for ``path``, by its suffix (JSON Lines is ``json_file``)."""
    suffix = Path(path).suffix.lower()
    if suffix not in _DATASET_KINDS:
        allowed = ", ".join(sorted(_DATASET_KINDS))
        raise ValueError(f"dataset {path}: unknown file type {suffix!r}; use one of {allowed}")
    return _DATASET_KINDS[suffix]


# --- report ----------------------------------------------------------------------------------


def _get(obj: Any, path: str, source: Path, prefix: str) -> Any:
    for part in path.split("."):
        if not isinstance(obj, Mapping) or part not in obj or obj[part] is None:
            raise GuidellmReportError(f"GuideLLM report {source}: missing {prefix}.{path}")
        obj = obj[part]
    return obj


def _num(obj: Any, path: str, source: Path, prefix: str) -> float:
    value = _get(obj, path, source, prefix)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise GuidellmReportError(
            f"GuideLLM report {source}: {prefix}.{path} is not a finite number ({value!r})"
        )
    return float(value)


def _warnings(raw: Any) -> tuple[str, ...]:
    if not isinstance(raw, list):
        return ()
    out = []
    for item in raw:
        if isinstance(item, Mapping):
            code, message = item.get("code", "warning"), item.get("message", "")
            out.append(f"{code}: {message}".strip())
        else:
            out.append(str(item))
    return tuple(out)


def parse_guidellm_report(path: Path, index: int = -1) -> Measurement:
    """Read benchmark ``index`` (default: the last) of a GuideLLM 0.8.1 JSON report.

    Request latency is reported in seconds and converted to ms; TTFT/ITL/TPOT are already ms.
    A report with no successful request is an error, not a zero measurement: it means the
    server failed, and the optimiser must not read it as "infinitely slow but valid".
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GuidellmReportError(f"GuideLLM report {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise GuidellmReportError(f"GuideLLM report {path} cannot be read: {exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise GuidellmReportError(
            f"GuideLLM report {path} is not valid JSON (truncated or corrupt?): {exc}"
        ) from exc
    benchmarks = data.get("benchmarks") if isinstance(data, Mapping) else None
    if not isinstance(benchmarks, list) or not benchmarks:
        raise GuidellmReportError(f"GuideLLM report {path} has no benchmarks")
    if not -len(benchmarks) <= index < len(benchmarks):
        raise GuidellmReportError(
            f"GuideLLM report {path} has {len(benchmarks)} benchmark(s); no index {index}"
        )
    i = index % len(benchmarks)
    bench, pre = benchmarks[i], f"benchmarks[{i}]"
    totals = _get(bench, "metrics.request_totals", path, pre)
    counts = {
        k: int(_num(totals, k, path, f"{pre}.metrics.request_totals"))
        for k in ("successful", "errored", "incomplete")
    }
    if counts["successful"] == 0:
        raise GuidellmReportError(
            f"GuideLLM report {path}: {pre} recorded zero successful requests "
            f"(errored={counts['errored']}, incomplete={counts['incomplete']})"
        )
    m = _get(bench, "metrics", path, pre)
    mp = f"{pre}.metrics"

    def ok(metric: str, stat: str) -> float:
        return _num(m, f"{metric}.successful.{stat}", path, mp)

    return Measurement(
        output_tok_s=ok("output_tokens_per_second", "mean"),
        total_tok_s=ok("tokens_per_second", "mean"),
        requests_per_s=ok("requests_per_second", "mean"),
        request_latency_p50_ms=ok("request_latency", "percentiles.p50") * 1000.0,
        request_latency_p95_ms=ok("request_latency", "percentiles.p95") * 1000.0,
        request_latency_p99_ms=ok("request_latency", "percentiles.p99") * 1000.0,
        ttft_p50_ms=ok("time_to_first_token_ms", "percentiles.p50"),
        ttft_p95_ms=ok("time_to_first_token_ms", "percentiles.p95"),
        ttft_p99_ms=ok("time_to_first_token_ms", "percentiles.p99"),
        itl_p50_ms=ok("inter_token_latency_ms", "percentiles.p50"),
        itl_p95_ms=ok("inter_token_latency_ms", "percentiles.p95"),
        tpot_p50_ms=ok("time_per_output_token_ms", "percentiles.p50"),
        successful_requests=counts["successful"],
        errored_requests=counts["errored"],
        incomplete_requests=counts["incomplete"],
        achieved_concurrency=_num(m, "request_concurrency.total.mean", path, mp),
        duration_s=_num(bench, "duration", path, pre),
        warnings=_warnings(bench.get("warnings")),
    )


# --- progress --------------------------------------------------------------------------------


@dataclass(frozen=True)
class GuidellmProgress:
    """One periodic progress record (every 10 s and on each state change).

    ``status`` is started/warmup/active/cooldown/compile/completed. The counts during a run
    include warmup requests; the ``completed`` record counts only the measured window.
    """

    benchmark_index: int
    strategy: str
    status: str
    elapsed_s: float
    successful: int
    errored: int
    incomplete: int
    requests_per_s: float
    output_tok_s: float


_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_F = r"([-+]?(?:\d+(?:\.\d*)?|inf|nan))"
_PROGRESS = re.compile(
    rf"Benchmark (\d+) \((.*?)\): (\w+) \| elapsed={_F}s \| "
    r"successful=(\d+) errored=(\d+) incomplete=(\d+) \| "
    rf"requests/s={_F} output_tokens/s={_F}"
)


def parse_progress_line(line: str) -> GuidellmProgress | None:
    """Parse GuideLLM's loguru progress line (``benchmark/progress.py:_log_update``).

    Searches anywhere in the line, so the loguru prefix and colour codes do not matter.
    """
    match = _PROGRESS.search(_ANSI.sub("", line))
    if match is None:
        return None
    g = match.groups()
    return GuidellmProgress(
        benchmark_index=int(g[0]),
        strategy=g[1],
        status=g[2],
        elapsed_s=float(g[3]),
        successful=int(g[4]),
        errored=int(g[5]),
        incomplete=int(g[6]),
        requests_per_s=float(g[7]),
        output_tok_s=float(g[8]),
    )
