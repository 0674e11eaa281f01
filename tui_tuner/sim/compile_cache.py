"""The simulated server's torch.compile cache: one marker file per compile family.

vLLM keeps compiled graphs in ``$VLLM_CACHE_ROOT/torch_compile_cache/<hash>/rank_0_0/backbone``
(``compilation/backends.py``); a later start whose configuration hashes the same loads them
instead of compiling. The simulator writes a marker file into the same directory after its
(simulated) compile, so the next start of that family is warm. Without ``VLLM_CACHE_ROOT`` in its
environment it keeps no cache at all, every start compiling cold, so that a test or a demo never
writes into the user's ``~/.cache/vllm``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from tui_tuner.sim.failures import StartupFailure

__all__ = ["MARKER", "CompileCache"]

#: The file that says "this family was compiled": it holds no graph, the simulator has none.
MARKER = "SIMULATED-compiled-by-tui-tuner"


class CompileCache:
    """The cache of one start: where the family's graphs go and whether they are there."""

    def __init__(self, root: Path, family: str) -> None:
        self.root, self.family = root, family
        self.directory = root / "torch_compile_cache" / family
        self.local = self.directory / "rank_0_0" / "backbone"

    @classmethod
    def from_env(cls, env: Mapping[str, str], family: str) -> CompileCache | None:
        root = env.get("VLLM_CACHE_ROOT")
        return cls(Path(root).expanduser(), family) if root else None

    @property
    def warm(self) -> bool:
        return (self.directory / MARKER).is_file()

    def prepare(self) -> None:
        """Create the family's directories as vLLM does before compiling; a root that cannot
        be written fails the start-up the way vLLM's ``os.makedirs`` does."""
        try:
            self.local.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StartupFailure(
                "Traceback (most recent call last):\n"
                '  File "vllm/compilation/backends.py", line 1081, in __call__\n'
                "    os.makedirs(local_cache_dir, exist_ok=True)\n"
                f"{type(err).__name__}: [Errno {err.errno}] {err.strerror}: '{self.local}'\n"
                "RuntimeError: Engine core initialization failed. See root cause above. "
                "Failed core proc(s): {'EngineCore_DP0': 1}"
            ) from None

    def record(self) -> None:
        """Mark the family compiled (atomically: a start killed mid-write leaves no marker)."""
        temporary = self.directory / f".{MARKER}.{os.getpid()}"
        try:
            temporary.write_text("simulated torch.compile output of tui-tuner's sim-serve\n")
            temporary.replace(self.directory / MARKER)
        except OSError:
            temporary.unlink(missing_ok=True)  # the next start compiles again, as vLLM would
