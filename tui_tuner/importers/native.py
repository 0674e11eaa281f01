"""A loaded configuration written back in the native format, and the file `import` writes.

`config_to_mapping` is the inverse of `core.config_load`: loading its result gives the same
`StudyConfig` (the same space, settings and objective; the notes and the source aside). Only
values that differ from the documented defaults are written, so the file stays short. A
predecessor parameter is written under the key it was read as (``compilation_config: {level:
[0, 3]}`` becomes ``optimization_level: {options: [0, 3]}``, ``guidellm_concurrency`` becomes
``workload.streams``), so the written file needs no predecessor mapping and no note.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

from tui_tuner.core.config import ObjectiveSettings, ServerSettings, StudyConfig
from tui_tuner.core.config_load import load_config, parse_config
from tui_tuner.core.space import WORKLOAD_PREFIX, Param, SearchSpace
from tui_tuner.core.space_dump import param_to_mapping
from tui_tuner.core.vllm_flags import lookup

__all__ = ["Imported", "config_to_mapping", "import_config", "render"]


@dataclasses.dataclass(frozen=True)
class Imported:
    """What `import` made: the configuration's text (checked by the loader) and its notes."""

    text: str
    notes: tuple[str, ...]
    config: StudyConfig


def import_config(path: Path, overrides: Mapping[str, object] | None = None) -> Imported:
    """Any file the loader reads (native or the predecessor's), written natively."""
    config = load_config(path, overrides)
    return render(config_to_mapping(config), config.notes, sources=[str(path)])


def render(
    mapping: Mapping[str, object], notes: Sequence[str], *, sources: Sequence[str]
) -> Imported:
    """The YAML text: a header naming the sources and the notes, then the mapping. It is loaded
    once before it is returned, so a file `import` writes always loads (a `ConfigError` names
    what would not)."""
    head = [f"# Written by `tui-tuner import` from {', '.join(sources)}."]
    if notes:
        head.append("# What had no exact equivalent:")
        for note in notes:
            head += _comment(note)
    body = yaml.dump(
        _flow_params(mapping), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100
    )
    text = "\n".join(head) + "\n\n" + body
    config = parse_config(text)
    return Imported(text, tuple(notes), config)


class _Flow(dict[str, object]):
    """A mapping written on one line: a search-space parameter."""


class _Dumper(yaml.SafeDumper):
    """Sections as blocks; a list of plain values and a parameter on one line each."""


def _represent_list(dumper: yaml.SafeDumper, data: list[object]) -> yaml.Node:
    flow = all(not isinstance(v, dict | list) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


def _represent_flow(dumper: yaml.SafeDumper, data: _Flow) -> yaml.Node:
    return dumper.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=True)


_Dumper.add_representer(list, _represent_list)
_Dumper.add_representer(_Flow, _represent_flow)


def _flow_params(mapping: Mapping[str, object]) -> dict[str, object]:
    out = dict(mapping)
    space = out.get("search_space")
    if isinstance(space, Mapping):
        out["search_space"] = {k: _Flow(v) for k, v in space.items()}
    return out


def _comment(note: str, width: int = 96) -> list[str]:
    lines, line = [], "#   -"
    for word in note.split():
        if len(line) + 1 + len(word) > width and line.strip("#- "):
            lines.append(line)
            line = "#    "
        line += " " + word
    return [*lines, line]


#: The smallest configuration the loader accepts: what it gives is what a key left out means
#: (the loader's defaults, which may differ from a dataclass's own default).
_MINIMAL = "study: {name: x, n_trials: 1}\nserver: {model: m}\n"


def _defaults() -> StudyConfig:
    return parse_config(_MINIMAL)


def config_to_mapping(config: StudyConfig) -> dict[str, object]:
    """``{study, server, workload, objective, search_space}`` with the non-default values."""
    default = _defaults()
    study = _changed(config.study, default.study)
    study.pop("name", None)
    if config.study.n_trials is None:  # the minimal file had to give one; left out, it is None
        study.pop("n_trials", None)
    out: dict[str, object] = {
        "study": {"name": config.study.name} | study,
        "server": _server(config.server, default.server),
    }
    workload = _changed(config.workload, default.workload)
    if workload:
        out["workload"] = workload
    objective = _objective(config.objective, default.objective)
    if objective:
        out["objective"] = objective
    if config.space.params:
        out["search_space"] = space_mapping(config.space)
    return out


def space_mapping(space: SearchSpace) -> dict[str, dict[str, object]]:
    """Each parameter under a name the native loader reads as its key."""
    return {_native_name(p): param_to_mapping(p) for p in space}


def _native_name(param: Param) -> str:
    if param.name.startswith(WORKLOAD_PREFIX):
        return param.name
    flag = lookup(param.name)
    return param.name if flag is not None and flag.dest == param.key else param.key


def _server(server: ServerSettings, default: ServerSettings) -> dict[str, object]:
    out: dict[str, object] = {"model": server.model}
    changed = _changed(server, default)
    changed.pop("model", None)
    if "command" in changed:
        out["command"] = list(server.command)
    if server.flags:
        out["flags"] = {k: _plain(v) for k, v in server.flags.items()}
    if server.extra_args:
        out["extra_args"] = list(server.extra_args)
    if server.env:
        out["env"] = dict(server.env)
    for key in ("command", "flags", "extra_args", "env"):
        changed.pop(key, None)
    return out | changed


def _objective(objective: ObjectiveSettings, default: ObjectiveSettings) -> dict[str, object]:
    out = _changed(objective, default)
    if "sla" in out:
        out["sla"] = {term.key: term.limit for term in objective.sla}
    return out


def _changed(value: object, default: object) -> dict[str, object]:
    """The dataclass fields of ``value`` that differ from ``default``'s."""
    return {
        f.name: _plain(getattr(value, f.name))
        for f in dataclasses.fields(value)  # type: ignore[arg-type]
        if getattr(value, f.name) != getattr(default, f.name)
    }


def _plain(value: object) -> object:
    """Tuples as lists and mappings as dicts: what yaml.safe_dump writes."""
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value
