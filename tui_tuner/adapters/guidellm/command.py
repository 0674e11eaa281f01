"""The ``guidellm run`` command line for one benchmark level.

Holds the load a level applies (:class:`GuidellmWorkload`, checked before GuideLLM starts), the
argument list :func:`build_guidellm_command` builds from it, and the ``--scenario`` file
(:func:`backend_scenario`, named :data:`SCENARIO_NAME` in the trial's directory) that carries the
backend when the server needs an API key. Options are written so that GuideLLM 0.8.1's own
parser (``guidellm run --help``, ``utils/cli.py``) reads them back unchanged.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from tui_tuner.core.load_curve import GoodputSearch

__all__ = [
    "SCENARIO_NAME",
    "GuidellmWorkload",
    "ProfileKind",
    "backend_scenario",
    "build_guidellm_command",
]

#: The file, in the trial's directory, that gives GuideLLM its backend and the API key.
SCENARIO_NAME = "guidellm-backend.json"
ProfileKind = Literal["concurrent", "constant", "poisson", "throughput", "synchronous"]
RequestFormat = Literal["/v1/completions", "/v1/chat/completions"]
_Scalar = str | int | float | bool | None


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
    #: Search the highest concurrency meeting these objectives (GuideLLM's goodput profile)
    #: instead of measuring ``streams`` alone; ``streams`` is then its first level.
    goodput: GoodputSearch | None = None

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
        if self.goodput is not None and self.profile != "concurrent":
            raise ValueError("a goodput search varies the concurrency: profile concurrent only")

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


def _option(kind: str, fields: Mapping[str, _Scalar | Mapping[str, float]]) -> str:
    items = {"kind": kind, **{k: v for k, v in fields.items() if v is not None}}
    if all(not isinstance(v, Mapping) and _kv_safe(v) for v in items.values()):
        return ",".join(f"{key}={_fmt(val)}" for key, val in items.items())  # type: ignore[arg-type]
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
    options: list[tuple[str, str, dict[str, _Scalar | Mapping[str, float]]]] = [
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
    if w.goodput is not None:
        _goodput(options, w.goodput)
    options.append(("--output", "json", {"path": str(report_path)}))
    cmd = [str(executable), "run", *backend]
    for flag, kind, fields in options:
        cmd += [flag, _option(kind, fields)]
    return [*cmd, "--disable-console-interactive"]


def _goodput(
    options: list[tuple[str, str, dict[str, _Scalar | Mapping[str, float]]]], search: GoodputSearch
) -> None:
    """The profile becomes GuideLLM's goodput search (``--profile kind=goodput``, its first
    level the workload's streams, warmup and cooldown kept) and the metrics get its latency
    objectives (``--metrics`` ``slo``: ``ttft_ms``, ``tpot_ms``, ``e2el_ms``), which it requires.
    Each probe runs under the same ``max_duration`` constraint as a single level."""
    for i, (flag, _kind, fields) in enumerate(options):
        if flag == "--profile":
            streams = fields.pop("streams")
            fields.update(initial_streams=streams, max_streams=search.max_streams,
                          max_probes=search.max_probes,
                          target_attainment=search.target_attainment)  # fmt: skip
            options[i] = (flag, "goodput", fields)
        elif flag == "--metrics":
            fields["slo"] = dict(search.slo)


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
