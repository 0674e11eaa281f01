"""Collecting configuration problems instead of stopping at the first one.

A user who runs a study with a 40-line YAML file wants every mistake in one go, each with its file,
line and key and the values that would be allowed. The readers here take a value from the parsed
data, check it, and on a bad value record a Problem and hand back the default, so reading goes on
and later checks still run. `ConfigError` is raised once, at the end, with all of them.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from tui_tuner.core.errors import UserError
from tui_tuner.core.yaml_lines import child_path

__all__ = [
    "ConfigError",
    "Context",
    "Invalid",
    "Problem",
    "Section",
    "as_number",
    "closest",
    "show",
    "to_bool",
    "to_choice",
    "to_float",
    "to_int",
    "to_str",
]

T = TypeVar("T")
D = TypeVar("D")
_INDEX = re.compile(r"\[\d+\]$")  # a list item's suffix in a key path: options[2]
#: Largest magnitude accepted for any number: beyond it floats lose integers and Optuna chokes.
MAX_MAGNITUDE = 2.0**53


@dataclass(frozen=True)
class Problem:
    """One mistake: where (line, dotted key), the bad value, and what is allowed instead."""

    line: int | None
    key: str
    value: object
    message: str

    def render(self, file: str) -> str:
        where = f"{file}:{self.line}" if self.line is not None else file
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class ConfigError(UserError):
    """A configuration that cannot be used; the message lists every problem, one per line."""

    def __init__(self, path: Path | None, problems: Sequence[Problem]) -> None:
        self.path = path
        self.problems = tuple(problems)
        file = str(path) if path is not None else "<string>"
        count = len(self.problems)
        heading = f"invalid configuration in {file} ({count} problem{'s' if count != 1 else ''}):"
        super().__init__("\n".join([heading, *(p.render(file) for p in self.problems)]))


class Invalid(Exception):
    """A converter's verdict on one value; the message says what is allowed."""


def show(value: object) -> str:
    """The value as the user should see it in a message: its repr, cut to about 60 characters."""
    try:
        text = repr(value)
    except (RecursionError, ValueError):
        text = f"<a {type(value).__name__}>"
    return text if len(text) <= 60 else text[:57] + "..."


def closest(word: str, candidates: Iterable[str]) -> str:
    """`` did you mean 'x'?`` for the nearest candidate, or nothing if none is near."""
    match = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {match[0]!r}?" if match else ""


@dataclass
class Context:
    """Problems and notes found so far, and the line of each key of the file being read."""

    lines: Mapping[str, int] = field(default_factory=dict)
    #: Key paths the caller supplied (command-line overrides): they have no line in the file.
    overridden: set[str] = field(default_factory=set)
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def line(self, path: str) -> int | None:
        """The line of ``path``, else of its nearest parent that was written in the file."""
        if path in self.overridden:
            return None
        while path:
            if path in self.lines:
                return self.lines[path]
            index = _INDEX.search(path)
            path = path[: index.start()] if index else path.rpartition(".")[0]
        return None

    def problem(self, path: str, value: object, message: str) -> None:
        self.problems.append(Problem(self.line(path), path, value, message))

    def note(self, path: str, text: str) -> None:
        self.notes.append(f"{path}: {text}" if path else text)

    def sorted_problems(self) -> list[Problem]:
        """By line (problems without one last), keeping the reading order within a line."""
        return sorted(self.problems, key=lambda p: (p.line is None, p.line or 0))


Converter = Callable[[object, str], T]


class Section:
    """One mapping of the file, read key by key; unknown keys are reported on construction.

    A missing or null section reads as empty, so every key gets its default.
    """

    def __init__(self, ctx: Context, data: object, where: str, allowed: Sequence[str]) -> None:
        self.ctx = ctx
        self.where = where
        self.data: dict[str, object] = {}
        if data is None:
            return
        if not isinstance(data, Mapping):
            ctx.problem(
                where, data, f"expected a mapping of {', '.join(allowed)}; got {show(data)}"
            )
            return
        self.data = {str(k): v for k, v in data.items()}
        for key in self.data:
            if key not in allowed:
                hint = closest(key, allowed) or f"; allowed: {', '.join(allowed)}"
                self.ctx.problem(self.path(key), key, f"unknown key {key!r}{hint}")

    def path(self, key: str) -> str:
        return child_path(self.where, key)

    def has(self, key: str) -> bool:
        return key in self.data

    def raw(self, key: str) -> object:
        return self.data.get(key)

    def read(self, key: str, default: D, convert: Converter[T]) -> T | D:
        """The converted value, or ``default`` when it is absent (or null with a null default)
        or invalid (then a problem is recorded)."""
        if key not in self.data or (self.data[key] is None and default is None):
            return default
        value = self.data[key]
        try:
            return convert(value, key)
        except Invalid as err:
            self.ctx.problem(self.path(key), value, str(err))
            return default

    def require(self, key: str, convert: Converter[T], what: str) -> T | None:
        """Like `read`, but a missing or null value is a problem that says ``what`` to give."""
        if self.data.get(key) is None:
            self.ctx.problem(self.path(key), None, f"required: {what}")
            return None
        return self.read(key, None, convert)


def _fmt(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)


def _bounds_text(integer: bool, gt: float | None, ge: float | None, le: float | None) -> str:
    noun = "an integer" if integer else "a number"
    if gt == 0 and ge is None and le is None:
        return f"a positive {noun.split()[1]}"
    if ge is not None and le is not None and gt is None:
        return f"{noun} from {_fmt(ge)} to {_fmt(le)}"
    parts = [f"{op} {_fmt(b)}" for op, b in ((">", gt), (">=", ge), ("<=", le)) if b is not None]
    return f"{noun} " + " and ".join(parts)


def as_number(
    value: object,
    name: str,
    *,
    integer: bool = False,
    gt: float | None = None,
    ge: float | None = None,
    le: float | None = None,
) -> float:
    """Check a number the user wrote; integral floats are fine for integers (``8.0`` is 8).

    Booleans are not numbers here, though Python says they are: ``true`` where a count goes is
    a mistake. Raises Invalid with a message naming the allowed values.
    """
    want = "an integer" if integer else "a number"
    if isinstance(value, bool):
        raise Invalid(f"expected {want}, got {show(value)} (true/false is not a number)")
    if isinstance(value, str):
        hint = " (write a plain number, such as 1000 or 1.0e+3)" if _numeric(value) else ""
        raise Invalid(f"expected {want}, got the text {show(value)}{hint}")
    if not isinstance(value, int | float):
        raise Invalid(f"expected {want}, got {show(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise Invalid(f"{show(value)} is not allowed; {name} must be a finite number")
    if abs(value) > MAX_MAGNITUDE:
        raise Invalid(f"{show(value)} is too large for {name}")
    if integer and not float(value).is_integer():
        raise Invalid(f"{show(value)} is not allowed; {name} must be a whole number")
    broken = (
        (gt is not None and value <= gt)
        or (ge is not None and value < ge)
        or (le is not None and value > le)
    )
    if broken:
        raise Invalid(
            f"{show(value)} is not allowed; {name} must be {_bounds_text(integer, gt, ge, le)}"
        )
    return float(value)


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def to_int(*, ge: int | None = None, le: int | None = None) -> Converter[int]:
    def convert(value: object, name: str) -> int:
        return int(as_number(value, name, integer=True, ge=ge, le=le))

    return convert


def to_float(
    *, gt: float | None = None, ge: float | None = None, le: float | None = None
) -> Converter[float]:
    def convert(value: object, name: str) -> float:
        return as_number(value, name, gt=gt, ge=ge, le=le)

    return convert


def to_bool(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"expected true or false, got {show(value)}")
    return value


def to_str(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise Invalid(f"expected a string, got {show(value)}")
    if not value.strip():
        raise Invalid(f"{name} must not be empty")
    return value


S = TypeVar("S", bound=str)


def to_choice(choices: Sequence[S]) -> Converter[S]:
    """One of ``choices`` (typed as the choices are, so Literal types survive)."""

    def convert(value: object, name: str) -> S:
        if not isinstance(value, str) or value not in choices:
            hint = closest(value, choices) if isinstance(value, str) else ""
            allowed = ", ".join(choices)
            raise Invalid(f"{show(value)} is not allowed; {name} must be one of: {allowed}{hint}")
        return choices[choices.index(value)]

    return convert
