"""Log lines in vLLM's format: `(<proc> pid=N) LEVEL MM-DD HH:MM:SS [file.py:line] message`.

The tuner's failure classifier reads vLLM's logs; the simulator writes the same shapes (and the
same messages for the failures it models) so that the classifier is tested against them.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO

API = "APIServer"
ENGINE = "EngineCore_DP{dp}"


class VllmLog:
    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stdout
        self._pid = os.getpid()

    def line(self, proc: str, level: str, where: str, message: str) -> None:
        stamp = time.strftime("%m-%d %H:%M:%S")
        text = f"({proc} pid={self._pid}) {level} {stamp} [{where}] {message}\n"
        try:
            self._stream.write(text)
            self._stream.flush()
        except (BrokenPipeError, ValueError):
            pass  # the reader went away; serving goes on

    def info(self, where: str, message: str, proc: str = API) -> None:
        self.line(proc, "INFO", where, message)

    def warning(self, where: str, message: str, proc: str = API) -> None:
        self.line(proc, "WARNING", where, message)

    def error(self, where: str, message: str, proc: str = API) -> None:
        self.line(proc, "ERROR", where, message)

    def raw(self, text: str) -> None:
        """Unformatted output, as a Python traceback or argparse prints it."""
        try:
            self._stream.write(text if text.endswith("\n") else text + "\n")
            self._stream.flush()
        except (BrokenPipeError, ValueError):
            pass
