"""Follow a running GuideLLM through its log: its periodic progress lines, parsed.

Apart from the report (:mod:`.report`) because it reads a different output at a different
time: one line of the merged stdout/stderr, while the run is still going.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["GuidellmProgress", "parse_progress_line"]


@dataclass(frozen=True)
class GuidellmProgress:
    """One periodic progress record (every 10 s and on each state change).

    ``status`` is started/warmup/active/cooldown/compile/completed. The counts during a run
    include warmup requests; the ``completed`` record counts only the measured window.
    """

    benchmark_index: int
    strategy: str
    status: str
    elapsed_s: float
    successful: int
    errored: int
    incomplete: int
    requests_per_s: float
    output_tok_s: float


_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_F = r"([-+]?(?:\d+(?:\.\d*)?|inf|nan))"
_PROGRESS = re.compile(
    rf"Benchmark (\d+) \((.*?)\): (\w+) \| elapsed={_F}s \| "
    r"successful=(\d+) errored=(\d+) incomplete=(\d+) \| "
    rf"requests/s={_F} output_tokens/s={_F}"
)


def parse_progress_line(line: str) -> GuidellmProgress | None:
    """Parse GuideLLM's loguru progress line (``benchmark/progress.py:_log_update``).

    Searches anywhere in the line, so the loguru prefix and colour codes do not matter.
    """
    match = _PROGRESS.search(_ANSI.sub("", line))
    if match is None:
        return None
    g = match.groups()
    return GuidellmProgress(
        benchmark_index=int(g[0]),
        strategy=g[1],
        status=g[2],
        elapsed_s=float(g[3]),
        successful=int(g[4]),
        errored=int(g[5]),
        incomplete=int(g[6]),
        requests_per_s=float(g[7]),
        output_tok_s=float(g[8]),
    )
