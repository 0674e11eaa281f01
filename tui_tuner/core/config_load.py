"""Read a study configuration from YAML, explaining every mistake with its file, line and key.

The native format (docs/configuration.md describes every key)::

    study: {name: demo, sampler: tpe, seed: 0, n_trials: 12, baseline: true}
    server:
      command: ["vllm", "serve"]          # a list: never run through a shell
      model: /models/llama
      flags: {max_model_len: 4096, enforce_eager: true}   # fixed for every trial
      extra_args: []                      # passed verbatim after the flags
      env: {VLLM_CPU_KVCACHE_SPACE: "1"}
    workload: {prompt_tokens: 512, output_tokens: 128, profile: concurrent, streams: 32}
    objective: {kind: throughput, sla: {p95_ttft_ms: 500}, latency_vs_baseline: false}
    search_space:
      max_num_seqs: {type: int, low: 16, high: 512, log: true}
      max_num_batched_tokens: {options: [2048, 4096, 8192]}
      gpu_memory_utilization: {type: float, low: 0.85, high: 0.95, step: 0.01}
      enable_prefix_caching: {type: bool}
      workload.streams: {type: int, low: 8, high: 64, step: 8}

Flags are named by vLLM dest (``max_num_seqs``), flag name (``max-num-seqs``) or option
(``--max-num-seqs``), and checked against vLLM 0.33: unknown and removed flags, wrong types,
choices and bounds are reported before any server starts.

The predecessor tuner's ``vllm_config.yaml`` loads as it is: parameter blocks ``{name, enabled,
options | range: {start, end, step} | level}`` under ``parameters:``, ``search_space:`` or at the
top level, and ``optimization: {approach, n_trials, sampler}``. Its model and study name came from
the command line, so callers pass them as ``overrides``. What was mapped is listed in
``StudyConfig.notes``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from tui_tuner.core.config import ServerSettings, StudyConfig, StudySettings
from tui_tuner.core.config_problems import ConfigError as ConfigError
from tui_tuner.core.config_problems import Context, Problem, Section, closest, show, to_float
from tui_tuner.core.config_sections import (
    OBJECTIVE_FIELDS,
    SERVER_FIELDS,
    STUDY_FIELDS,
    WORKLOAD_FIELDS,
    read_objective,
    read_server,
    read_study,
    read_workload,
)
from tui_tuner.core.fast_start import check_fast_start
from tui_tuner.core.goodput_check import check_goodput
from tui_tuner.core.space import Param, SearchSpace
from tui_tuner.core.space_load import param_from_mapping, parse_params, parse_space, unique_space
from tui_tuner.core.warmup import check_warmup
from tui_tuner.core.yaml_lines import YamlSyntaxError, load_with_lines

__all__ = [
    "ConfigError",
    "Problem",
    "load_config",
    "load_space",
    "param_from_mapping",
    "parse_config",
    "parse_space",
]

SECTIONS = ("study", "server", "workload", "objective", "search_space")
#: The most configurations a grid search may have (each is a server start and a benchmark).
MAX_GRID = 100_000

LEGACY_SECTIONS = ("optimization", "parameters", "settings")

PARAM_MARKERS = ("name", "enabled", "options", "range", "level", "type", "low", "high")

TRIAL_INTERVAL_NOTE = (
    "ignored: instead of a fixed pause, the tuner waits until the stopped server's GPU memory "
    "is free (server.gpu_release_timeout_s)"
)


def load_config(path: Path, overrides: Mapping[str, object] | None = None) -> StudyConfig:
    """Read and check the configuration at ``path``; raises ConfigError listing every problem.

    ``overrides`` maps dotted keys to values that replace the file's (the CLI's ``--model`` is
    ``{"server.model": ...}``); they are applied before anything is checked.
    """
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ConfigError(path, [Problem(None, "", None, f"cannot read it: {err}")]) from None
    return parse_config(raw, path, overrides)


def load_space(path: Path) -> SearchSpace:
    """A search space saved on its own (the TUI editor's ``search_space.yaml``)."""
    try:
        data, lines = load_with_lines(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(path, [Problem(None, "", None, f"cannot read it: {err}")]) from None
    except YamlSyntaxError as err:
        raise ConfigError(path, [Problem(err.line, "", None, err.message)]) from None
    try:
        return parse_space(data, where="", lines=lines)
    except ConfigError as err:
        raise ConfigError(path, err.problems) from None


def parse_config(
    text: str | bytes, source: Path | None = None, overrides: Mapping[str, object] | None = None
) -> StudyConfig:
    """Check a configuration given as text (bytes must be UTF-8); raises only ConfigError.

    ``source`` names the file in messages, and relative dataset paths are read from its
    directory (the current directory without one).
    """
    ctx = Context()
    config = _read(ctx, text, source, overrides or {})
    if config is None or ctx.problems:
        raise ConfigError(source, ctx.sorted_problems())
    return config


def _read(
    ctx: Context, text: str | bytes, source: Path | None, overrides: Mapping[str, object]
) -> StudyConfig | None:
    if isinstance(text, bytes):
        decoded = _decode(ctx, text)
        if decoded is None:
            return None
        text = decoded
    try:
        data, ctx.lines = load_with_lines(text)
    except YamlSyntaxError as err:
        ctx.problems.append(Problem(err.line, "", None, err.message))
        return None
    if data is None:
        ctx.problem("", None, "the file is empty; see docs/configuration.md for the format")
        return None
    if not isinstance(data, dict):
        what = ", ".join(SECTIONS)
        ctx.problem(
            "", data, f"expected a mapping of sections ({what}) at the top, got {show(data)}"
        )
        return None
    _apply_overrides(ctx, data, overrides)
    base_dir = source.parent if source is not None else Path.cwd()
    return _config(ctx, {str(k): v for k, v in data.items()}, source, base_dir)


def _decode(ctx: Context, raw: bytes) -> str | None:
    """UTF-8 text (a byte-order mark is dropped), or None after naming the first bad byte."""
    try:
        return raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        byte = raw[err.start : err.start + 1].hex()
        message = f"not UTF-8 text: byte 0x{byte} at offset {err.start} cannot be decoded"
        ctx.problems.append(Problem(line, "", None, message))
        return None


def _apply_overrides(
    ctx: Context, data: dict[object, object], overrides: Mapping[str, object]
) -> None:
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = data
        for part in parents:
            child = node.setdefault(part, {})
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                break  # the section itself is wrong; reading it reports that
            node = child
        else:
            node[leaf] = value
            ctx.overridden.add(dotted)


def _config(
    ctx: Context, top: dict[str, object], source: Path | None, base_dir: Path
) -> StudyConfig | None:
    entries = _space_entries(ctx, top)
    space = unique_space(ctx, entries)
    paths = {param.key: path for path, param in entries}
    legacy = Section(
        ctx, top.get("optimization"), "optimization", ("approach", "n_trials", "sampler")
    )
    _settings(ctx, Section(ctx, top.get("settings"), "settings", ("trial_interval",)))
    study = read_study(ctx, Section(ctx, top.get("study"), "study", STUDY_FIELDS), legacy)
    server = read_server(ctx, Section(ctx, top.get("server"), "server", SERVER_FIELDS), base_dir)
    section = Section(ctx, top.get("workload"), "workload", WORKLOAD_FIELDS)
    workload = read_workload(ctx, section, base_dir, paths)
    objective = read_objective(
        ctx, Section(ctx, top.get("objective"), "objective", OBJECTIVE_FIELDS), legacy
    )
    _check_space(ctx, space, paths, study, server)
    check_fast_start(ctx, server, workload, space, paths)
    check_warmup(ctx, workload, objective)
    check_goodput(ctx, objective, workload, paths)
    if objective.latency_vs_baseline and not study.baseline:
        message = "needs study.baseline: true (the baseline is what it compares with)"
        ctx.problem("objective.latency_vs_baseline", True, message)
    notes = tuple(ctx.notes)
    return StudyConfig(study, server, workload, objective, space, source, notes)


def _space_entries(ctx: Context, top: dict[str, object]) -> list[tuple[str, Param]]:
    """Parameters from ``search_space``, the predecessor's ``parameters``, and its top level."""
    entries = []
    for where in ("search_space", "parameters"):
        if top.get(where) is not None:
            entries += parse_params(ctx, top[where], where)
    for key, value in top.items():
        if key in SECTIONS or key in LEGACY_SECTIONS:
            continue
        misspelt = closest(key, SECTIONS + LEGACY_SECTIONS)
        if not misspelt and isinstance(value, Mapping) and any(m in value for m in PARAM_MARKERS):
            entries += parse_params(ctx, {key: value}, "")
        else:
            hint = misspelt or f"; allowed: {', '.join(SECTIONS)}"
            ctx.problem(key, key, f"unknown section {key!r}{hint}")
    return entries


def _settings(ctx: Context, sec: Section) -> None:
    if sec.read("trial_interval", None, to_float(ge=0)) is not None:
        ctx.note(sec.path("trial_interval"), TRIAL_INTERVAL_NOTE)


def _check_space(
    ctx: Context,
    space: SearchSpace,
    paths: Mapping[str, str],
    study: StudySettings,
    server: ServerSettings,
) -> None:
    """Checks that need the space and the rest of the configuration together."""
    for param in space:
        if param.key in server.flags:
            ctx.problem(
                paths[param.key],
                param.name,
                f"{param.key} is also fixed in server.flags; remove one",
            )
    endless = [p for p in space.enabled() if p.kind == "float" and p.step is None]
    where = "study.sampler" if "study.sampler" in ctx.lines else "optimization.sampler"
    size = space.size()
    if study.sampler == "grid" and endless:
        message = f"grid search needs a finite space; give {endless[0].name} a step, or options"
        ctx.problem(where, "grid", message)
    elif study.sampler == "grid" and size is not None and size > MAX_GRID:
        counts = " x ".join(f"{p.count():,} {p.key}" for p in space.enabled())
        ctx.problem(where, "grid", f"grid search over {size:,} configurations ({counts}) "
                    f"would never finish; at most {MAX_GRID:,}: use options or larger steps, "
                    "or sampler tpe")  # fmt: skip
    tokens = _extent("max_num_batched_tokens", space, server)
    seqs = _extent("max_num_seqs", space, server)
    if tokens is not None and seqs is not None and tokens[1] < seqs[0]:
        where = paths.get("max_num_batched_tokens") or paths.get("max_num_seqs") or "server.flags"
        message = (
            f"every max_num_batched_tokens (at most {tokens[1]:g}) is below max_num_seqs "
            f"(at least {seqs[0]:g}); vLLM requires max_num_batched_tokens >= max_num_seqs"
        )
        ctx.problem(where, None, message)


def _extent(dest: str, space: SearchSpace, server: ServerSettings) -> tuple[float, float] | None:
    """The smallest and largest value a flag can take in this study, if it is a known number."""
    fixed = server.flags.get(dest)
    if isinstance(fixed, int) and not isinstance(fixed, bool):
        return float(fixed), float(fixed)
    param = space.get(dest)
    if param is None or not param.enabled:
        return None
    if param.kind == "options":
        numbers = [
            float(v)
            for v in param.options
            if isinstance(v, int | float) and not isinstance(v, bool)
        ]
        return (min(numbers), max(numbers)) if numbers else None
    if param.low is not None and param.high is not None:
        return param.low, param.high
    return None
