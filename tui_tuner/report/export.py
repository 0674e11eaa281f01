"""The best configuration of a study, written as files the user runs: a script and a vLLM config.

``best-serve.sh`` is the exact `vllm serve` command that was measured (built by
`core.commands.serve_command`, so it cannot drift from what the trials ran), minus what only the
tuner needs: host, port, API key and the simulated server's ``--sim-*`` options.
``best-vllm-config.yaml`` holds the same flags for ``vllm serve MODEL --config FILE``, the form
people keep in a repository; the model stays on the command line because vLLM reads it as the
positional argument.

How vLLM turns the YAML file into arguments (``FlexibleArgumentParser.load_config_file``,
``vllm/utils/argparse_utils.py``): ``key: value`` becomes ``--key value``, a list becomes
``--key item item``, a mapping becomes ``--key '<json>'``, ``key: true`` becomes ``--key``, and
``key: false`` becomes ``--no-key`` only if the parser has that option; older releases dropped a
false value silently. So a false boolean is written as its negative flag set to true
(``disable-prefix-caching: true``, ``no-enforce-eager: true``), which every release reads the same
way and matches the command line `core.space.flag_args` builds.

Pure apart from writing the two files; no Textual.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import yaml

from tui_tuner.core.commands import serve_command, without_sim_options
from tui_tuner.core.config import ServerSettings, StudyConfig
from tui_tuner.core.objectives import best_trials
from tui_tuner.core.space import split_params
from tui_tuner.core.trial import TrialRecord
from tui_tuner.core.vllm_flags import Flag, lookup
from tui_tuner.report.facts import tidy_params

__all__ = [
    "COMMAND_FILE",
    "CONFIG_FILE",
    "Exported",
    "config_entries",
    "config_text",
    "export_best",
    "trial_command",
]

COMMAND_FILE = "best-serve.sh"
CONFIG_FILE = "best-vllm-config.yaml"
#: Flags the tuner sets per trial for its own use; a user's deployment chooses its own.
TUNER_ONLY = frozenset({"host", "port", "api_key"})
#: Environment variables whose values look like credentials are named, not written.
SECRET_NAME = re.compile(r"TOKEN|KEY|SECRET|PASSWORD|CREDENTIAL", re.IGNORECASE)


@dataclass(frozen=True)
class Exported:
    """What `export_best` wrote: the command line, both files, and the trial they come from."""

    command: str
    command_path: Path
    config_path: Path
    trial: int


def export_best(
    config: StudyConfig,
    records: Sequence[TrialRecord],
    study_dir: Path,
    *,
    now: datetime | None = None,
) -> Exported | None:
    """Write the best feasible measured trial's script and config file (None: there is none).

    For a Pareto study that is the front's highest-throughput trial, the same one the summary
    lists first. The files are rewritten on every call, so they always show the current best.
    """
    front = best_trials(config.objective.kind, records)
    if not front:
        return None
    best = front[0]
    params = _params(config, best)
    command = serve_command(config.server, params)
    header = _header(config, best, len(front), now or datetime.now().astimezone())

    study_dir.mkdir(parents=True, exist_ok=True)
    command_path = study_dir / COMMAND_FILE
    config_path = study_dir / CONFIG_FILE
    _write(command_path, _script(config.server, header, command), 0o700)
    _write(config_path, _config_file(config.server, header, params), 0o600)
    return Exported(command, command_path, config_path, best.number)


def _params(config: StudyConfig, record: TrialRecord) -> dict[str, object]:
    """The trial's values as the user wrote them: 0.85, not 0.8500000000000001."""
    return {} if record.baseline else tidy_params(config.space, record.params)


def trial_command(config: StudyConfig, record: TrialRecord) -> str:
    """The `vllm serve` line of one trial (fixed flags included; host, port, API key and the
    simulated server's ``--sim-*`` options left out), its floats as the user wrote them."""
    return serve_command(config.server, _params(config, record))


def config_text(
    config: StudyConfig,
    record: TrialRecord,
    *,
    front_size: int = 1,
    now: datetime | None = None,
    file_name: str = "FILE",
) -> str:
    """The ``vllm serve --config FILE`` file of one trial, with its comment header."""
    header = _header(config, record, front_size, now or datetime.now().astimezone())
    return _config_file(config.server, header, _params(config, record), file_name)


def config_entries(server: ServerSettings, params: Mapping[str, object]) -> dict[str, object]:
    """The vLLM ``--config`` mapping: fixed server flags, then the trial's server parameters.

    Workload parameters (``workload.streams``) are not vLLM flags and are left out, as are host,
    port and API key.
    """
    out: dict[str, object] = {}
    fixed = [(lookup(key), value) for key, value in server.flags.items()]
    for flag, value in [*fixed, *split_params(params).server]:
        if flag is None or flag.dest in TUNER_ONLY:
            continue
        name, entry = _entry(flag, value)
        for spelling in _spellings(flag):  # a later value of the same flag wins
            out.pop(spelling, None)
        out[name] = entry
    return out


def _entry(flag: Flag, value: object) -> tuple[str, object]:
    """One flag's key (long option name without dashes) and YAML value."""
    name = flag.name.removeprefix("--")
    if flag.kind == "bool":
        return (name, True) if value else ("no-" + name, True)
    if flag.kind == "enable_disable":
        return (name, True) if value else (flag.aliases[0].removeprefix("--"), True)
    if flag.kind == "json":
        return name, json.loads(value) if isinstance(value, str) else value
    if flag.kind == "int_list":
        return name, list(value) if isinstance(value, (list, tuple)) else [value]
    if isinstance(value, float) and value.is_integer() and flag.kind in ("int", "opt_level"):
        return name, int(value)
    return name, value


def _spellings(flag: Flag) -> tuple[str, ...]:
    name = flag.name.removeprefix("--")
    if flag.kind == "bool":
        return name, "no-" + name
    if flag.kind == "enable_disable":
        return name, *(alias.removeprefix("--") for alias in flag.aliases)
    return (name,)


def _header(config: StudyConfig, best: TrialRecord, front_size: int, now: datetime) -> list[str]:
    """Comment lines shared by both files (without the leading ``#``)."""
    m = best.measurement
    which = " (the baseline: vLLM's defaults)" if best.baseline else ""
    lines = [
        "Best `vllm serve` configuration found by tui-tuner."
        if front_size
        else "A `vllm serve` configuration tui-tuner measured (chosen by trial number).",
        f"study: {config.study.name}",
        f"trial: {best.number}{which}",
        f"model: {config.server.model}",
    ]
    if m is not None:
        lines.append(
            f"measured: {m.output_tok_s:.1f} output tok/s, "
            f"p95 request latency {m.request_latency_p95_ms:.0f} ms"
        )
    else:
        lines.append(f"not measured: the trial is {best.label}")
    if front_size > 1:
        lines.append(
            f"one of {front_size} Pareto-optimal trials (the one with the highest throughput)"
        )
    if config.server.simulated:
        lines += [
            "WARNING: measured on tui-tuner's SIMULATED server, not a real vLLM. These figures",
            "say nothing about real hardware; re-run the study against vLLM before using them.",
        ]
    lines.append(f"exported: {now.isoformat(timespec='seconds')}")
    return [_one_line(line) for line in lines]


def _one_line(text: str) -> str:
    """A line break in a study or model name must not end the comment."""
    return " ".join(text.splitlines())


def _script(server: ServerSettings, header: list[str], command: str) -> str:
    lines = ["#!/bin/sh", *(f"# {line}" for line in header)]
    lines.append(f"# The same flags as a vLLM config file: see {CONFIG_FILE}.")
    lines.append("# Arguments given to this script are passed on (e.g. --port 8000).")
    for name, value in server.env.items():
        if SECRET_NAME.search(name):
            lines.append(f"# {_one_line(name)} was set for the study; set it yourself.")
        else:
            lines.append(f"export {name}={shlex.quote(value)}")
    lines.append(f'exec {command} "$@"')
    return "\n".join(lines) + "\n"


def _config_file(
    server: ServerSettings,
    header: list[str],
    params: Mapping[str, object],
    file_name: str = CONFIG_FILE,
) -> str:
    model = shlex.quote(server.model)
    notes = [
        f"Use: vllm serve {model} --config {shlex.quote(file_name)}  (command-line flags "
        "override this file)",
        "Keys are `vllm serve` option names. A switched-off boolean is written as its negative",
        "flag set to true (disable-prefix-caching: true, no-enforce-eager: true): vLLM reads",
        "`key: false` as --no-key only where that option exists, and older releases ignore it.",
    ]
    extra = without_sim_options(server.extra_args)
    if extra:
        notes.append(f"Not in this file, pass on the command line: {shlex.join(extra)}")
    lines = [f"# {line}" for line in [*header, *(_one_line(n) for n in notes)]]
    entries = config_entries(server, params)
    if not entries:  # an empty file would load as None, which vLLM cannot read
        lines.append("# Nothing to set: vLLM's defaults were best.")
        return "\n".join(lines) + "\n{}\n"
    body = yaml.safe_dump(entries, sort_keys=False, default_flow_style=False)
    return "\n".join(lines) + "\n" + body


def _write(path: Path, text: str, mode: int) -> None:
    """Replace ``path`` whole with ``text``, created with ``mode`` whatever the umask."""
    tmp = path.with_name(f".{path.name}.tmp")
    with os.fdopen(
        os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "w", encoding="utf-8"
    ) as out:
        os.fchmod(out.fileno(), mode)
        out.write(text)
    os.replace(tmp, path)
