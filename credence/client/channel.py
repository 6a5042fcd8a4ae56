"""What every SDK client does with its gRPC channel: trace it, close it, also leaving a ``with``."""

from __future__ import annotations

from types import TracebackType
from typing import Self

import grpc

from credence.ops import tracing

__all__ = ["ChannelClient"]


class ChannelClient:
    """A client that owns one gRPC channel (``self._channel``), usable as a context manager.

    Subclasses open the channel in their constructor and assign it to
    ``self._channel``; with tracing on (:mod:`credence.ops.tracing`) the
    assignment puts the tracing interceptor in front, so every call the client
    makes sends its ``traceparent``. :meth:`close` (or leaving the ``with``
    block) closes it and cancels the calls in flight.
    """

    __channel: grpc.Channel

    @property
    def _channel(self) -> grpc.Channel:
        return self.__channel

    @_channel.setter
    def _channel(self, channel: grpc.Channel) -> None:
        self.__channel = tracing.traced_channel(channel)

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
