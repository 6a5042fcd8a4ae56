"""What every SDK client does with its gRPC channel: close it, also on leaving a ``with``."""

from __future__ import annotations

from types import TracebackType
from typing import Self

import grpc

__all__ = ["ChannelClient"]


class ChannelClient:
    """A client that owns one gRPC channel (``self._channel``), usable as a context manager.

    Subclasses open the channel in their constructor; :meth:`close` (or leaving
    the ``with`` block) closes it and cancels the calls in flight.
    """

    _channel: grpc.Channel

    def close(self) -> None:
        """Close the channel; calls in flight are cancelled."""
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
