"""Group commit: the writes waiting at one moment go to the database together.

Callers on the event loop hand in one item each and await its own result.
While a group is being written (in a worker thread, one group at a time per
:class:`GroupCommit`), the next callers queue; the next group takes all of
them, up to ``max_group``. Under load a transaction then carries many writes;
alone, a write waits for no one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["GroupCommit"]

_Item = TypeVar("_Item")
_Result = TypeVar("_Result")


class GroupCommit(Generic[_Item, _Result]):
    """Writes items in groups through ``write``, one group at a time.

    ``write`` runs in a worker thread and returns one result per item, in
    order; if it raises, every caller of that group gets the exception.
    """

    def __init__(
        self, write: Callable[[Sequence[_Item]], Sequence[_Result]], *, max_group: int = 256
    ) -> None:
        if max_group < 1:
            raise ValueError(f"max_group must be at least 1, got {max_group}")
        self._write = write
        self._max_group = max_group
        self._waiting: list[tuple[_Item, asyncio.Future[_Result]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, item: _Item) -> _Result:
        """Write ``item`` with whatever else is waiting; its own result.

        Raises:
            Exception: whatever ``write`` raised for the group.
        """
        loop = asyncio.get_running_loop()
        done: asyncio.Future[_Result] = loop.create_future()
        self._waiting.append((item, done))
        if self._writer is None or self._writer.done() or self._writer.get_loop() is not loop:
            self._writer = loop.create_task(self._drain())
        return await done

    async def _drain(self) -> None:
        while self._waiting:
            group = self._waiting[: self._max_group]
            del self._waiting[: self._max_group]
            try:
                results = await asyncio.to_thread(self._write, [item for item, _ in group])
            except Exception as exc:  # handed to each caller, who raises it
                for _, done in group:
                    if not done.done():
                        done.set_exception(exc)
                continue
            except BaseException:
                # Cancelled (the loop is closing): the callers are cancelled with it.
                for _, done in group:
                    done.cancel()
                raise
            for (_, done), result in zip(group, results, strict=True):
                if not done.done():  # its caller may have gone; the write stands
                    done.set_result(result)
