"""A search space written back as the YAML mapping `space_load.parse_space` reads.

The TUI's editor changes a study's space while it runs; the app saves the result as
``search_space.yaml`` in the study directory so that the change survives a restart and the user
can see what was searched. Writing the native format (rather than pickling the dataclasses) keeps
that file editable by hand and lets the loader check it like any other configuration.

Each parameter is written under the name the user gave it (``Param.name``), not its dest key: the
loader derives both from that name, so reading the mapping back gives an equal `SearchSpace`.
Defaults (``enabled: true``, ``log: false``, no step) are left out to keep the file short.

Pure: no I/O, no YAML library; the caller dumps the mapping.
"""

from __future__ import annotations

from tui_tuner.core.space import Param, Scalar, SearchSpace

__all__ = ["param_to_mapping", "space_to_mapping"]


def space_to_mapping(space: SearchSpace) -> dict[str, dict[str, object]]:
    """``{name: {type, low, high, ...}}`` for every parameter, disabled ones included."""
    return {param.name: param_to_mapping(param) for param in space}


def param_to_mapping(param: Param) -> dict[str, object]:
    """One parameter's settings, in the form `space_load.param_from_mapping` accepts."""
    out: dict[str, object] = {}
    if not param.enabled:
        out["enabled"] = False
    if param.kind == "options":
        out["options"] = list(param.options)
        return out
    out["type"] = param.kind
    if param.kind == "bool":
        return out
    out["low"] = _number(param, param.low)
    out["high"] = _number(param, param.high)
    if param.step is not None:
        out["step"] = _number(param, param.step)
    if param.log:
        out["log"] = True
    return out


def _number(param: Param, value: float | None) -> Scalar | None:
    """Integers as ``16`` rather than ``16.0``: the file is for people too."""
    if value is not None and param.kind == "int" and float(value).is_integer():
        return int(value)
    return value
