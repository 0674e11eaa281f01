"""Command lines built from a configuration and a trial's parameters.

The same function builds the argument list a trial runs and the `vllm serve` command the user
pastes at the end, so the exported command is exactly what was measured, minus what only the
tuner needs (host, port, API key) and minus the simulated server's own ``--sim-*`` options.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping

from tui_tuner.core.config import ServerSettings, WorkloadSettings
from tui_tuner.core.space import flag_args
from tui_tuner.core.vllm_flags import lookup

__all__ = [
    "load_for",
    "serve_command",
    "server_argv",
    "server_env",
    "vllm_flag_args",
    "without_sim_options",
]

#: Where a trial's server finds its API key.
API_KEY_ENV = "VLLM_API_KEY"


def vllm_flag_args(server: ServerSettings, params: Mapping[str, object]) -> list[str]:
    """Fixed flags, then the trial's server parameters, as `vllm serve` arguments."""
    args: list[str] = []
    for source in (server.flags, params):
        for key, value in source.items():
            flag = lookup(key)
            if flag is None:  # a workload parameter ("workload.streams"), not a server flag
                continue
            if flag.kind == "json" and isinstance(value, str):
                value = json.loads(value)  # categorical choices carry JSON as text
            args += flag_args(flag, value)
    return args


def server_argv(
    server: ServerSettings, params: Mapping[str, object], *, host: str, port: int
) -> list[str]:
    """The full argument list of one trial's server (never run through a shell). The API key
    is not in it: see :func:`server_env`."""
    argv = [*server.command, server.model, *vllm_flag_args(server, params), *server.extra_args]
    return [*argv, "--host", host, "--port", str(port)]


def server_env(server: ServerSettings, api_key: str | None) -> dict[str, str]:
    """The environment added for one trial's server. The API key travels as ``VLLM_API_KEY``
    (vLLM reads it when ``--api-key`` is not given): an argument would show in ``ps`` to every
    user of the machine, a process's environment only to its owner."""
    env = dict(server.env)
    if api_key is not None:
        env[API_KEY_ENV] = api_key
    return env


def without_sim_options(args: tuple[str, ...]) -> list[str]:
    out: list[str] = []
    skip_value = False
    for arg in args:
        if skip_value:
            skip_value = False
            if not arg.startswith("-"):
                continue
        if arg.startswith("--sim-"):
            skip_value = "=" not in arg
            continue
        out.append(arg)
    return out


def serve_command(server: ServerSettings, params: Mapping[str, object]) -> str:
    """The `vllm serve` command to paste, for a real server, whatever ran the study."""
    argv = ["vllm", "serve", server.model, *vllm_flag_args(server, params)]
    argv += without_sim_options(server.extra_args)
    return shlex.join(argv)


def load_for(
    workload: WorkloadSettings, params: Mapping[str, object]
) -> tuple[int | None, float | None]:
    """Streams and rate the load generator applies: the workload's, unless the study searches
    them (``workload.streams`` / ``workload.rate``)."""
    streams, rate = workload.streams, workload.rate
    if "workload.streams" in params:
        streams = int(params["workload.streams"])  # type: ignore[call-overload]
    if "workload.rate" in params:
        rate = float(params["workload.rate"])  # type: ignore[arg-type]
    return streams, rate
