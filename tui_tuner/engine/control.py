"""The control channel: pause, stop and prune requests that travel through the study's storage.

A command given to this worker (from its own TUI, a signal) is obeyed at once and also written
to the storage (`ControlChannel.publish`), so other processes see the same state. Requests that
other processes leave there (a TUI attached to a shared study) are read about once a second
(`ControlChannel.follow`) and handed to the orchestrator to obey. The same loop keeps the
running trial's heartbeat, by which other workers tell a live worker from a dead one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from tui_tuner.core.events import Event, Notice
from tui_tuner.core.trial import TrialPlan
from tui_tuner.engine.storage import StorageThread, StorageUnavailable

__all__ = ["HEARTBEAT_S", "POLL_S", "Control", "ControlChannel", "ControlStore"]

#: How often the storage is read for requests.
POLL_S = 1.0
#: How often the running trial's heartbeat is written.
HEARTBEAT_S = 10.0


@dataclass
class Control:
    """Requests any process may leave in the study: pause, stop (with its time), prune."""

    paused: bool = False
    stop_at: float | None = None
    prune: set[int] = field(default_factory=set)

    @classmethod
    def from_attr(cls, raw: Mapping[str, Any] | None) -> Control:
        """From the study's ``control`` user attribute (missing: no request)."""
        raw = raw or {}
        stop_at = raw.get("stop_at")
        return cls(
            paused=bool(raw.get("paused")),
            stop_at=None if stop_at is None else float(stop_at),
            prune={int(n) for n in raw.get("prune", [])},
        )

    def to_attr(self) -> dict[str, Any]:
        """As the study's ``control`` user attribute (JSON-safe)."""
        return {"paused": self.paused, "stop_at": self.stop_at, "prune": sorted(self.prune)}


class ControlStore(Protocol):
    """What the channel needs of the study's store (``StudyStore``); blocking calls, made in
    the storage thread."""

    def control(self) -> Control: ...

    def update_control(self, *, paused: bool | None = None) -> Control: ...

    def heartbeat(self, plan: TrialPlan) -> None: ...


class ControlChannel:
    """One worker's end of the control requests in its study's storage."""

    def __init__(
        self,
        store: ControlStore,
        io: StorageThread,
        emit: Callable[[Event], None],
        *,
        poll_s: float = POLL_S,
        heartbeat_s: float = HEARTBEAT_S,
    ) -> None:
        self._store, self._io, self._emit = store, io, emit
        self._poll_s, self._heartbeat_s = poll_s, heartbeat_s
        self._local_changes = 0
        self._pending: set[asyncio.Future[Any]] = set()

    def publish(self, *, paused: bool) -> None:
        """Write a local pause or resume to the storage too, without waiting for it. A request
        read meanwhile is not obeyed: it predates this command."""
        self._local_changes += 1
        task = asyncio.ensure_future(self._io(lambda: self._store.update_control(paused=paused)))
        self._pending.add(task)
        task.add_done_callback(self._published)

    def _published(self, task: asyncio.Future[Any]) -> None:
        self._pending.discard(task)
        if not task.cancelled() and isinstance(task.exception(), StorageUnavailable):
            # This process obeys the command anyway; only other processes miss it.
            self._emit(Notice("warning", f"the command was not written to the storage: "
                                         f"{task.exception()}"))  # fmt: skip

    async def follow(
        self, obey: Callable[[Control], None], running: Callable[[], TrialPlan | None]
    ) -> None:
        """Until cancelled: hand the requests in the storage to ``obey``, and write the heartbeat
        of the trial ``running`` returns. A storage that does not answer is skipped (the study
        loop meets the same storage and says so)."""
        last_beat = time.monotonic()
        while True:
            await asyncio.sleep(self._poll_s)
            seen = self._local_changes
            try:
                control = await self._io(self._store.control)
            except StorageUnavailable:
                continue
            if seen != self._local_changes:
                continue  # a local command changed it meanwhile; read again next time
            obey(control)
            plan = running()
            if plan is not None and time.monotonic() - last_beat >= self._heartbeat_s:
                last_beat = time.monotonic()
                with contextlib.suppress(StorageUnavailable):
                    await self._io(self._store.heartbeat, plan)
