"""Search-space parameters from YAML-shaped data, checked against vLLM 0.33's flags.

A parameter names a `vllm serve` flag (by dest ``max_num_seqs``, flag name ``max-num-seqs`` or
option ``--max-num-seqs``) or a workload setting (``workload.streams``), and gives its values as
``options``, a range (``low``/``high`` with ``step`` or ``log``, or the predecessor tuner's
``range: {start, end, step}``) or ``type: bool``. Every value is checked against the flag's type,
choices and bounds here, so a study never launches a server vLLM would refuse to parse.

Used by `config_load` for whole files and by the TUI's search-space editor for one parameter.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from tui_tuner.core.config_problems import (
    ConfigError,
    Context,
    Converter,
    Invalid,
    Section,
    as_number,
    closest,
    show,
    to_bool,
    to_choice,
    to_str,
)
from tui_tuner.core.space import (
    WORKLOAD_PARAMS,
    WORKLOAD_PREFIX,
    Param,
    ParamKind,
    Scalar,
    SearchSpace,
)
from tui_tuner.core.vllm_flags import FLAGS, Flag, human_readable_int, lookup, removed
from tui_tuner.core.yaml_lines import child_path

__all__ = [
    "FlagValue",
    "coerce_flag_value",
    "param_from_mapping",
    "parse_param",
    "parse_params",
    "parse_space",
    "resolve_flag",
    "unique_space",
]

FlagValue = Scalar | list[Scalar] | dict[str, object]
PARAM_KEYS = ("type", "enabled", "name", "options", "level", "low", "high", "step", "log", "range")
RANGE_KEYS = ("start", "end", "step")
TYPES: tuple[ParamKind, ...] = ("int", "float", "bool", "options")
BOOL_KINDS = ("bool", "enable_disable")
NUMBER_KINDS = ("int", "float", "opt_level")
WORKLOAD_KEYS = tuple(f"{WORKLOAD_PREFIX}{name}" for name in WORKLOAD_PARAMS)
OPT_LEVEL_NOTE = (
    "integer compilation levels are read as -O levels (--optimization-level). vLLM 0.33 changed "
    "what -O means: O0 = no compilation and no CUDA graphs, O1 = Inductor and piecewise graphs, "
    "O2 and O3 = also full graphs; in vLLM 0.10 the value was a torch.compile level, so old "
    "results do not carry over one to one"
)

GUIDELLM_CONCURRENCY_NOTE = (
    "read as workload.streams (GuideLLM's concurrent streams); unlike the predecessor it does "
    "not also set --max-num-seqs: search max_num_seqs for that"
)


@dataclass(frozen=True)
class _Target:
    """What a parameter sets: a vLLM flag, or a workload setting with its number type."""

    key: str
    flag: Flag | None
    number: Literal["int", "float"] | None = None


def _dest_like(spelled: str) -> str:
    return spelled.lstrip("-").replace("-", "_")


def resolve_flag(ctx: Context, spelled: str, path: str, *, enabled: bool = True) -> Flag | None:
    """The vLLM 0.33 flag ``spelled`` names, or None after recording why there is none.

    A removed flag is an error if it is in use and a note if it is disabled (the predecessor's
    files keep disabled entries for flags that no longer exist).
    """
    gone = removed(spelled)
    if gone is not None:
        if enabled:
            ctx.problem(path, spelled, gone.explain())
        else:
            ctx.note(path, f"{gone.explain()}; skipped because it is disabled")
        return None
    flag = lookup(_dest_like(spelled)) or lookup(spelled)
    if flag is None:
        names = [f.dest for f in FLAGS if f.tunable] + list(WORKLOAD_KEYS)
        hint = closest(_dest_like(spelled), names)
        ctx.problem(path, spelled, f"{spelled!r} is not a `vllm serve` flag of vLLM 0.33{hint}")
    return flag


def coerce_flag_value(flag: Flag, value: object) -> FlagValue:
    """``value`` as ``flag`` takes it, or Invalid naming the type, choices or bounds allowed."""
    if flag.kind in BOOL_KINDS:
        return to_bool(value, flag.name)
    if flag.kind == "json":
        return _json_object(value, flag.name)
    if flag.kind == "int_list":
        items = value if isinstance(value, list) else [value]
        if not items:
            raise Invalid(f"{flag.name} needs at least one integer")
        return [_int_value(flag, item) for item in items]
    if flag.kind == "str":
        if not isinstance(value, str):
            raise Invalid(f"expected a string, got {show(value)}")
        if flag.choices is not None and value not in flag.choices:
            allowed = ", ".join(flag.choices)
            hint = closest(value, flag.choices)
            raise Invalid(
                f"{show(value)} is not allowed; {flag.name} takes one of: {allowed}{hint}"
            )
        if value.startswith("-"):  # the server's parser would read it as another option
            raise Invalid(
                f"{show(value)} is not allowed; {flag.name} takes no value starting with '-'"
            )
        return value
    if flag.kind == "float":
        return as_number(value, flag.name, gt=flag.gt, ge=flag.ge, le=flag.le)
    return _int_value(flag, value)


def _int_value(flag: Flag, value: object) -> int | str:
    """Integers; ``8k``/``8K`` where vLLM reads human-readable ints; ``auto`` for max_model_len."""
    if flag.dest == "max_model_len" and (value == "auto" or value == -1):
        return value if isinstance(value, str) else -1
    if isinstance(value, str) and flag.human_int:
        try:
            value = human_readable_int(value)
        except ValueError:
            msg = f"{flag.name} takes an integer such as 8192, 8k (= 8000) or 8K (= 8192)"
            raise Invalid(f"{show(value)} is not allowed; {msg}") from None
    return int(as_number(value, flag.name, integer=True, gt=flag.gt, ge=flag.ge, le=flag.le))


def _json_object(value: object, name: str) -> dict[str, object]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            raise Invalid(f"{show(value)} is not valid JSON; {name} takes a JSON object") from None
    if not isinstance(value, Mapping):
        raise Invalid(f"expected a mapping (JSON object) for {name}, got {show(value)}")
    try:
        json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        raise Invalid(f"{show(value)} cannot be written as JSON for {name}") from None
    return {str(k): v for k, v in value.items()}


def parse_params(ctx: Context, data: object, where: str) -> list[tuple[str, Param]]:
    """Each parameter of a mapping ``name: {settings}``, with the path it was written at."""
    if not isinstance(data, Mapping):
        example = "max_num_seqs: {type: int, low: 16, high: 512}"
        ctx.problem(where, data, f"expected a mapping of parameters such as {example}")
        return []
    found = []
    for key, block in data.items():
        path = child_path(where, key)
        param = parse_param(ctx, str(key), block, path)
        if param is not None:
            found.append((path, param))
    return found


def unique_space(ctx: Context, entries: Sequence[tuple[str, Param]]) -> SearchSpace:
    """The search space, reporting two parameters that set the same thing."""
    first: dict[str, str] = {}
    params = []
    for path, param in entries:
        if param.key in first:
            ctx.problem(path, param.name, f"sets {param.key} again (see {first[param.key]})")
            continue
        first[param.key] = path
        params.append(param)
    return SearchSpace(tuple(params))


def parse_space(
    data: object, *, where: str = "search_space", lines: Mapping[str, int] | None = None
) -> SearchSpace:
    """A whole search space from plain data (``lines`` maps key paths to lines, if known)."""
    ctx = Context(lines=lines or {})
    space = unique_space(ctx, parse_params(ctx, data, where))
    if ctx.problems:
        raise ConfigError(None, ctx.sorted_problems())
    return space


def param_from_mapping(key: str, data: Mapping[str, object]) -> Param:
    """One parameter, as the search-space editor builds it; raises ConfigError."""
    ctx = Context()
    param = parse_param(ctx, key, data, key)
    if param is None and not ctx.problems:
        ctx.problem(key, key, ctx.notes[-1] if ctx.notes else "cannot be searched")
    if param is None or ctx.problems:
        raise ConfigError(None, ctx.sorted_problems())
    return param


def parse_param(ctx: Context, key: str, data: object, path: str) -> Param | None:
    """One parameter, or None if it is skipped or has problems (which are recorded)."""
    before = len(ctx.problems)
    sec = Section(ctx, data, path, PARAM_KEYS)
    if not isinstance(data, Mapping):
        return None
    enabled = sec.read("enabled", True, to_bool)
    kind = sec.read("type", None, to_choice(TYPES))
    target = _target(ctx, key, sec.read("name", None, to_str), path, enabled)
    if target is not None and target.flag is not None and target.flag.dest == "compilation_config":
        target = _compilation_levels(ctx, sec, path)
    if target is None:
        return None
    mismatch = _kind_mismatch(target, kind)
    if mismatch:
        ctx.problem(sec.path("type") if kind else path, kind, mismatch)
        return None
    param = _values(ctx, sec, key, target, kind, enabled)
    return param if len(ctx.problems) == before else None


def _target(ctx: Context, key: str, name: str | None, path: str, enabled: bool) -> _Target | None:
    spelled = name if name is not None else key
    norm = _dest_like(spelled)
    if norm.startswith(WORKLOAD_PREFIX):
        field = norm.removeprefix(WORKLOAD_PREFIX)
        if field in WORKLOAD_PARAMS:
            return _Target(norm, None, WORKLOAD_PARAMS[field])
        allowed = ", ".join(WORKLOAD_KEYS)
        ctx.problem(path, spelled, f"{spelled!r} cannot be searched; allowed: {allowed}")
        return None
    if norm == "guidellm_concurrency":
        ctx.note(path, GUIDELLM_CONCURRENCY_NOTE)
        return _Target("workload.streams", None, "int")
    flag = resolve_flag(ctx, spelled, path, enabled=enabled)
    if flag is None:
        return None
    other = lookup(_dest_like(key)) if name is not None else None
    if other is not None and other is not flag:
        msg = f"names {flag.name}, but the key names {other.name}; make them agree"
        ctx.problem(child_path(path, "name"), name, msg)
    if not flag.tunable:
        ctx.problem(
            path, spelled, f"{flag.name} cannot be searched: it is not a performance setting"
        )
    return _Target(flag.dest, flag)


def _raw_values(sec: Section) -> list[object]:
    """The values a parameter lists, or the ends of its range, unchecked."""
    for key in ("options", "level"):
        if sec.has(key):
            raw = sec.raw(key)
            return list(raw) if isinstance(raw, list) else [raw]
    spec = sec.raw("range")
    if isinstance(spec, Mapping):
        return [spec.get("start"), spec.get("end")]
    return [sec.raw("low"), sec.raw("high")]


def _compilation_levels(ctx: Context, sec: Section, path: str) -> _Target | None:
    """The predecessor searched ``compilation_config`` as a level 0..3; that is -O now."""
    values = _raw_values(sec)
    levels = all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 3 for v in values)
    if not levels:
        msg = "--compilation-config takes JSON and cannot be searched; search optimization_level "
        ctx.problem(path, values, msg + "(-O0..-O3) instead, or set it in server.flags")
        return None
    ctx.note(path, OPT_LEVEL_NOTE)
    return _Target("optimization_level", lookup("optimization_level"))


def _kind_mismatch(target: _Target, kind: ParamKind | None) -> str | None:
    """Why ``type: kind`` cannot describe what ``target`` takes, if it cannot."""
    flag = target.flag
    if flag is None:
        bad: tuple[str, ...] = ("bool", "float") if target.number == "int" else ("bool",)
        return f"{target.key} takes {target.number} values, not {kind}" if kind in bad else None
    if flag.kind in ("json", "int_list"):
        what = "JSON" if flag.kind == "json" else "a list"
        return f"{flag.name} takes {what} and cannot be searched; set it in server.flags"
    allowed = {
        "bool": ("bool", "options"),
        "enable_disable": ("bool", "options"),
        "str": ("options",),
        "float": ("float", "options"),
    }.get(flag.kind, ("int", "options"))
    if kind is None or kind in allowed:
        return None
    what = {"float": "number", "str": "text", "bool": "true/false"}.get(flag.kind, "integer")
    what = "true/false" if flag.kind in BOOL_KINDS else what
    return f"{flag.name} takes {what} values; type may be: {', '.join(allowed)}"


def _values(
    ctx: Context, sec: Section, name: str, target: _Target, kind: ParamKind | None, enabled: bool
) -> Param | None:
    base = Param(target.key, name, "bool", "workload" if target.flag is None else "server", enabled)
    options_key = next((k for k in ("options", "level") if sec.has(k)), None)
    ranged = any(sec.has(k) for k in ("range", "low", "high", "step", "log"))
    if options_key and ranged:
        ctx.problem(sec.where, None, "give either options or a range, not both")
        return None
    if options_key:
        options = _options(ctx, sec, options_key, target, kind)
        return None if options is None else replace(base, kind="options", options=options)
    if ranged:
        return _range(ctx, sec, base, target, kind)
    if kind == "bool" or (
        kind is None and target.flag is not None and target.flag.kind in BOOL_KINDS
    ):
        return base
    msg = "give options: [...], a range (low and high, or range: {start, end, step}) or type: bool"
    ctx.problem(sec.where, None, msg)
    return None


def _options(
    ctx: Context, sec: Section, key: str, target: _Target, kind: ParamKind | None
) -> tuple[Scalar, ...] | None:
    raw, path = sec.raw(key), sec.path(key)
    if not isinstance(raw, list) or not raw:
        ctx.problem(
            path, raw, f"expected a non-empty list of values, such as [8, 16, 32]; got {show(raw)}"
        )
        return None
    values: list[Scalar] = []
    for index, item in enumerate(raw):
        try:
            values.append(_option_value(target, item))
        except Invalid as err:
            ctx.problem(f"{path}[{index}]", item, str(err))
    if len(values) != len(raw):
        return None
    types = sorted({type(v).__name__ for v in values})
    if len(types) > 1:
        ctx.problem(path, raw, f"options mix types ({' and '.join(types)}); use one type")
        return None
    repeated = [v for i, v in enumerate(values) if v in values[:i]]
    if repeated:
        ctx.problem(path, raw, f"{show(repeated[0])} is listed twice; each option must differ")
        return None
    if kind in ("int", "float") and types != [kind]:
        ctx.problem(path, raw, f"type is {kind}, but the options are {types[0]} values")
    return tuple(values)


def _option_value(target: _Target, item: object) -> Scalar:
    if not isinstance(item, bool | int | float | str):
        raise Invalid(f"expected a single value (a number, text or true/false), got {show(item)}")
    if target.flag is None:
        return _workload_value(target, item)
    value = coerce_flag_value(target.flag, item)
    if not isinstance(value, bool | int | float | str):  # _kind_mismatch keeps lists out
        raise Invalid(f"{show(item)} cannot be searched")
    return value


def _workload_value(target: _Target, value: object) -> int | float:
    """Streams are whole and at least 1; a request rate is any positive number."""
    if target.number == "int":
        return int(as_number(value, target.key, integer=True, ge=1))
    return as_number(value, target.key, gt=0)


def _range(
    ctx: Context, sec: Section, base: Param, target: _Target, kind: ParamKind | None
) -> Param | None:
    flag = target.flag
    if kind in ("options", "bool") or (flag is not None and flag.kind not in NUMBER_KINDS):
        what = f"type {kind}" if kind in ("options", "bool") else f"{base.name} (not a number)"
        ctx.problem(sec.where, None, f"{what} takes no range; list its values in options")
        return None
    integer = (
        kind == "int"
        if kind
        else (target.number == "int" or (flag is not None and flag.kind != "float"))
    )
    names = ("low", "high", "step")
    src = sec
    if sec.has("range"):
        if any(sec.has(k) for k in names):
            ctx.problem(
                sec.where, None, "give low/high/step or range: {start, end, step}, not both"
            )
            return None
        src, names = Section(ctx, sec.raw("range"), sec.path("range"), RANGE_KEYS), RANGE_KEYS
    lo, hi, st = names
    low = src.require(lo, _bound(target, integer), "the lowest value of the range")
    high = src.require(hi, _bound(target, integer), "the highest value of the range")
    step = src.read(st, None, _step(integer))
    log = sec.read("log", False, to_bool)
    if low is None or high is None:
        return None
    if low >= high:
        why = "the range is empty" if low > high else "for one value, use options: [value]"
        ctx.problem(src.path(hi), high, f"{hi} {_fmt(high)} is not above {lo} {_fmt(low)}; {why}")
        return None
    if step is not None and step > high - low:
        span = f"{_fmt(low)}..{_fmt(high)}"
        ctx.problem(src.path(st), step, f"step {_fmt(step)} is larger than the range {span}")
    if log and step is not None:
        ctx.problem(sec.path("log"), log, "log and step cannot be combined; drop one of them")
    if log and low <= 0:
        ctx.problem(sec.path("log"), log, f"a log scale needs {lo} > 0, but {lo} is {_fmt(low)}")
    kind_: ParamKind = "int" if integer else "float"
    return replace(base, kind=kind_, low=low, high=high, step=step, log=log)


def _bound(target: _Target, integer: bool) -> Converter[float]:
    def convert(value: object, name: str) -> float:
        number = as_number(value, name, integer=integer)
        if target.flag is None:
            _workload_value(target, int(number) if integer else number)
        else:
            coerce_flag_value(target.flag, int(number) if integer else number)
        return number

    return convert


def _step(integer: bool) -> Converter[float]:
    def convert(value: object, name: str) -> float:
        return as_number(value, name, integer=integer, gt=0)

    return convert


def _fmt(number: float) -> str:
    return str(int(number)) if number.is_integer() else str(number)
