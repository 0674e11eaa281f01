"""Command lines built from a configuration and a trial's parameters.

The same function builds the argument list a trial runs and the `vllm serve` command the user
pastes at the end, so the exported command is exactly what was measured, minus what only the
tuner needs (host, port, API key) and minus the simulated server's own ``--sim-*`` options.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping

from tui_tuner.core.config import ServerSettings, WorkloadSettings
from tui_tuner.core.space import TrialSettings, flag_args, split_params
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


def vllm_flag_args(server: ServerSettings, settings: TrialSettings) -> list[str]:
    """Fixed flags, then the trial's server parameters, as `vllm serve` arguments."""
    args: list[str] = []
    for key, value in server.flags.items():  # checked and coerced when the config was loaded
        flag = lookup(key)
        assert flag is not None, key
        args += flag_args(flag, value)
    for flag, searched in settings.server:
        args += flag_args(flag, searched)
    return args


def server_argv(
    server: ServerSettings, settings: TrialSettings, *, host: str, port: int
) -> list[str]:
    """The full argument list of one trial's server (never run through a shell). The API key
    is not in it: see :func:`server_env`."""
    argv = [*server.command, server.model, *vllm_flag_args(server, settings), *server.extra_args]
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
    argv = ["vllm", "serve", server.model, *vllm_flag_args(server, split_params(params))]
    argv += without_sim_options(server.extra_args)
    return shlex.join(argv)


def load_for(
    workload: WorkloadSettings, settings: TrialSettings
) -> tuple[int | None, float | None]:
    """Streams and rate the load generator applies: the workload's, unless the study searches
    them (``workload.streams`` / ``workload.rate``)."""
    streams, rate = workload.streams, workload.rate
    searched = settings.workload
    if "streams" in searched:
        streams = int(searched["streams"])  # type: ignore[call-overload]
    if "rate" in searched:
        rate = float(searched["rate"])  # type: ignore[arg-type]
    return streams, rate
