"""The sections of a study configuration (study, server, workload, objective), read and checked.

Each reader takes a `Section` of the parsed YAML, records a Problem for every bad value (and reads
on with the default), and returns the typed settings of `config.py`. The predecessor tuner's
``optimization`` block is read here too, as an alternative source of a few study and objective
keys; giving a key in both places is a mistake.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Literal, cast, get_args

from tui_tuner.core.config import (
    SAMPLERS,
    SLA_METRICS,
    ObjectiveKind,
    ObjectiveSettings,
    SamplerName,
    ServerSettings,
    SlaTerm,
    StudySettings,
    WorkloadSettings,
)
from tui_tuner.core.config_problems import (
    Context,
    Invalid,
    Section,
    as_number,
    closest,
    show,
    to_bool,
    to_choice,
    to_float,
    to_int,
    to_str,
)
from tui_tuner.core.early_stop import setting as early_stop_setting
from tui_tuner.core.gpus import read_gpus, read_workers
from tui_tuner.core.space_load import OPT_LEVEL_NOTE, FlagValue, coerce_flag_value, resolve_flag
from tui_tuner.core.vllm_flags import Flag, lookup, removed
from tui_tuner.core.warmup import read_warmup
from tui_tuner.core.yaml_lines import child_path

__all__ = [
    "OBJECTIVE_FIELDS",
    "SERVER_FIELDS",
    "STUDY_FIELDS",
    "WORKLOAD_FIELDS",
    "read_objective",
    "read_server",
    "read_study",
    "read_workload",
]

Profile = Literal["concurrent", "constant", "poisson"]
RequestFormat = Literal["/v1/completions", "/v1/chat/completions"]
PROFILES: tuple[Profile, ...] = get_args(Profile)
REQUEST_FORMATS: tuple[RequestFormat, ...] = get_args(RequestFormat)
LoadGenerator = Literal["worker", "cli"]
LOAD_GENERATORS: tuple[LoadGenerator, ...] = get_args(LoadGenerator)
OBJECTIVE_KINDS: tuple[ObjectiveKind, ...] = get_args(ObjectiveKind)
STUDY_FIELDS = tuple(f.name for f in fields(StudySettings))
SERVER_FIELDS = tuple(f.name for f in fields(ServerSettings))
WORKLOAD_FIELDS = tuple(f.name for f in fields(WorkloadSettings))
OBJECTIVE_FIELDS = ("kind", "sla", "latency_vs_baseline", "max_streams", "max_probes")
STUDY_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")

#: The predecessor's ``optimization.approach``, as an objective kind and what to tell the user.
APPROACHES: Mapping[str, tuple[ObjectiveKind, str]] = {
    "single_objective": ("throughput", "maximise output tokens/s"),
    "multi_objective": (
        "pareto",
        "output tokens/s against p95 request latency, where the predecessor used mean latency",
    ),
    "p95_latency": ("latency", "minimise p95 request latency"),
}

#: ``study.sampler`` values (engine/samplers.py): ``auto`` (the default) and ``cmaes`` besides
#: `SAMPLERS`, until `SamplerName` names them.
SAMPLER_VALUES: tuple[str, ...] = tuple(dict.fromkeys(("auto", *SAMPLERS, "cmaes")))

BOTORCH_NOTE = (
    "'botorch' is read as 'gp', Optuna's own Gaussian-process sampler (Bayesian optimisation "
    "like BoTorch, without the extra package)"
)

#: Flags the tuner sets for every trial itself, and what to do instead.
MANAGED_FLAGS = {
    "host": "set server.host instead",
    "port": "the tuner picks a free port for each trial",
    "api_key": "server.api_key: true gives every trial a fresh key",
}


def _holder(ctx: Context, sec: Section, legacy: Section, key: str, old: str = "") -> Section:
    """The section that gives ``key``: the native one, else the predecessor's ``optimization``."""
    old = old or key
    if sec.has(key) and legacy.has(old):
        ctx.problem(legacy.path(old), legacy.raw(old), f"also given as {sec.path(key)}; keep one")
    return legacy if legacy.has(old) and not sec.has(key) else sec


def read_study(ctx: Context, sec: Section, legacy: Section) -> StudySettings:
    name = sec.require("name", _study_name, "a study name (it names the study's directory)")
    trials = _holder(ctx, sec, legacy, "n_trials")
    n_trials = trials.read("n_trials", None, to_int(ge=1))
    budget = sec.read("time_budget_s", None, to_float(gt=0))
    if trials.raw("n_trials") is None and sec.raw("time_budget_s") is None:
        ctx.problem("study", None, "give n_trials or time_budget_s (or both): when to stop")
    holder = _holder(ctx, sec, legacy, "sampler")
    sampler: SamplerName = "gp"
    if holder.raw("sampler") == "botorch":
        ctx.note(holder.path("sampler"), BOTORCH_NOTE)
    else:
        sampler = cast(SamplerName, holder.read("sampler", "auto", to_choice(SAMPLER_VALUES)))
    return StudySettings(  # a missing name is already a problem; read on
        name=name or "",
        storage=sec.read("storage", None, to_str),
        sampler=sampler,
        seed=sec.read("seed", None, to_int()),
        n_trials=n_trials,
        time_budget_s=budget,
        baseline=sec.read("baseline", True, to_bool),
        max_consecutive_failures=sec.read("max_consecutive_failures", 5, to_int(ge=1)),
        storage_timeout_s=sec.read("storage_timeout_s", 60.0, to_float(gt=0)),
        noise_repeats=sec.read("noise_repeats", 3, to_int(ge=1)),
        remeasure_top=sec.read("remeasure_top", 3, to_int(ge=0)),
        warm_start=tuple(sec.read("warm_start", [], _sources)),
        workers=sec.read("workers", 1, read_workers),
        early_stop=sec.read("early_stop", None, early_stop_setting),
    )


def _sources(value: object, _name: str) -> list[str]:
    """``study.warm_start``: one earlier study or a list of them. A path relative to the
    current directory, like ``--study-dir``; a URL is kept as written."""
    items = value if isinstance(value, list) else [value]
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, str) or not item.strip():
            where = f"entry {i + 1}: " if isinstance(value, list) else ""
            raise Invalid(
                f"{where}{show(item)} is not allowed; give a study directory, a study.db file "
                "or a storage URL (URL#NAME picks one of its studies)"
            )
        text = item.strip()
        out.append(text if "://" in text else os.path.expanduser(text))
    return out


def _study_name(value: object, name: str) -> str:
    text = to_str(value, name)
    if not STUDY_NAME.fullmatch(text):
        allowed = "up to 100 letters, digits, '.', '_' and '-', not starting with '.'"
        raise Invalid(f"{show(value)} is not allowed; it names a directory: use {allowed}")
    return text


def local_path(text: str, base_dir: Path) -> str:
    """A path written as one (``~/...``, ``./...``, ``../...``, absolute) made absolute, relative
    paths from the configuration's own directory; anything else (a Hugging Face id such as
    ``org/model``, a program on PATH) is left as written."""
    if text.startswith(("~", "./", "../", "/")):
        # abspath, not resolve: following symlinks would turn a venv's python into the base
        # interpreter, which lacks the venv's packages.
        return os.path.abspath(base_dir / Path(text).expanduser())
    return text


def read_server(ctx: Context, sec: Section, base_dir: Path) -> ServerSettings:
    model = sec.require("model", _argument, "the model to serve (a directory or a Hugging Face id)")
    if model:
        model = local_path(model, base_dir)
    command = sec.read("command", ("vllm", "serve"), _command)
    if command:
        command = (local_path(command[0], base_dir), *command[1:])
    extra_args = sec.read("extra_args", (), _strings)
    for index, arg in enumerate(extra_args):
        gone = removed(arg.split("=", 1)[0]) if arg.startswith("--") else None
        if gone is not None:
            ctx.problem(f"{sec.path('extra_args')}[{index}]", arg, gone.explain())
        managed = _managed(arg)
        if managed is not None:
            why = f"{managed.name} is set by the tuner: {MANAGED_FLAGS[managed.dest]}"
            ctx.problem(f"{sec.path('extra_args')}[{index}]", arg, why)
    flags = _fixed_flags(ctx, sec.raw("flags"), sec.path("flags"))
    env = _env(ctx, sec.raw("env"), sec.path("env"))
    positive = to_float(gt=0)
    return ServerSettings(  # a missing model is already a problem; read on
        model=model or "",
        command=command,
        flags=flags,
        extra_args=extra_args,
        env=env,
        host=sec.read("host", "127.0.0.1", _argument),
        startup_timeout_s=sec.read("startup_timeout_s", 900.0, positive),
        stop_grace_s=sec.read("stop_grace_s", 30.0, positive),
        api_key=sec.read("api_key", True, to_bool),
        gpu_release_timeout_s=sec.read("gpu_release_timeout_s", 60.0, positive),
        fast_start=sec.read("fast_start", False, to_bool),
        gpus=sec.read("gpus", None, read_gpus),
    )


def _argument(value: object, name: str) -> str:
    """Text that becomes one argument of the server's command, never read as an option."""
    text = to_str(value, name)
    if text.startswith("-"):
        raise Invalid(f"{show(value)} is not allowed; {name} must not start with '-'")
    return text


def _managed(arg: str) -> Flag | None:
    """The tuner-managed flag (host, port, API key) an extra argument would set: ``--api-key``,
    ``--host=0.0.0.0``, and ``--api_key``, which vLLM's parser also reads."""
    if not arg.startswith("--"):
        return None
    flag = lookup("--" + arg[2:].split("=", 1)[0].replace("_", "-"))
    return flag if flag is not None and flag.dest in MANAGED_FLAGS else None


def _strings(value: object, name: str) -> tuple[str, ...]:
    """A list of arguments; numbers are written as text, NUL characters cannot be passed."""
    if not isinstance(value, list):
        raise Invalid(f"expected a list of strings, got {show(value)}")
    items = []
    for item in value:
        if isinstance(item, int | float) and not isinstance(item, bool):
            item = str(item)
        if not isinstance(item, str) or not item or "\0" in item:
            raise Invalid(f"{show(item)} is not allowed; {name} items must be non-empty strings")
        items.append(item)
    return tuple(items)


def _command(value: object, name: str) -> tuple[str, ...]:
    if isinstance(value, str):
        example = json.dumps(value.split() or ["vllm", "serve"])
        raise Invalid(
            f"write the command as a list, such as {example}; it never goes through a shell"
        )
    items = _strings(value, name)
    if not items:
        raise Invalid('the command must not be empty, such as ["vllm", "serve"]')
    return items


def _fixed_flags(ctx: Context, data: object, where: str) -> dict[str, FlagValue]:
    """``server.flags``, by vLLM dest, each value checked against its flag."""
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        ctx.problem(
            where, data, f"expected a mapping such as {{max_model_len: 4096}}, got {show(data)}"
        )
        return {}
    flags: dict[str, FlagValue] = {}
    for key, value in data.items():
        path = child_path(where, key)
        flag = resolve_flag(ctx, str(key), path)
        if flag is not None and flag.dest in MANAGED_FLAGS:
            ctx.problem(path, value, f"{flag.name} is set by the tuner: {MANAGED_FLAGS[flag.dest]}")
            continue
        level = not isinstance(value, bool) and value in (0, 1, 2, 3)
        if flag is not None and flag.dest == "compilation_config" and level:
            ctx.note(path, OPT_LEVEL_NOTE)
            flag = lookup("optimization_level")
        if flag is None:
            continue
        if flag.dest in flags:
            ctx.problem(path, key, f"sets {flag.dest} a second time; keep one")
            continue
        try:
            flags[flag.dest] = coerce_flag_value(flag, value)
        except Invalid as err:
            ctx.problem(path, value, str(err))
    return flags


def _env(ctx: Context, data: object, where: str) -> dict[str, str]:
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        ctx.problem(
            where,
            data,
            f'expected a mapping such as {{VLLM_LOGGING_LEVEL: "INFO"}}, got {show(data)}',
        )
        return {}
    env: dict[str, str] = {}
    for key, value in data.items():
        path = child_path(where, key)
        if not isinstance(key, str) or not key or "=" in key or "\0" in key:
            ctx.problem(path, key, f"{show(key)} is not a valid environment variable name")
        elif key == "VLLM_API_KEY":  # the trial's key travels there (core/commands.server_env)
            ctx.problem(path, key, f"VLLM_API_KEY is set by the tuner: {MANAGED_FLAGS['api_key']}")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            env[key] = str(value)
        elif isinstance(value, str) and "\0" not in value:
            env[key] = value
        else:
            ctx.problem(path, value, f'expected a string, got {show(value)}; quote it, such as "1"')
    return env


def read_workload(
    ctx: Context, sec: Section, base_dir: Path, searched: Mapping[str, str]
) -> WorkloadSettings:
    d = WorkloadSettings()
    profile = sec.read("profile", d.profile, to_choice(PROFILES))
    streams = sec.read("streams", d.streams if profile == "concurrent" else None, to_int(ge=1))
    rate = sec.read("rate", None, to_float(gt=0))
    if profile == "concurrent":
        _forbid(ctx, sec, "rate", searched, "the concurrent profile takes streams, not a rate")
        if sec.has("streams") and sec.raw("streams") is None:
            ctx.problem(sec.path("streams"), None, "required: the concurrent profile needs streams")
    else:
        _forbid(ctx, sec, "streams", searched, f"the {profile} profile takes a rate, not streams")
        if rate is None and "workload.rate" not in searched:
            needs = f"required: the {profile} profile needs a rate (requests/s)"
            ctx.problem(sec.path("rate"), None, needs)
    warmup_s, warmup_max_s = read_warmup(ctx, sec, d.warmup_s)
    return WorkloadSettings(
        prompt_tokens=sec.read("prompt_tokens", d.prompt_tokens, to_int(ge=1)),
        output_tokens=sec.read("output_tokens", d.output_tokens, to_int(ge=1)),
        prompt_tokens_stdev=sec.read("prompt_tokens_stdev", None, to_int(ge=0)),
        output_tokens_stdev=sec.read("output_tokens_stdev", None, to_int(ge=0)),
        prefix_tokens=sec.read("prefix_tokens", None, to_int(ge=0)),
        prefix_count=sec.read("prefix_count", None, to_int(ge=1)),
        dataset=sec.read("dataset", None, _dataset(base_dir)),
        profile=profile,
        streams=streams,
        rate=rate,
        duration_s=sec.read("duration_s", d.duration_s, to_float(gt=0)),
        warmup_s=warmup_s,
        warmup_max_s=warmup_max_s,
        repeats=sec.read("repeats", d.repeats, to_int(ge=1, le=9)),
        benchmark_grace_s=sec.read("benchmark_grace_s", d.benchmark_grace_s, to_float(gt=0)),
        max_errors=sec.read("max_errors", d.max_errors, to_int(ge=0)),
        max_error_rate=sec.read("max_error_rate", d.max_error_rate, to_float(ge=0, le=1)),
        request_format=sec.read("request_format", d.request_format, to_choice(REQUEST_FORMATS)),
        guidellm=sec.read("guidellm", None, to_str),
        load_generator=sec.read("load_generator", d.load_generator, to_choice(LOAD_GENERATORS)),
        tokenizer=sec.read("tokenizer", None, to_str),
        seed=sec.read("seed", d.seed, to_int()),
    )


def _forbid(ctx: Context, sec: Section, key: str, searched: Mapping[str, str], why: str) -> None:
    """A workload setting the chosen profile does not use, given or searched."""
    if sec.raw(key) is not None:
        ctx.problem(sec.path(key), sec.raw(key), f"{why}; remove {key} or change the profile")
    if f"workload.{key}" in searched:
        ctx.problem(searched[f"workload.{key}"], None, f"{why}; do not search workload.{key}")


def _dataset(base_dir: Path) -> Callable[[object, str], str]:
    def convert(value: object, name: str) -> str:
        path = Path(to_str(value, name))
        try:
            path = path.expanduser()
            path = path if path.is_absolute() else base_dir / path
            if path.is_file():
                return str(path.resolve())
        except (OSError, ValueError, RuntimeError):
            pass
        raise Invalid(
            f"no such file: {show(str(path))} (relative paths start at the config file's directory)"
        )

    return convert


def read_objective(ctx: Context, sec: Section, legacy: Section) -> ObjectiveSettings:
    holder = _holder(ctx, sec, legacy, "kind", "approach")
    kind: ObjectiveKind = "throughput"
    if holder is sec:
        kind = sec.read("kind", kind, to_choice(OBJECTIVE_KINDS))
    else:
        approach = legacy.read("approach", None, to_choice(tuple(APPROACHES)))
        if approach is not None:
            kind, meaning = APPROACHES[approach]
            ctx.note(legacy.path("approach"), f"read as objective.kind: {kind} ({meaning})")
    return ObjectiveSettings(
        kind=kind,
        sla=_sla(ctx, sec.raw("sla"), sec.path("sla")),
        latency_vs_baseline=sec.read("latency_vs_baseline", False, to_bool),
        max_streams=sec.read("max_streams", 1024, to_int(ge=1)),
        max_probes=sec.read("max_probes", 15, to_int(ge=1, le=50)),
    )


def _sla(ctx: Context, data: object, where: str) -> tuple[SlaTerm, ...]:
    """SLA limits by the user's key (``p95_ttft_ms``) or the Measurement field (``ttft_p95_ms``)."""
    if data is None:
        return ()
    if not isinstance(data, Mapping):
        ctx.problem(
            where, data, f"expected a mapping such as {{p95_ttft_ms: 500}}, got {show(data)}"
        )
        return ()
    metrics = {**SLA_METRICS, **{field: field for field in SLA_METRICS.values()}}
    terms: dict[str, SlaTerm] = {}
    for key, value in data.items():
        path = child_path(where, key)
        metric = metrics.get(str(key))
        if metric is None:
            hint = closest(str(key), metrics) or f"; allowed: {', '.join(SLA_METRICS)}"
            ctx.problem(path, key, f"unknown SLA metric {str(key)!r}{hint}")
            continue
        if metric in terms:
            ctx.problem(path, key, f"limits {metric} a second time; keep one")
            continue
        try:
            terms[metric] = SlaTerm(str(key), metric, as_number(value, str(key), gt=0))
        except Invalid as err:
            ctx.problem(path, value, f"{err} (milliseconds)")
    return tuple(terms.values())
