"""The node's GPUs, handed out to the trials that run side by side (``study.workers``).

A trial takes as many GPUs as its server's parallel degrees multiply to (`core/gpus.py`), and
gives them back once its server is stopped and their memory released (or when the server a
load sweep kept for it is stopped). Two trials never hold the same GPU. A trial that needs more
than are free waits, first come first served: a trial asking for 2 GPUs is not starved by
1-GPU trials that keep arriving behind it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence

__all__ = ["GpuPool"]


class GpuPool:
    def __init__(self, gpus: Sequence[int]) -> None:
        if not gpus:
            raise ValueError("a GPU pool needs at least one GPU")
        self.gpus: tuple[int, ...] = tuple(gpus)
        self._free: list[int] = list(self.gpus)
        self._queue: deque[tuple[int, asyncio.Future[tuple[int, ...]]]] = deque()

    @property
    def total(self) -> int:
        return len(self.gpus)

    @property
    def busy(self) -> tuple[int, ...]:
        return tuple(g for g in self.gpus if g not in self._free)

    def fits(self, n: int) -> bool:
        """Whether a trial needing ``n`` GPUs can ever run on this node."""
        return 1 <= n <= len(self.gpus)

    def free_now(self, n: int) -> bool:
        """Whether ``n`` GPUs would be handed out at once (none waiting before)."""
        return not self._queue and len(self._free) >= n

    async def acquire(self, n: int) -> tuple[int, ...]:
        """``n`` GPUs (the lowest indices free), waiting for them if they are busy. Cancelling
        the wait gives nothing away."""
        if not self.fits(n):
            raise ValueError(f"{n} GPUs asked of a node with {len(self.gpus)}")
        if self.free_now(n):
            return self._take(n)
        waiter: asyncio.Future[tuple[int, ...]] = asyncio.get_running_loop().create_future()
        entry = (n, waiter)
        self._queue.append(entry)
        try:
            return await waiter
        except asyncio.CancelledError:
            if entry in self._queue:
                self._queue.remove(entry)
            elif waiter.done() and not waiter.cancelled():
                self.release(waiter.result())  # handed out just as the wait was cancelled
            self._hand_out()
            raise

    def release(self, gpus: Sequence[int]) -> None:
        """Give ``gpus`` back; waiting trials get them in their order."""
        for g in gpus:
            if g in self.gpus and g not in self._free:
                self._free.append(g)
        self._free.sort()
        self._hand_out()

    def _take(self, n: int) -> tuple[int, ...]:
        taken, self._free = tuple(self._free[:n]), self._free[n:]
        return taken

    def _hand_out(self) -> None:
        while self._queue and len(self._free) >= self._queue[0][0]:
            n, waiter = self._queue.popleft()
            if not waiter.done():
                waiter.set_result(self._take(n))
