"""The study's storage held by another process, a full disk, and a second tuner on a study
directory.

Each test runs the real `tui-tuner tune` on the simulated server with the quick fake GuideLLM
(tests/fakes/fake_guidellm.py; these tests check the tuner, not a measurement).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.studies import leftovers, records, sim_study, start, tuner, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def write_config(tmp_path: Path, model: Path, *, storage_timeout_s: float, trials: int) -> Path:
    extra = f"n_trials: {trials}, storage_timeout_s: {storage_timeout_s}"
    return sim_study(tmp_path, model, name="storage", study=extra)


def tune_cmd(config: Path, study: Path, *extra: str) -> list[str]:
    return tuner("tune", config, "--study-dir", str(study), *extra)


def hold_exclusive(db: Path) -> sqlite3.Connection:
    """What a backup tool or a `sqlite3` shell left in a transaction does: no one else reads
    or writes the database until it lets go."""
    conn = sqlite3.connect(db, isolation_level=None, timeout=30)
    conn.execute("BEGIN EXCLUSIVE")
    return conn


def test_a_storage_locked_for_a_while_is_waited_for(tmp_path: Path, tiny_model: Path) -> None:
    study, events = tmp_path / "study", tmp_path / "events.jsonl"
    config = write_config(tmp_path, tiny_model, storage_timeout_s=30, trials=2)
    proc = start(tune_cmd(config, study, "--events-jsonl", str(events)))
    wait_for(events, '"phase": "warmup"', proc)
    lock = hold_exclusive(study / "study.db")
    time.sleep(5)  # the trial ends meanwhile: its result waits for the storage
    lock.execute("COMMIT")
    lock.close()
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output[-3000:]
    done = records(study)
    assert [r.state for r in done.values()] == ["complete", "complete"], done


def test_a_storage_locked_too_long_stops_the_study_cleanly_and_it_resumes(
    tmp_path: Path, tiny_model: Path
) -> None:
    study, events = tmp_path / "study", tmp_path / "events.jsonl"
    config = write_config(tmp_path, tiny_model, storage_timeout_s=2, trials=3)
    proc = start(tune_cmd(config, study, "--events-jsonl", str(events)))
    wait_for(events, '"kind": "trial_finished"', proc)  # trial 0 is stored
    wait_for(events, '"number": 1, "phase": "warmup"', proc)
    before = records(study)
    lock = hold_exclusive(study / "study.db")
    try:
        output, _ = proc.communicate(timeout=120)
    finally:
        lock.execute("COMMIT")
        lock.close()
    assert proc.returncode == 2, output[-3000:]
    assert "did not answer within study.storage_timeout_s (2 s): database is locked" in output
    assert "Traceback" not in output
    assert not leftovers(str(tmp_path))
    resumed = subprocess.run(tuner("resume", study), capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    after = records(study)
    assert after[0] == before[0] and after[0].state == "complete"
    assert after[1].note.startswith("interrupted: the tuner running it died")
    assert sum(r.state == "complete" for r in after.values()) == 3


def test_a_second_tuner_on_the_same_directory_is_refused(tmp_path: Path, tiny_model: Path) -> None:
    study, events = tmp_path / "study", tmp_path / "events.jsonl"
    config = write_config(tmp_path, tiny_model, storage_timeout_s=30, trials=2)
    first = start(tune_cmd(config, study, "--events-jsonl", str(events)))
    wait_for(events, '"phase": "launching"', first)
    kept = (study / "overrides.json").read_bytes() if (study / "overrides.json").exists() else None
    for second in (
        tune_cmd(config, study, "--trials", "5"),
        [sys.executable, "-m", "tui_tuner", "resume", str(study), "--headless"],
    ):
        result = subprocess.run(second, capture_output=True, text=True, timeout=60)
        assert result.returncode == 2, result.stdout + result.stderr
        assert f"is in use by another tui-tuner (pid {first.pid} on " in result.stderr
        assert "Traceback" not in result.stderr
    after = (study / "overrides.json").read_bytes() if (study / "overrides.json").exists() else None
    assert after == kept  # the refused tuner changed nothing
    output, _ = first.communicate(timeout=120)
    assert first.returncode == 0, output[-3000:]
    assert [r.state for r in records(study).values()] == ["complete", "complete"]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB file system of its own (tmpfs), to fill up."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(disk)],
                             capture_output=True, text=True)  # fmt: skip
    if mounted.returncode != 0:
        message = f"cannot mount a small tmpfs here: {mounted.stderr.strip()}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    with filler.open("wb") as out:
        try:
            while True:
                out.write(b"\0" * 2**20)
                out.flush()
        except OSError:
            pass
    return filler


def test_a_full_disk_stops_the_study_cleanly_and_it_resumes(
    tmp_path: Path, tiny_model: Path, small_disk: Path
) -> None:
    study, events = small_disk / "study", tmp_path / "events.jsonl"
    config = write_config(tmp_path, tiny_model, storage_timeout_s=5, trials=3)
    proc = start(tune_cmd(config, study, "--events-jsonl", str(events)))
    wait_for(events, '"kind": "trial_finished"', proc)
    wait_for(events, '"number": 1, "phase": "warmup"', proc)
    before = records(study)
    filler = fill(small_disk)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode in (1, 2), output[-3000:]  # stopped by the engine, or the storage
    assert "full" in output and "free some space, then resume" in output, output[-3000:]
    assert "Traceback" not in output
    assert not leftovers(str(tmp_path))
    resume = tuner("resume", study)
    refused = subprocess.run(resume, capture_output=True, text=True, timeout=120)
    said = refused.stdout + refused.stderr
    assert refused.returncode in (1, 2) and "full" in said and "Traceback" not in said, said
    assert not (study / "trials" / "0002").exists()  # no trial starts on a full disk
    filler.unlink()
    resumed = subprocess.run(resume, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    after = records(study)
    assert after[0] == before[0] and after[0].state == "complete"
    assert sum(r.state == "complete" for r in after.values()) == 3
    assert not leftovers(str(tmp_path))


@pytest.fixture
def read_only_db(tmp_path: Path) -> Iterator[Path]:
    """A study database this process cannot write although it runs as root (the tests do):
    the file made immutable (chattr +i), as a 0444 file is for its non-root owner."""
    db = tmp_path / "study" / "study.db"
    yield db
    subprocess.run(["chattr", "-i", str(db)], capture_output=True)


def test_a_read_only_storage_is_one_line_naming_the_file(
    tmp_path: Path, tiny_model: Path, read_only_db: Path
) -> None:
    from tui_tuner.core.config_load import load_config
    from tui_tuner.engine.study import StudyStore, default_storage_url

    study = read_only_db.parent
    study.mkdir()
    config = write_config(tmp_path, tiny_model, storage_timeout_s=5, trials=1)
    StudyStore(load_config(config), default_storage_url(study))  # the study, created
    made = subprocess.run(["chattr", "+i", str(read_only_db)], capture_output=True, text=True)
    if made.returncode != 0:
        message = f"cannot make a file immutable here: {made.stderr.strip()}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    before = read_only_db.read_bytes()
    result = subprocess.run(tune_cmd(config, study), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"the study storage {read_only_db} cannot be written by this user" in lines[0]
    assert "readonly database" in lines[0] and "chmod u+w" in lines[0]
    assert read_only_db.read_bytes() == before
    assert not (study / "trials").exists()  # nothing started
