"""Putting a study together: its directory, storage, adapters, orchestrator and signal handling.

Shared by `tui-tuner tune`, `resume` and `demo`, headless or (later) under the TUI, which passes
its own event sink. Nothing here decides anything about tuning; it only wires.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from tui_tuner.core.config import StudyConfig
from tui_tuner.core.errors import UserError
from tui_tuner.core.events import Event, Notice
from tui_tuner.engine.orchestrator import Orchestrator, StudyOutcome
from tui_tuner.engine.study import StudyStore, default_storage_url
from tui_tuner.engine.trial_runner import TrialRunner

__all__ = [
    "CONFIG_NAME",
    "StudySetup",
    "default_study_dir",
    "hold_study_dir",
    "prepare",
    "run_study",
]

CONFIG_NAME = "config.yaml"
OVERRIDES_NAME = "overrides.json"
#: The search space as last edited in the TUI; `resume` prefers it to config.yaml's.
SPACE_NAME = "search_space.yaml"
CACHE = Path(os.environ.get("TUI_TUNER_CACHE", Path.home() / ".cache" / "tui-tuner"))


def default_study_dir(name: str) -> Path:
    return Path("studies") / name


def _resolve_command(command: Sequence[str]) -> tuple[str, ...]:
    """`tui-tuner ...` runs this very installation, whether or not it is on PATH."""
    if command and command[0] == "tui-tuner":
        return (sys.executable, "-m", "tui_tuner", *command[1:])
    return tuple(command)


class StudySetup:
    """A configuration made runnable: paths resolved, the study directory ready.

    The storage opens on first use of ``store`` (SQLAlchemy and Optuna's models take most of a
    second to load), so the TUI can paint its first frame while a worker thread opens it.
    """

    def __init__(
        self,
        config: StudyConfig,
        study_dir: Path,
        store: StudyStore | None = None,
        *,
        storage_url: str | None = None,
    ) -> None:
        self.config, self.study_dir, self._store = config, study_dir, store
        self.storage_url = storage_url or (
            store.storage_url if store is not None else default_storage_url(study_dir)
        )

    @property
    def store(self) -> StudyStore:
        if self._store is None:
            self._store = StudyStore(self.config, self.storage_url)
            db = self.study_dir / "study.db"
            if db.exists():
                db.chmod(0o600)
        return self._store


def saved_overrides(study_dir: Path) -> dict[str, object]:
    """The command-line settings a study was started with (``--model``, ``--trials``...)."""
    path = study_dir / OVERRIDES_NAME
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return dict(data) if isinstance(data, dict) else {}


LOCK_NAME = ".lock"
#: Study directories this process holds, by real path: holding one again is a no-op.
_HELD: dict[str, int] = {}


def hold_study_dir(study_dir: Path) -> None:
    """Take the study directory for this process until it exits (a SIGKILL included: the kernel
    drops the lock with the process). A directory another tuner holds is refused with who holds
    it: two tuners on one directory would overwrite each other's files and fight over the GPU."""
    key = os.path.realpath(study_dir)
    if key in _HELD:
        return
    fd = os.open(study_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 4096).decode("utf-8", "replace").strip() or "another process"
        os.close(fd)
        raise UserError(
            f"{study_dir} is in use by another tui-tuner ({holder}). Stop that one first. "
            "To add a worker on another GPU or machine, give it its own --study-dir and the "
            'same study.storage (docs/configuration.md, "Several workers")'
        ) from None
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {stamp}\n".encode())
    _HELD[key] = fd


def prepare(
    config: StudyConfig,
    study_dir: Path,
    source_text: str | None,
    overrides: Mapping[str, object] | None = None,
) -> StudySetup:
    """Create or reopen the study directory (owner-only), keep its configuration and the
    command-line settings that amend it (so `resume` runs the same study)."""
    server = config.server
    server = replace(server, command=_resolve_command(server.command))
    if server.simulated and not Path(server.model).exists():
        from tui_tuner.sim.tiny_model import ensure_tiny_model

        # The simulated server needs no weights, but GuideLLM needs a tokenizer that works
        # offline: the generated tiny model provides one.
        server = replace(server, model=str(ensure_tiny_model(CACHE / "tiny-llama").path))
    config = replace(config, server=server)
    # Absolute, so the file paths stored with each trial hold from any working directory.
    study_dir = Path(os.path.abspath(study_dir))
    study_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    hold_study_dir(study_dir)
    from tui_tuner.adapters.guidellm import SCENARIO_NAME

    # A tuner killed while GuideLLM ran left the file that gave GuideLLM its key. That key
    # died with its server, but the file goes: no key stays written down.
    for leftover in study_dir.glob(f"trials/*/{SCENARIO_NAME}"):
        leftover.unlink(missing_ok=True)
    kept = study_dir / CONFIG_NAME
    if source_text is not None and not kept.exists():
        kept.write_text(source_text, encoding="utf-8")
        kept.chmod(0o600)
    if overrides:
        saved = study_dir / OVERRIDES_NAME
        saved.write_text(json.dumps(dict(overrides), indent=1) + "\n", encoding="utf-8")
        saved.chmod(0o600)
    url = config.study.storage or default_storage_url(study_dir)
    return StudySetup(config, study_dir, storage_url=url)


def load_adapters() -> None:
    """Import the real adapters that `run_study` uses (aiohttp, psutil, NVML's bindings: about
    a quarter of a second). The TUI calls this from a thread first, so that `run_study` does not
    import them on the event loop the screen is drawn from."""
    import tui_tuner.adapters.gpu
    import tui_tuner.adapters.guidellm_bench
    import tui_tuner.adapters.guidellm_runner
    import tui_tuner.adapters.reaper
    import tui_tuner.adapters.vllm_server  # noqa: F401


async def run_study(
    setup: StudySetup,
    emit: Callable[[Event], None],
    *,
    guidellm: str | None = None,
    on_orchestrator: Callable[[Orchestrator], None] = lambda _: None,
    on_signal: Callable[[signal.Signals], None] | None = None,
) -> StudyOutcome:
    """Run the study with the real adapters until it finishes or a signal stops it.

    SIGINT, SIGTERM and SIGHUP (a dropped SSH session) stop it cleanly: the running trial is
    stopped and queued again, its server is stopped, and the study stays resumable. A second
    signal cancels at once; the servers are still stopped on the way out. The TUI passes its own
    ``on_signal`` so that it closes too.
    """
    from tui_tuner.adapters.gpu import NvmlGpus, wait_memory_released
    from tui_tuner.adapters.guidellm_bench import GuidellmBenchmarker
    from tui_tuner.adapters.guidellm_runner import find_guidellm
    from tui_tuner.adapters.reaper import Reaper
    from tui_tuner.adapters.vllm_server import VllmLauncher

    exe = find_guidellm(guidellm or setup.config.workload.guidellm)
    await asyncio.to_thread(lambda: setup.store)  # open the storage off the event loop
    gpus = NvmlGpus()
    if not gpus.sample().available:
        emit(Notice("info", f"GPU memory checks off: {gpus.sample().reason}"))

    class _Gpu:
        async def wait_released(
            self, pids: Collection[int], timeout_s: float
        ) -> tuple[bool, float]:
            return await wait_memory_released(gpus, pids, timeout_s)

    reaper = await Reaper.start()
    runner = TrialRunner(
        setup.config,
        setup.study_dir,
        VllmLauncher(reaper),
        GuidellmBenchmarker(exe, reaper),
        _Gpu(),
        emit,
    )
    orch = Orchestrator(setup.config, setup.store, runner, emit, study_dir=setup.study_dir)
    on_orchestrator(orch)
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(orch.run())
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def stop_on(sig: signal.Signals) -> None:
        if orch.stopping:
            task.cancel()
        else:
            orch.stop(f"stopped by {sig.name}")

    for sig in signals:
        loop.add_signal_handler(sig, on_signal or stop_on, sig)
    try:
        return await task
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        await reaper.close()
        gpus.close()


def which_or_none(program: str) -> str | None:
    if os.sep in program:
        return program if Path(program).exists() else None
    return shutil.which(program)


def check_runnable(config: StudyConfig) -> list[str]:
    """Problems that would make every trial fail, found without starting anything."""
    problems = []
    command = _resolve_command(config.server.command)
    if which_or_none(command[0]) is None:
        problems.append(f"server.command: {command[0]!r} is not found (not on PATH)")
    model = Path(config.server.model)
    looks_like_path = model.is_absolute() or config.server.model.startswith(".")
    if not config.server.simulated and looks_like_path and not model.exists():
        problems.append(f"server.model: {model} does not exist")
    return problems
