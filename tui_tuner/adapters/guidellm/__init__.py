"""Drive GuideLLM 0.8.1 in its own processes: build its command, run it, follow its log, read its
report.

GuideLLM lives in its own virtual environment and is never imported here: it pulls in torch,
transformers and datasets, spawns worker processes, and its in-process API has no progress
hook. The CLI plus the JSON report is the stable contract, checked against the real 0.8.1
(``guidellm run --help`` and a run against ``guidellm mock-server``). The same command runs
either as a subprocess a trial or in one long-lived worker a study, which GuideLLM's own
interpreter runs (:mod:`.driver`), so that its start-up is paid once.

One module per part of that contract:

- :mod:`.command`: the load of one level (:class:`GuidellmWorkload`) and the ``guidellm run``
  argument list, with the ``--scenario`` file that carries an API key;
- :mod:`.process`: finding the executable and running it in its own process group;
- :mod:`.progress`: the progress lines of its log, while it runs;
- :mod:`.report`: the JSON report it leaves, read into a measurement;
- :mod:`.worker` and :mod:`.driver`: the long-lived worker, from the tuner's side and from
  GuideLLM's (a plain script that imports no ``tui_tuner``);
- :mod:`.benchmarker`: the engine's ``Benchmarker`` port, built from the above (``cli`` or
  ``worker``, :func:`pick_benchmarker`), and the removal of the key files a killed tuner left.
"""

from __future__ import annotations

from tui_tuner.adapters.guidellm.benchmarker import (
    GuidellmBenchmarker,
    GuidellmWorkerBenchmarker,
    pick_benchmarker,
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
from tui_tuner.adapters.guidellm.worker import (
    MAX_WORKER_RSS_BYTES,
    GuidellmWorker,
    WorkerFailed,
    guidellm_python,
)

__all__ = [
    "DEFAULT_GUIDELLM",
    "GUIDELLM_VERSION",
    "MAX_WORKER_RSS_BYTES",
    "SCENARIO_NAME",
    "GuidellmBenchmarker",
    "GuidellmNotFound",
    "GuidellmProgress",
    "GuidellmReportError",
    "GuidellmTimeout",
    "GuidellmWorker",
    "GuidellmWorkerBenchmarker",
    "GuidellmWorkload",
    "ProfileKind",
    "WorkerFailed",
    "backend_scenario",
    "build_guidellm_command",
    "find_guidellm",
    "guidellm_python",
    "parse_guidellm_report",
    "parse_progress_line",
    "pick_benchmarker",
    "remove_leftover_keys",
    "run_guidellm",
    "workload_for",
]
