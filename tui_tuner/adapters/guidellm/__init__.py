"""Drive GuideLLM 0.8.1 as a subprocess: build its command, run it, follow its log, read its report.

GuideLLM lives in its own virtual environment and is never imported here: it pulls in torch,
transformers and datasets, spawns worker processes, and its in-process API has no progress
hook. The CLI plus the JSON report is the stable contract, checked against the real 0.8.1
(``guidellm run --help`` and a run against ``guidellm mock-server``).

One module per part of that contract:

- :mod:`.command`: the load of one level (:class:`GuidellmWorkload`) and the ``guidellm run``
  argument list, with the ``--scenario`` file that carries an API key;
- :mod:`.process`: finding the executable and running it in its own process group;
- :mod:`.progress`: the progress lines of its log, while it runs;
- :mod:`.report`: the JSON report it leaves, read into a measurement;
- :mod:`.benchmarker`: the engine's ``Benchmarker`` port, built from the four above, and the
  removal of the key files a killed tuner left.
"""

from __future__ import annotations

from tui_tuner.adapters.guidellm.benchmarker import (
    GuidellmBenchmarker,
    remove_leftover_keys,
    workload_for,
)
from tui_tuner.adapters.guidellm.command import (
    SCENARIO_NAME,
    GuidellmWorkload,
    ProfileKind,
    backend_scenario,
    build_guidellm_command,
)
from tui_tuner.adapters.guidellm.process import (
    DEFAULT_GUIDELLM,
    GUIDELLM_VERSION,
    GuidellmNotFound,
    GuidellmTimeout,
    find_guidellm,
    run_guidellm,
)
from tui_tuner.adapters.guidellm.progress import GuidellmProgress, parse_progress_line
from tui_tuner.adapters.guidellm.report import GuidellmReportError, parse_guidellm_report

__all__ = [
    "DEFAULT_GUIDELLM",
    "GUIDELLM_VERSION",
    "SCENARIO_NAME",
    "GuidellmBenchmarker",
    "GuidellmNotFound",
    "GuidellmProgress",
    "GuidellmReportError",
    "GuidellmTimeout",
    "GuidellmWorkload",
    "ProfileKind",
    "backend_scenario",
    "build_guidellm_command",
    "find_guidellm",
    "parse_guidellm_report",
    "parse_progress_line",
    "remove_leftover_keys",
    "run_guidellm",
    "workload_for",
]
