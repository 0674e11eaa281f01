"""A study's directory, and a configuration made runnable in it.

Everything `tune`, `resume` and `demo` do before a study runs lives here: the directory's files
(the configuration it was started with, the command-line settings that amend it, the search
space as last edited in the TUI, the lock that keeps a second tuner out), the checks that would
make every trial fail (found before any server starts), and the storage, opened on first use.
`cli.py`, the headless display and the TUI only call these; none of them names a file of the
directory itself.

::

    studies/<study>/config.yaml         the configuration the study was started with
    studies/<study>/overrides.json      --model, --trials... it was started or resumed with
    studies/<study>/search_space.yaml   the space as last edited in the TUI (resume prefers it)
    studies/<study>/study.db            the Optuna storage (SQLite, unless study.storage says)
    studies/<study>/.lock               held by the tuner running the study
    studies/<study>/trials/<n>/         one trial's logs, report and command
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from tui_tuner.core.commands import CACHE_ROOT_ENV, compile_cache_root
from tui_tuner.core.config import StudyConfig
from tui_tuner.core.config_load import load_config, load_space
from tui_tuner.core.errors import UserError
from tui_tuner.core.events import Notice
from tui_tuner.core.space import SearchSpace
from tui_tuner.engine.study import StudyStore, default_storage_url

__all__ = [
    "CACHE",
    "DEMO_CONFIG",
    "StudyDir",
    "StudySetup",
    "check_runnable",
    "default_study_dir",
    "demo_setup",
    "resume_setup",
    "saved_overrides",
    "tune_setup",
]

DEMO_CONFIG = Path(__file__).parent / "demo-sim.yaml"
CACHE = Path(os.environ.get("TUI_TUNER_CACHE", Path.home() / ".cache" / "tui-tuner"))

#: Study directories this process holds, by real path: holding one again is a no-op.
_HELD: dict[str, int] = {}


class StudyDir:
    """The files of one study directory; the path is made absolute so that the file paths
    stored with each trial hold from any working directory."""

    CONFIG = "config.yaml"
    OVERRIDES = "overrides.json"
    SPACE = "search_space.yaml"
    LOCK = ".lock"

    def __init__(self, path: Path) -> None:
        self.path = Path(os.path.abspath(path))

    @property
    def config_path(self) -> Path:
        return self.path / self.CONFIG

    @property
    def space_path(self) -> Path:
        return self.path / self.SPACE

    def create(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)

    def hold(self) -> None:
        """Take the directory for this process until it exits (a SIGKILL included: the kernel
        drops the lock with the process). A directory another tuner holds is refused with who
        holds it: two tuners on one directory would overwrite each other's files and fight
        over the GPU."""
        key = os.path.realpath(self.path)
        if key in _HELD:
            return
        fd = os.open(self.path / self.LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise UserError(
                f"{self.path} is in use by another tui-tuner ({holder}). Stop that one first. "
                "To add a worker on another GPU or machine, give it its own --study-dir and the "
                'same study.storage (docs/configuration.md, "Several workers")'
            ) from None
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {stamp}\n".encode())
        _HELD[key] = fd

    def keep_config(self, text: str) -> None:
        """Keep the configuration the study starts with (never replaced once kept)."""
        if not self.config_path.exists():
            _write_private(self.config_path, text)

    def saved_overrides(self) -> dict[str, object]:
        """The command-line settings the study was started with (``--model``, ``--trials``...)."""
        path = self.path / self.OVERRIDES
        if not path.is_file():
            return {}
        data = json.loads(path.read_text(encoding="utf-8"))
        return dict(data) if isinstance(data, dict) else {}

    def save_overrides(self, overrides: Mapping[str, object]) -> None:
        _write_private(self.path / self.OVERRIDES, json.dumps(dict(overrides), indent=1) + "\n")

    def saved_space(self) -> SearchSpace | None:
        """The search space as last edited in the TUI, if it was."""
        return load_space(self.space_path) if self.space_path.is_file() else None

    def save_space(self, space: SearchSpace) -> None:
        """Keep an edited search space; `resume` uses it instead of config.yaml's. Blocking."""
        import yaml

        from tui_tuner.core.space_dump import space_to_mapping

        head = "# edited in the TUI; `resume` uses it instead of config.yaml's search_space\n"
        _write_private(self.space_path, head + yaml.safe_dump(space_to_mapping(space),
                                                              sort_keys=False))  # fmt: skip


def saved_overrides(study_dir: Path) -> dict[str, object]:
    """The command-line settings the study in ``study_dir`` was started with."""
    return StudyDir(study_dir).saved_overrides()


def _write_private(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)


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
        notices: Sequence[Notice] = (),
    ) -> None:
        self.config, self.study_dir, self._store = config, study_dir, store
        #: Said when the study starts (`compose.run_study` emits them to the display).
        self.notices = tuple(notices)
        self.storage_url = storage_url or (
            store.storage_url if store is not None else default_storage_url(study_dir)
        )

    @property
    def directory(self) -> StudyDir:
        return StudyDir(self.study_dir)

    @property
    def store(self) -> StudyStore:
        if self._store is None:
            self._store = StudyStore(self.config, self.storage_url)
            db = self.study_dir / "study.db"
            if db.exists():
                db.chmod(0o600)
        return self._store


def default_study_dir(name: str) -> Path:
    return Path("studies") / name


def tune_setup(config_path: Path, *, study_dir: Path | None,
               overrides: Mapping[str, object] | None) -> StudySetup:  # fmt: skip
    """The study a configuration file describes (created, or reopened if it exists)."""
    config = load_config(config_path, overrides)
    return _new_setup(config, study_dir or default_study_dir(config.study.name), overrides)


def demo_setup(*, study_dir: Path | None, overrides: Mapping[str, object] | None) -> StudySetup:
    config = load_config(DEMO_CONFIG, overrides)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return _new_setup(config, study_dir or default_study_dir(f"demo-{stamp}"), overrides)


def resume_setup(study_dir: Path, *, overrides: Mapping[str, object] | None) -> StudySetup:
    """Continue a study from its directory: its kept configuration, with the command-line
    settings it was started with (``--model``, ``--trials``...) and any given now on top, and
    the search space as last edited in the TUI."""
    directory = StudyDir(study_dir)
    if not directory.config_path.is_file():
        raise UserError(
            f"{study_dir} is not a study directory: {StudyDir.CONFIG} is missing "
            "(start a study with `tui-tuner tune CONFIG`)"
        )
    merged = {**directory.saved_overrides(), **(overrides or {})}
    config = load_config(directory.config_path, merged)
    problems = check_runnable(config)
    if problems:
        raise UserError("cannot resume the study: " + "; ".join(problems))
    edited = directory.saved_space()
    if edited is not None:
        config = replace(config, space=edited)
    return _prepare(config, directory, None, merged)


def _new_setup(
    config: StudyConfig, study_dir: Path, overrides: Mapping[str, object] | None
) -> StudySetup:
    problems = check_runnable(config)
    if problems:  # every trial would fail, each after a server start: say so now
        raise UserError("cannot start the study: " + "; ".join(problems))
    text = config.source.read_text(encoding="utf-8") if config.source else None
    # Paths in the file are relative to it; the copy kept in the study directory is not next
    # to them, so the resolved paths travel with the study's saved command-line settings.
    keep: dict[str, object] = {
        **(overrides or {}),
        "server.model": config.server.model,
        "server.command": list(config.server.command),
    }
    if config.workload.dataset is not None:
        keep["workload.dataset"] = config.workload.dataset
    return _prepare(config, StudyDir(study_dir), text, keep)


def _prepare(
    config: StudyConfig,
    directory: StudyDir,
    source_text: str | None,
    overrides: Mapping[str, object] | None,
) -> StudySetup:
    """Create or reopen the study directory (owner-only) and hold it; keep its configuration
    and the command-line settings that amend it (so `resume` runs the same study)."""
    server = replace(config.server, command=resolve_command(config.server.command))
    notices = []
    if server.simulated and not Path(server.model).exists():
        from tui_tuner.sim.tiny_model import ensure_tiny_model

        # The simulated server needs no weights, but it and GuideLLM need a tokenizer that works
        # offline: the generated tiny model's. The model keeps the name the user gave (served,
        # and written by exports).
        tiny = str(ensure_tiny_model(CACHE / "tiny-llama").path)
        server = replace(server, extra_args=(*server.extra_args, "--sim-tokenizer", tiny))
        if config.workload.tokenizer is None:
            config = replace(config, workload=replace(config.workload, tokenizer=tiny))
        notices.append(_tiny_tokenizer_notice(server.model, tiny))
    config = replace(config, server=server)
    directory.create()
    if server.fast_start:
        root = server.env.get(CACHE_ROOT_ENV) or compile_cache_root(directory.path)
        prepare_compile_cache(Path(root).expanduser())  # vLLM expands it too (envs.py)
    directory.hold()
    if source_text is not None:
        directory.keep_config(source_text)
    if overrides:
        directory.save_overrides(overrides)
    url = config.study.storage or default_storage_url(directory.path)
    return StudySetup(config, directory.path, storage_url=url, notices=notices)


def prepare_compile_cache(root: Path) -> None:
    """Create ``server.fast_start``'s compile cache and prove it writable now: vLLM creates its
    directories there when it compiles, and one it cannot write fails every trial's start-up,
    each after loading the model."""
    probe = root / f".tui-tuner-probe-{os.getpid()}"
    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise UserError(
            f"server.fast_start: the compile cache {root} (VLLM_CACHE_ROOT) cannot be written "
            f"({err.strerror or err}); fix its permissions, or set server.env.VLLM_CACHE_ROOT "
            "to a writable directory"
        ) from None


def _tiny_tokenizer_notice(model: str, tiny: str) -> Notice:
    """A path that is not there is probably a mistake (a warning); a name is the usual case."""
    uses = (
        f"the simulated server and GuideLLM count tokens with the generated tiny model's "
        f"tokenizer ({tiny}); the model keeps its name, and exports write {model}"
    )
    if Path(model).is_absolute() or model.startswith((".", "~")):
        return Notice("warning", f"server.model {model} does not exist: {uses}")
    return Notice("info", f"server.model {model} is not a local directory: {uses}")


def resolve_command(command: Sequence[str]) -> tuple[str, ...]:
    """`tui-tuner ...` runs this very installation, whether or not it is on PATH."""
    if command and command[0] == "tui-tuner":
        return (sys.executable, "-m", "tui_tuner", *command[1:])
    return tuple(command)


def _which(program: str) -> str | None:
    if os.sep in program:
        return program if Path(program).exists() else None
    return shutil.which(program)


def check_runnable(config: StudyConfig) -> list[str]:
    """Problems that would make every trial fail, found without starting anything."""
    problems = []
    command = resolve_command(config.server.command)
    if _which(command[0]) is None:
        problems.append(f"server.command: {command[0]!r} is not found (not on PATH)")
    model = Path(config.server.model)
    looks_like_path = model.is_absolute() or config.server.model.startswith(".")
    if not config.server.simulated and looks_like_path and not model.exists():
        problems.append(f"server.model: {model} does not exist")
    return problems
