"""`vllm bench sweep serve` inputs read as a tui-tuner study.

The sweep (vLLM's ``vllm/benchmarks/sweep/``) runs ``--serve-cmd`` once per record of the
``--serve-params`` JSON (a list of ``{flag: value}`` records, or a mapping of named records) with
the record's flags applied, and ``--bench-cmd`` once per record of ``--bench-params`` on each
server. tui-tuner searches instead: a flag the records give one value is fixed
(``server.flags``), a flag with several values is searched over them (``{options: [...]}``), and
the study runs them as a grid when the grid is small. A sweep runs only the combinations it
lists; the grid runs every combination of the values, which a note says.

The bench side maps ``vllm bench serve``'s options to the workload GuideLLM applies:
``random_input_len`` / ``random_output_len`` are the prompt and output tokens,
``max_concurrency`` the concurrent streams, ``request_rate`` a Poisson rate; several values of
the load are searched (``workload.streams`` / ``workload.rate``). Everything else is a note.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tui_tuner.core.errors import UserError
from tui_tuner.core.vllm_flags import Flag, lookup, removed

__all__ = ["SweepImport", "read_params", "sweep_mapping"]

#: The tuner sets these for each trial; a sweep's values are dropped with a note.
TUNER_ONLY = {"host", "port", "api_key"}
#: A grid of at most this many configurations is run whole (sampler grid); a larger one is
#: sampled (tpe) for GRID_MAX trials.
GRID_MAX = 200
#: `vllm bench serve` options and the workload settings they become.
BENCH_KEYS = {
    "random_input_len": "prompt_tokens",
    "random_output_len": "output_tokens",
    "random_prefix_len": "prefix_tokens",
    "seed": "seed",
    "tokenizer": "tokenizer",
}
#: `vllm bench serve` options that say nothing about the load (a note would be noise).
BENCH_QUIET = {"model", "backend", "host", "port", "base_url", "save_result", "result_dir",
               "result_filename", "percentile_metrics", "metric_percentiles", "label",
               "_benchmark_name", "trust_remote_code", "disable_tqdm"}  # fmt: skip


@dataclass
class SweepImport:
    """What the inputs say, gathered before the mapping is built."""

    command: list[str] = field(default_factory=lambda: ["vllm", "serve"])
    model: str | None = None
    flags: dict[str, object] = field(default_factory=dict)
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def read_params(path: Path) -> list[dict[str, object]]:
    """A ``--serve-params`` / ``--bench-params`` file, as vLLM reads it: a list of records, or
    a mapping of named records (the name kept as ``_benchmark_name``)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: cannot read it as JSON: {err}") from None
    if isinstance(data, dict):
        data = [{"_benchmark_name": name, **rec} for name, rec in data.items()]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data) or not data:
        raise UserError(
            f"{path}: expected a list of {{flag: value}} records (or a mapping of named "
            "records), as `vllm bench sweep` reads it"
        )
    return [dict(r) for r in data]


def sweep_mapping(
    *,
    serve_cmd: str | None,
    serve_params: list[dict[str, object]] | None,
    bench_cmd: str | None,
    bench_params: list[dict[str, object]] | None,
    model: str | None,
    name: str,
) -> tuple[dict[str, object], list[str]]:
    """The native configuration mapping and its notes."""
    got = SweepImport()
    if serve_cmd:
        _read_serve_cmd(got, shlex.split(serve_cmd))
    model = model or got.model
    if not model:
        raise UserError("no model: give --model MODEL, or a --serve-cmd that names one")
    space: dict[str, object] = {}
    if serve_params:
        _serve_records(got, serve_params, space)
    workload: dict[str, object] = {}
    bench = _bench_records(bench_cmd, bench_params, got.notes)
    _workload(bench, workload, space, got.notes)
    server: dict[str, object] = {"command": got.command, "model": _absolute(model)}
    for key, value in (("flags", got.flags), ("extra_args", got.extra_args), ("env", got.env)):
        if value:
            server[key] = value
    out: dict[str, object] = {
        "study": _study(name, space, got.notes, serve_params),
        "server": server,
    }
    if workload:
        out["workload"] = workload
    if space:
        out["search_space"] = space
    return out, got.notes


def _absolute(model: str) -> str:
    """A model path is relative to where the sweep ran (here), not to the written file."""
    if model.startswith(("./", "../", "~")):
        return os.path.abspath(os.path.expanduser(model))
    return model


def _read_serve_cmd(got: SweepImport, argv: list[str]) -> None:
    while argv and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", argv[0]):
        key, _, text = argv.pop(0).partition("=")
        got.env[key] = text
    if "serve" in argv:
        cut = argv.index("serve") + 1
    elif any(a.endswith("api_server") for a in argv):
        cut = next(i for i, a in enumerate(argv) if a.endswith("api_server")) + 1
    else:
        cut = 1
    got.command, rest = argv[:cut], argv[cut:]
    if rest and not rest[0].startswith("-"):
        got.model = rest.pop(0)
    i = 0
    while i < len(rest):
        arg = rest[i]
        i += 1
        name, eq, inline = arg.partition("=")
        values = [inline] if eq else []
        flag, value = _flag_of(name)
        if flag is None or (value is None and not eq):
            while i < len(rest) and not _is_option(rest[i]):
                values.append(rest[i])
                i += 1
        if name == "--model" and values:
            got.model = values[0]
        elif flag is None:
            _unknown(got, name, [arg] if eq else [name, *values])
        elif flag.dest in TUNER_ONLY:
            got.notes.append(f"--serve-cmd {name}: dropped; the tuner sets it for each trial")
        else:
            got.flags[flag.dest] = value if value is not None else _typed(flag, values)


def _is_option(arg: str) -> bool:
    return arg.startswith("-") and not re.fullmatch(r"-\d+(\.\d*)?", arg)


def _flag_of(name: str) -> tuple[Flag | None, object]:
    """The flag an option names, and the value the option alone gives (``--no-x``: False,
    ``-O3``: 3), or None when a value follows."""
    match = re.fullmatch(r"-O(\d)", name)
    if match:
        return lookup("optimization_level"), int(match[1])
    flag = lookup(name)
    if flag is not None:
        if flag.kind == "enable_disable":
            return flag, name != flag.aliases[0]
        return flag, (True if flag.kind == "bool" else None)
    if name.startswith("--no-"):
        flag = lookup("--" + name[5:])
        if flag is not None and flag.kind in ("bool", "enable_disable"):
            return flag, False
    return None, None


def _typed(flag: Flag, values: list[str]) -> object:
    if flag.kind == "int_list":
        return [int(v) for v in values]
    text = values[0] if values else ""
    try:
        if flag.kind in ("int", "opt_level"):
            return int(text)
        if flag.kind == "float":
            return float(text)
        if flag.kind == "json":
            return json.loads(text)
    except ValueError:
        return text  # the loader says what is wrong with it (or reads 8k as a human integer)
    return text


def _unknown(got: SweepImport, name: str, args: list[str]) -> None:
    gone = removed(name) if name.startswith("--") else None
    if gone is not None:
        got.notes.append(f"--serve-cmd {name}: dropped: {gone.explain()}")
        return
    got.extra_args += args
    got.notes.append(
        f"--serve-cmd {name}: not a flag tui-tuner knows; passed as it is (server.extra_args)"
    )


def _serve_records(
    got: SweepImport, records: list[dict[str, object]], space: dict[str, object]
) -> None:
    names = [str(r["_benchmark_name"]) for r in records if "_benchmark_name" in r]
    if names:
        got.notes.append(f"--serve-params: record names ({', '.join(names)}) are not kept")
    for key in _keys(records):
        if key == "_benchmark_name":
            continue
        values = _distinct(r[key] for r in records if key in r)
        if any(key not in r for r in records):
            got.notes.append(
                f"--serve-params {key}: missing from some records (those ran the serve "
                "command's value); tui-tuner uses only the values given"
            )
        flag = lookup(key)
        where = f"--serve-params {key}"
        if flag is None:
            if "." in key and len(values) == 1:
                got.extra_args.append(f"--{key.replace('_', '-')}={_arg(values[0])}")
                got.notes.append(f"{where}: a nested setting; passed as an argument")
            elif (gone := removed(key)) is not None:
                got.notes.append(f"{where}: dropped: {gone.explain()}")
            else:
                got.notes.append(f"{where}: no equivalent flag tui-tuner can search; left out")
        elif flag.dest in TUNER_ONLY:
            got.notes.append(f"{where}: dropped; the tuner sets it for each trial")
        elif len(values) == 1:
            got.flags[flag.dest] = values[0]
        elif flag.kind in ("json", "int_list") or not flag.tunable:
            got.flags[flag.dest] = values[0]
            got.notes.append(
                f"{where}: {flag.name} cannot be searched; fixed to the first value, "
                f"{_arg(values[0])} (the sweep also ran {', '.join(_arg(v) for v in values[1:])})"
            )
        else:
            got.flags.pop(flag.dest, None)
            both = flag.kind in ("bool", "enable_disable") and set(values) == {True, False}
            space[flag.dest] = {"type": "bool"} if both else {"options": values}


def _keys(records: Iterable[Mapping[str, object]]) -> list[str]:
    return list(dict.fromkeys(k for r in records for k in r))


def _distinct(values: Iterable[object]) -> list[object]:
    seen: dict[str, object] = {}
    for v in values:
        seen.setdefault(json.dumps(v, sort_keys=True), v)
    return list(seen.values())


def _arg(value: object) -> str:
    return json.dumps(value) if isinstance(value, dict | list) else str(value)


def _bench_records(
    bench_cmd: str | None, records: list[dict[str, object]] | None, notes: list[str]
) -> list[dict[str, object]]:
    """Bench records with the bench command's options under them (a record wins)."""
    base: dict[str, object] = {}
    if bench_cmd:
        argv = shlex.split(bench_cmd)
        i = next((j + 1 for j, a in enumerate(argv) if a == "serve"), 0)
        while i < len(argv):
            name, eq, inline = argv[i].partition("=")
            i += 1
            if not name.startswith("--"):
                notes.append(f"--bench-cmd {name}: not an option; left out")
                continue
            value: object = inline if eq else True
            if not eq and i < len(argv) and not _is_option(argv[i]):
                value, i = argv[i], i + 1
            base[name[2:].replace("-", "_")] = value
    rows = records or [{}]
    return [{**base, **{k.replace("-", "_"): v for k, v in r.items()}} for r in rows]


def _workload(
    records: list[dict[str, object]],
    workload: dict[str, object],
    space: dict[str, object],
    notes: list[str],
) -> None:
    for key in _keys(records):
        values = _distinct(r[key] for r in records if key in r)
        where = f"bench {key}"
        if key in BENCH_KEYS:
            value = values[0]
            number = BENCH_KEYS[key] != "tokenizer"
            workload[BENCH_KEYS[key]] = int(str(value)) if number else str(value)
            if len(values) > 1:
                notes.append(
                    f"{where}: one workload per study in tui-tuner: {value} is used; import "
                    f"again with one --bench-params record per workload for the others"
                )
        elif key == "max_concurrency":
            _load(workload, space, "streams", [int(str(v)) for v in values], "concurrent")
        elif key == "request_rate":
            rates = [float(str(v)) for v in values]
            finite = [r for r in rates if math.isfinite(r)]
            if len(finite) < len(rates):
                notes.append(f"{where}: inf (all requests at once) has no equivalent; dropped")
            if finite and "streams" not in workload:
                _load(workload, space, "rate", finite, "poisson")
            elif finite:
                notes.append(f"{where}: tui-tuner applies a rate or a concurrency, not both: "
                             "the concurrency (max_concurrency) is kept")  # fmt: skip
        elif key == "endpoint":
            workload["request_format"] = str(values[0])
        elif key == "backend" and "openai-chat" in values:
            workload["request_format"] = "/v1/chat/completions"
        elif key == "num_prompts":
            notes.append(f"{where}: tui-tuner measures for workload.duration_s, not a count")
        elif key == "dataset_path":
            notes.append(f"{where}: {values[0]}: set workload.dataset to a JSONL or CSV file "
                         "with a prompt column (synthetic prompts are used meanwhile)")  # fmt: skip
        elif key not in BENCH_QUIET:
            shown = ", ".join(_arg(v) for v in values)
            notes.append(f"{where} ({shown}): no equivalent in tui-tuner; left out")


def _load(
    workload: dict[str, object],
    space: dict[str, object],
    what: str,
    values: list[int] | list[float],
    profile: str,
) -> None:
    workload["profile"] = profile
    if profile == "concurrent":
        workload["streams"] = values[0]
    else:
        workload["streams"] = None
        workload["rate"] = values[0]
    if len(values) > 1:
        space[f"workload.{what}"] = {"options": list(values)}


def _study(
    name: str,
    space: Mapping[str, object],
    notes: list[str],
    records: list[dict[str, object]] | None,
) -> dict[str, object]:
    size = 1
    for spec in space.values():
        assert isinstance(spec, dict)
        size *= len(spec["options"]) if "options" in spec else 2
    if records and size > len(records):
        notes.append(
            f"the sweep ran the {len(records)} listed combinations; tui-tuner searches every "
            f"combination of the values ({size}), a grid when there are at most {GRID_MAX}"
        )
    if size <= GRID_MAX:
        return {"name": name, "sampler": "grid", "n_trials": size + 1}
    return {"name": name, "sampler": "tpe", "n_trials": GRID_MAX}
