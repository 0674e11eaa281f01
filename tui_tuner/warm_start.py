"""``study.warm_start``: the best configurations of earlier studies, queued before the search.

Reads each earlier study read-only (`results.open_study`: a study directory, a ``study.db`` or a
storage URL, ``URL#NAME`` for one of several studies), ranks its configurations by its own
objective (`core.confidence`: the mean of each configuration's runs), maps the best onto this
study's space (`core.warm_start`), and queues them right after the baseline, once a study. The
CLI calls it before the display opens, so a source that cannot be read stops the run with one
line, and what was mapped is said when the study starts.
"""

from __future__ import annotations

from tui_tuner.core.confidence import best_configurations
from tui_tuner.core.errors import UserError
from tui_tuner.core.events import Notice
from tui_tuner.core.warm_start import map_configurations
from tui_tuner.results import open_study
from tui_tuner.study_dir import StudySetup

__all__ = ["apply_warm_start"]


def _split(source: str) -> tuple[str, str | None]:
    if "://" in source and "#" in source:
        url, name = source.rsplit("#", 1)
        return url, name or None
    return source, None


def apply_warm_start(setup: StudySetup) -> int:
    """Queue the warm-start configurations of ``setup``'s study (if not done before); add what
    happened to its notices; how many were queued."""
    sources = setup.config.study.warm_start
    if not sources or setup.store.study.user_attrs.get("warm_started"):
        return 0
    found = []
    for source in sources:
        target, name = _split(source)
        try:
            view = open_study(target, name)
        except UserError as err:
            raise UserError(f"study.warm_start: cannot read {source}: {err}") from None
        best = best_configurations(view.config.objective.kind, view.records)
        found.append((source, [dict(r.params) for r in best]))
    queued, notes = map_configurations(setup.config.space, found)
    count = setup.store.queue_warm_start([(m.params, m.source) for m in queued])
    said = [
        f"warm start: {count} configuration(s) of earlier studies run first, after the baseline"
    ]
    for m in queued:
        if m.notes:
            said.append(f"warm start from {m.source}: " + "; ".join(m.notes))
    said += [f"warm start: {n}" for n in notes]
    setup.notices = (*setup.notices, *(Notice("info", text) for text in said))
    return count
