"""A quick, read-only first look at the finished trials of a SQLite study.

Opening a study through Optuna loads SQLAlchemy, Alembic and an ORM row per stored value: about
1.3 s for a study of 1,000 trials on a slow machine. The TUI paints this look first, read with
the standard library's sqlite3 straight from Optuna's tables and turned into records by the
same code as ``StudyStore.records``, then the engine opens the study properly and its list
replaces this one. Anything unexpected (another schema, a locked or missing file, a study not
there yet) gives None, and the TUI simply waits for the engine.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections import defaultdict
from pathlib import Path
from typing import Any

from tui_tuner.core.trial import TrialRecord
from tui_tuner.engine.records import record_from

__all__ = ["preview_records", "sqlite_path"]

_TRIALS = """
SELECT t.trial_id, t.number, t.state FROM trials t JOIN studies s ON s.study_id = t.study_id
WHERE s.study_name = ? AND t.state IN ('COMPLETE', 'PRUNED', 'FAIL') ORDER BY t.number
"""
_OF_STUDY = """
SELECT t.trial_id FROM trials t JOIN studies s ON s.study_id = t.study_id WHERE s.study_name = ?
"""
_PARAMS = f"""
SELECT trial_id, param_name, param_value, distribution_json FROM trial_params
WHERE trial_id IN ({_OF_STUDY}) ORDER BY param_id
"""
_ATTRS = f"""
SELECT trial_id, key, value_json FROM trial_user_attributes WHERE trial_id IN ({_OF_STUDY})
"""


def sqlite_path(storage_url: str) -> Path | None:
    """The file of a ``sqlite:///`` storage URL, or None for any other storage."""
    prefix = "sqlite:///"
    if not storage_url.startswith(prefix) or "?" in storage_url:
        return None
    return Path(storage_url[len(prefix) :])


def preview_records(db: Path, study_name: str) -> list[TrialRecord] | None:
    """The finished trials of ``study_name`` in ``db``, in number order; None if unreadable."""
    if not db.is_file():
        return None
    try:
        uri = f"{db.as_uri()}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=1)) as con:
            trials = con.execute(_TRIALS, (study_name,)).fetchall()
            params: dict[int, dict[str, object]] = defaultdict(dict)
            for trial_id, name, value, dist in con.execute(_PARAMS, (study_name,)):
                params[trial_id][name] = _external(value, json.loads(dist))
            attrs: dict[int, dict[str, Any]] = defaultdict(dict)
            for trial_id, key, value in con.execute(_ATTRS, (study_name,)):
                attrs[trial_id][key] = json.loads(value)
        return [
            record_from(number, state, params[trial_id], attrs[trial_id])
            for trial_id, number, state in trials
        ]
    except (sqlite3.Error, ValueError, KeyError, TypeError, IndexError):
        return None


def _external(value: float, distribution: dict[str, Any]) -> object:
    """A parameter as the sampler gave it: Optuna stores ints as floats, choices as indexes."""
    name, attributes = distribution["name"], distribution["attributes"]
    if name == "CategoricalDistribution":
        return attributes["choices"][int(value)]
    if name in ("IntDistribution", "IntUniformDistribution", "IntLogUniformDistribution"):
        return int(value)
    if name in ("FloatDistribution", "UniformDistribution", "LogUniformDistribution",
                "DiscreteUniformDistribution"):  # fmt: skip
        return float(value)
    raise ValueError(f"unknown distribution {name}")
