"""Opening an Optuna storage, and telling its errors apart: a lock held elsewhere, a database
that is down or a full disk (the study stops and resumes later) from everything else.

SQLAlchemy is imported inside the functions: it costs a quarter of a second, which the TUI
spends on its first frame instead (the storage is opened in a worker thread after it).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from tui_tuner.core.errors import UserError

if TYPE_CHECKING:
    import optuna

__all__ = ["StorageUnavailable", "is_storage_error", "open_storage", "shown_url", "storage_cause"]


def shown_url(url: str) -> str:
    """A storage URL fit for a screen, a log or an event: its password masked."""
    import sqlalchemy.engine
    import sqlalchemy.exc

    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        return url


class StorageUnavailable(UserError):
    """The storage did not answer within ``study.storage_timeout_s`` (a lock held elsewhere, a
    database down, a full disk). Finished trials are in it; the study resumes later."""


def storage_cause(err: BaseException) -> str:
    """The driver's own words for a storage error ("database is locked"), not Optuna's wrapper
    text, which guesses at invalid data."""
    seen: BaseException | None = err
    while seen is not None:
        orig = getattr(seen, "orig", None)
        if orig is not None:
            return str(orig).splitlines()[0]
        seen = seen.__cause__ or seen.__context__
    return str(err).splitlines()[0]


def is_storage_error(err: BaseException) -> bool:
    """Whether the storage could not be read or written right now (rather than a bug)."""
    import optuna.exceptions
    import sqlalchemy.exc

    kinds = (
        sqlalchemy.exc.OperationalError,
        sqlalchemy.exc.InterfaceError,
        optuna.exceptions.StorageInternalError,
    )
    return isinstance(err, kinds)


def open_storage(url: str, engine_kwargs: dict[str, Any]) -> optuna.storages.RDBStorage:
    """Open (and on first use create) the storage. Workers started together on an empty
    database race to create Optuna's tables; the loser finds them made on its next try."""
    import optuna.storages
    import sqlalchemy.exc

    for attempt in range(4):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            if attempt == 3:
                raise
            time.sleep(0.5 + attempt)
    raise AssertionError("unreachable")
