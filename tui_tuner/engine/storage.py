"""Opening an Optuna storage, telling its errors apart (a lock held elsewhere, a database that
is down or a full disk: the study stops and resumes later; everything else is a bug), and
calling it from the event loop without blocking (`StorageThread`).

SQLAlchemy is imported inside the functions: it costs a quarter of a second, which the TUI
spends on its first frame instead (the storage is opened in a worker thread after it).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from tui_tuner.core.errors import UserError

if TYPE_CHECKING:
    import optuna

__all__ = [
    "StorageThread",
    "StorageUnavailable",
    "is_storage_error",
    "open_storage",
    "shown_url",
    "storage_cause",
]

T = TypeVar("T")


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


def unavailable(url: str, err: BaseException, timeout_s: float) -> StorageUnavailable:
    """What to tell the user of a storage error (``is_storage_error``) at ``url``: a read-only
    file, a full disk, or a storage that did not answer."""
    cause = storage_cause(err)
    where = shown_url(url)
    if "readonly" in cause or "read-only" in cause:
        path = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else where
        return StorageUnavailable(
            f"the study storage {path} cannot be written by this user ({cause}); make it "
            f"writable (chmod u+w {path} and its directory), or resume a copy of the study "
            "directory. Nothing was changed"
        )
    if "full" in cause:
        return StorageUnavailable(
            f"the study storage {where} cannot be written: {cause}. Finished trials are kept "
            "in it; free some space, then resume"
        )
    return StorageUnavailable(
        f"the study storage {where} did not answer within study.storage_timeout_s "
        f"({timeout_s:g} s): {cause}. Finished trials are kept in it; resume once it is "
        "available again"
    )


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
    database race to create Optuna's tables; the loser finds them made on its next try.

    A database server's pool keeps one idle connection, not SQLAlchemy's five: opening the
    storage uses two at once, and a pool that kept both made each worker of a shared study hold
    two of PostgreSQL's 100 (``max_connections``), so 50 workers filled it
    (bench/storage_scale.py, docs/scale-out.md). The storage is called from one thread; a
    second connection, when one is needed, is closed after use."""
    import optuna.storages
    import sqlalchemy.exc

    if not url.startswith("sqlite"):
        engine_kwargs = {"pool_size": 1, **engine_kwargs}
    for attempt in range(4):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            if attempt == 3:
                raise
            time.sleep(0.5 + attempt)
    raise AssertionError("unreachable")


class StorageThread:
    """Every storage call of one study, run in one worker thread, so the event loop never blocks
    on it and the calls keep their order. A storage that stays locked or unreachable past
    ``timeout_s`` (the driver waits that long) becomes `StorageUnavailable`, which ends the
    study cleanly with what to do."""

    def __init__(self, storage_url: str, timeout_s: float) -> None:
        self._url, self._timeout_s = storage_url, timeout_s
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="study-io")

    async def __call__(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        except Exception as err:
            if not is_storage_error(err):
                raise
            raise unavailable(self._url, err, self._timeout_s) from None

    def close(self) -> None:
        """Let the thread go once its last call returns (a call in flight is not waited for)."""
        self._pool.shutdown(wait=False)
