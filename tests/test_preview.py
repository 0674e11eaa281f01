"""The TUI's first look at a SQLite study (engine/preview.py) must show exactly what the study
store reads through Optuna: every kind of parameter and every way a trial ends."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

from optuna.trial import TrialState

from tests.conftest import ROOT
from tests.fakes.engine import measurement
from tui_tuner.core.config_load import load_config
from tui_tuner.core.trial import TrialRecord
from tui_tuner.engine.preview import preview_records, sqlite_path
from tui_tuner.engine.study import StudyStore, default_storage_url
from tui_tuner.ui.model import StudyModel


def build(tmp_path: Path) -> StudyStore:
    """A study over int (log), float, option (int and text) and bool parameters, with trials
    complete, failed by the server, pruned, interrupted and repeated."""
    config = load_config(ROOT / "sample_configs" / "max-throughput.yaml")
    store = StudyStore(config, default_storage_url(tmp_path))
    store.ensure_baseline()
    for n in range(6):
        plan = store.ask(config.space)
        tok_s = 100.0 * (n + 1)
        record = TrialRecord(plan.number, "complete", plan.params, plan.baseline,
                             measurement(tok_s), values=(tok_s,), timings={"total": 9.5},
                             command=("vllm", "serve", "m"))  # fmt: skip
        state = TrialState.COMPLETE
        if n == 2:
            failure = {"class": "oom_startup", "message": "CUDA out of memory"}
            record = replace(record, state="failed", measurement=None, values=(0.0,),
                             failure=failure, constraints={"server_failed": 1.0})  # fmt: skip
        elif n == 3:
            record = replace(record, state="pruned", note="pruned by the user")
            state = TrialState.PRUNED
        elif n == 4:
            store.interrupt(plan, "interrupted: stopped by SIGTERM")
            continue
        elif n == 5:
            record = replace(record, duplicate_of=1, measurement=None, values=None)
            state = TrialState.FAIL
        told = list(record.values) if state == TrialState.COMPLETE and record.values else None
        store.tell(plan, record, values=told, state=state)
    return store


def test_the_first_look_reads_what_the_study_store_reads(tmp_path: Path) -> None:
    store = build(tmp_path)
    db = sqlite_path(store.storage_url)
    assert db == tmp_path / "study.db"
    looked = preview_records(db, store.config.study.name)
    stored = [r for r in store.records() if r.state not in ("waiting", "running")]
    assert looked == stored
    # In the same order too: the table shows the parameters as they come.
    assert [list(r.params) for r in looked] == [list(r.params) for r in stored]
    kinds = {type(v) for r in stored for v in r.params.values()}
    assert kinds == {int, float, str, bool}, "every kind of parameter is covered"
    assert {r.state for r in stored} == {"complete", "failed", "pruned"}
    assert any(r.interrupted and r.note.startswith("interrupted") for r in stored)
    assert any(r.duplicate_of is not None for r in stored)


def test_the_first_look_gives_up_quietly(tmp_path: Path) -> None:
    store = build(tmp_path)
    db = tmp_path / "study.db"
    assert preview_records(db, "another-study") == []
    assert preview_records(tmp_path / "missing.db", store.config.study.name) is None
    not_a_db = tmp_path / "config.yaml"
    not_a_db.write_text("study: {name: x}\n")
    assert preview_records(not_a_db, "x") is None
    with sqlite3.connect(db) as con:  # a schema this reader does not know
        con.execute("ALTER TABLE trial_params RENAME COLUMN distribution_json TO dist")
    assert preview_records(db, store.config.study.name) is None
    assert sqlite_path("postgresql+psycopg://u@h/db") is None
    assert sqlite_path("sqlite:///rel/study.db") == Path("rel/study.db")


def test_the_engine_list_replaces_the_first_look(tmp_path: Path) -> None:
    """Trials the engine reads the same are not redrawn; one the study lacks is dropped."""
    store = build(tmp_path)
    looked = preview_records(tmp_path / "study.db", store.config.study.name)
    assert looked
    model = StudyModel(store.config)
    ghost = replace(looked[-1], number=99)
    model.load([*looked, ghost])
    assert model.changed_since(-1) == {r.number for r in looked} | {99}
    drawn = model.version
    model.load(store.records())
    assert model.changed_since(drawn) == {99}
    assert 99 not in model.records and set(model.records) == {r.number for r in looked}
