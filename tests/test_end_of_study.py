"""What a user reads when a study ends or runs headless: the best table or that nothing was
measured, a resume command that works from where they are, and their own values printed as typed
(brackets in a name, a value or a message are text, not Rich markup)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

from rich.console import Console

from tests.test_export import _config, _record
from tui_tuner.core.config import ServerSettings, StudyConfig, StudySettings
from tui_tuner.core.events import Notice, StudyStarted, TrialFinished, TrialStarted
from tui_tuner.core.trial import TrialRecord
from tui_tuner.report.console import ConsoleSink
from tui_tuner.report.summary import end_of_study, own_command


def _printed(items: list[object]) -> str:
    console = Console(file=io.StringIO(), width=200, highlight=False, color_system=None)
    for item in items:
        console.print(item)
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(out, str)
    return out


def test_the_resume_command_is_the_executable_running_when_tui_tuner_is_not_on_path(
    tmp_path: Path,
) -> None:
    exe = tmp_path / ".venv" / "bin" / "tui-tuner"  # what `make demo` runs
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    assert own_command(str(exe), on_path=None) == str(exe)
    assert own_command(str(exe), on_path="/usr/bin/tui-tuner") == str(exe)  # another one
    assert own_command(str(exe), on_path=str(exe)) == "tui-tuner"
    main = "/src/tui_tuner/__main__.py"  # python -m tui_tuner
    assert own_command(main, on_path=str(exe)) == f"{sys.executable} -m tui_tuner"


def test_quitting_before_any_trial_finished_says_nothing_was_measured(tmp_path: Path) -> None:
    running = [TrialRecord(number=0, state="running", baseline=True)]
    out = _printed(list(end_of_study(_config(), running, tmp_path / "s", resumable=True)))
    assert "nothing was measured: no trial finished" in out
    assert "trials: none finished" in out
    assert "┃" not in out and "|" not in out  # no empty table
    assert f"resume with: {own_command()} resume {tmp_path / 's'}" in out
    failed = [TrialRecord(number=0, state="failed", baseline=True)]
    out = _printed(list(end_of_study(_config(), failed, tmp_path, resumable=False)))
    assert "nothing was measured: no trial finished with a measurement" in out
    assert "resume with" not in out


def test_brackets_in_names_values_and_messages_are_printed_as_typed(tmp_path: Path) -> None:
    config = StudyConfig(
        study=StudySettings(name="[bold]x[/]"), server=ServerSettings(model="org/[m]odel")
    )
    records = [_record(0, 500.0, baseline=True), _record(1, 600.0, {"kv_cache_dtype": "[fp8]"})]
    out = _printed(list(end_of_study(config, records, tmp_path / "[s]", resumable=True)))
    assert "study [bold]x[/]: objective" in out
    assert "kv_cache_dtype=[fp8]" in out
    assert "vllm serve 'org/[m]odel'" in out
    assert "[s]" in out

    stream = io.StringIO()
    console = Console(file=stream, width=200, highlight=False, color_system=None)
    failed = TrialRecord(
        number=2,
        state="failed",
        params={"max_num_seqs": "[8]"},
        failure={"class": "server_crashed", "message": "bad [value] [/red]"},
        files={"server.log": "/tmp/[x]/server.log"},
    )
    with ConsoleSink(console) as sink:
        sink(StudyStarted("[s]", "max_throughput", "sqlite:///[db]", "d", 3, None, True, 0))
        sink(TrialStarted(2, {"max_num_seqs": "[8]"}, False, (), "d"))
        sink(TrialFinished(failed))
        sink(Notice("warning", "see [red]here[/]", 2))
    out = stream.getvalue()
    for typed in ("study [s]", "sqlite:///[db]", "max_num_seqs=[8]", "bad [value] [/red]",
                  "/tmp/[x]/server.log", "see [red]here[/]"):  # fmt: skip
        assert typed in out, (typed, out)


def test_a_latency_that_grew_reads_worse_and_the_answer_states_its_confidence(
    tmp_path: Path,
) -> None:
    """Better always reads as better (issue 14): a p95 that grew 20% is "20.0% worse", never
    "+20.0%"; with the baseline run twice, the end states the gain with its interval."""
    from dataclasses import replace

    from tests.fakes.engine import measurement

    config = StudyConfig(study=StudySettings(name="t"), server=ServerSettings(model="m"))
    base = TrialRecord(0, "complete", baseline=True, measurement=measurement(1000, 500))
    again = replace(base, number=1, measurement=measurement(1010, 500))
    best = TrialRecord(2, "complete", params={"max_num_seqs": 8},
                       measurement=measurement(1500, 600))  # fmt: skip
    text = _printed(end_of_study(config, [base, again, best], tmp_path, resumable=False))
    assert "20.0% worse" in text and "+20.0%" not in text
    assert "gain over the baseline: +49.3% output tok/s, 95% interval" in text
