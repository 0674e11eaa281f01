"""The search space: which `vllm serve` flags (and workload knobs) a study varies, and how.

A parameter is an int or float range (with a step or on a log scale), a list of options, or a
boolean. Each one targets either a vLLM flag (rendered through `vllm_flags`, so the exported
command is always a real `vllm serve` command line) or a workload setting such as the number of
concurrent streams, which the load generator applies; the two are never mixed up.

Pure data and arithmetic: the engine turns these into Optuna distributions.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Literal

from tui_tuner.core.errors import UserError
from tui_tuner.core.vllm_flags import Flag, lookup

__all__ = [
    "WORKLOAD_PARAMS",
    "Param",
    "ParamKind",
    "Scalar",
    "SearchSpace",
    "Target",
    "TrialSettings",
    "flag_args",
    "format_value",
    "params_key",
    "split_params",
]

Scalar = int | float | str | bool
ParamKind = Literal["int", "float", "options", "bool"]
Target = Literal["server", "workload"]

#: Workload settings a study may search, and their type. They change the load GuideLLM applies,
#: not the server, so they are kept apart from vLLM flags.
WORKLOAD_PARAMS: Mapping[str, Literal["int", "float"]] = {"streams": "int", "rate": "float"}
#: How a workload parameter's key starts (``workload.streams``); a server flag's key is its dest.
WORKLOAD_PREFIX = "workload."


@dataclass(frozen=True)
class Param:
    """One searched setting.

    ``key`` is the name the study stores values under (for server flags, vLLM's dest name such
    as ``max_num_seqs``; for workload settings, ``workload.streams``). ``name`` is what the user
    wrote, kept for messages. Ranges are inclusive; ``step`` and ``log`` are exclusive.
    """

    key: str
    name: str
    kind: ParamKind
    target: Target = "server"
    enabled: bool = True
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    options: tuple[Scalar, ...] = ()

    @property
    def flag(self) -> Flag | None:
        return lookup(self.key) if self.target == "server" else None

    def choices(self) -> tuple[Scalar, ...] | None:
        """Every value this parameter can take, if there are finitely many (else None)."""
        if self.kind == "options":
            return self.options
        if self.kind == "bool":
            return (False, True)
        if self.low is None or self.high is None:
            return None
        if self.kind == "int":
            step = int(self.step or 1)
            if self.log and self.step is None:
                return tuple(range(int(self.low), int(self.high) + 1))
            return tuple(range(int(self.low), int(self.high) + 1, step))
        if self.step is None:
            return None
        n = math.floor((self.high - self.low) / self.step + 1e-9)
        return tuple(round(self.low + i * self.step, 12) for i in range(n + 1))

    def count(self) -> int | None:
        """How many values ``choices`` would list, without listing them (None: unbounded)."""
        if self.kind == "options":
            return len(self.options)
        if self.kind == "bool":
            return 2
        if self.low is None or self.high is None:
            return None
        if self.kind == "int":
            step = 1 if self.step is None else int(self.step)
            return (int(self.high) - int(self.low)) // step + 1
        if self.step is None:
            return None
        return math.floor((self.high - self.low) / self.step + 1e-9) + 1

    def contains(self, value: object) -> bool:
        """Whether ``value`` is one this parameter could have produced."""
        if self.kind in ("options", "bool"):
            return any(type(value) is type(o) and value == o for o in self.choices() or ())
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind == "int" and not float(value).is_integer():
            return False
        assert self.low is not None and self.high is not None
        if not self.low - 1e-9 <= value <= self.high + 1e-9:
            return False
        if self.step:
            k = (value - self.low) / self.step
            return abs(k - round(k)) < 1e-6
        return True

    def describe(self) -> str:
        """Short human form: ``16..512 log``, ``0.80..0.95 step 0.01``, ``[auto, fp8]``."""
        if self.kind == "bool":
            return "true/false"
        if self.kind == "options":
            return "[" + ", ".join(format_value(o) for o in self.options) + "]"
        text = f"{format_value(self.low)}..{format_value(self.high)}"
        if self.step is not None:
            text += f" step {format_value(self.step)}"
        return text + (" log" if self.log else "")


def format_value(value: object) -> str:
    """A value as a user writes it. A float gets 12 significant digits: a stepped float comes
    out of the sampler as 0.8500000000000001 (0.80 + 1 x 0.05), which every command line and
    message showed as such."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.12g}"
    return str(value)


@dataclass(frozen=True)
class SearchSpace:
    params: tuple[Param, ...] = ()

    def __iter__(self) -> Iterator[Param]:
        return iter(self.params)

    def enabled(self) -> tuple[Param, ...]:
        return tuple(p for p in self.params if p.enabled)

    def get(self, key: str) -> Param | None:
        return next((p for p in self.params if p.key == key), None)

    def with_param(self, param: Param) -> SearchSpace:
        """A copy with ``param`` replacing the one of the same key (or appended)."""
        if self.get(param.key) is None:
            return SearchSpace((*self.params, param))
        return SearchSpace(tuple(param if p.key == param.key else p for p in self.params))

    def size(self) -> int | None:
        """How many distinct configurations the enabled parameters allow (None: unbounded)."""
        total = 1
        for p in self.enabled():
            count = p.count()
            if count is None:
                return None
            total *= count
        return total

    def set_enabled(self, key: str, enabled: bool) -> SearchSpace:
        param = self.get(key)
        if param is None:
            raise KeyError(key)
        return self.with_param(replace(param, enabled=enabled))


def params_key(params: Mapping[str, object]) -> str:
    """A canonical text of a parameter assignment, to recognise a configuration seen before.

    Numbers compare by value (``64`` and ``64.0`` are the same setting).
    """

    def norm(value: object) -> object:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value

    return json.dumps({k: norm(v) for k, v in sorted(params.items())}, sort_keys=True)


@dataclass(frozen=True)
class TrialSettings:
    """A trial's parameter values, split once by what they set: the server's flags (each with
    its `Flag`, resolved here and nowhere else) and the load generator's settings."""

    server: tuple[tuple[Flag, object], ...]
    workload: Mapping[str, object]


def split_params(params: Mapping[str, object]) -> TrialSettings:
    """Split stored parameter values (Optuna's, keyed as `Param.key`) by their target. A key
    that is neither a workload setting nor a known flag is a bug, not a workload setting."""
    server: list[tuple[Flag, object]] = []
    workload: dict[str, object] = {}
    for key, value in params.items():
        if key.startswith(WORKLOAD_PREFIX):
            workload[key.removeprefix(WORKLOAD_PREFIX)] = value
            continue
        flag = lookup(key)
        if flag is None:  # a study written by another version, or edited by hand
            raise UserError(
                f"trial parameter {key!r} is neither a `vllm serve` flag nor a workload setting "
                "this version knows; start a new study (another study.name) for this space"
            )
        server.append((flag, value))
    return TrialSettings(tuple(server), workload)


def flag_args(flag: Flag, value: object) -> list[str]:
    """The `vllm serve` arguments that set ``flag`` to ``value``.

    Booleans use vLLM's own spellings (``--enforce-eager`` / ``--no-enforce-eager``,
    ``--enable-prefix-caching`` / ``--disable-prefix-caching``); JSON flags get compact JSON.
    A JSON value searched as an option arrives as the compact JSON text the sampler stored
    (`engine/samplers.py`), and is passed on as it is.
    """
    if flag.kind == "bool":
        return [flag.name] if value else ["--no-" + flag.name[2:]]
    if flag.kind == "enable_disable":
        return [flag.name] if value else [flag.aliases[0]]
    if flag.kind == "int_list":
        items = value if isinstance(value, (list, tuple)) else [value]
        return [flag.name, *(str(v) for v in items)]
    if flag.kind == "json":
        text = value if isinstance(value, str) else json_text(value)
        return [flag.name, text]
    if isinstance(value, float) and value.is_integer() and flag.kind == "int":
        value = int(value)
    return [flag.name, format_value(value)]


def json_text(value: object) -> str:
    """The one compact, key-sorted JSON text of a JSON flag's value: what Optuna stores for a
    searched JSON option and what the server's command line gets."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True)
