"""Concurrency limits per peer, so that no member or address can starve a server.

A server counts the calls each peer has in flight (and, optionally, all
peers together) and refuses a call beyond a limit with RESOURCE_EXHAUSTED and
a one-line reason, before the service sees it. A call holds its place until
it is done (a stream until it ends or is cancelled), so long-lived streams
such as ``Health/Watch`` are bounded as well as many short calls.

Peers are named by a :data:`PeerKey` function of the call's context:
:func:`member_of_peer` (the member id in the client certificate, for mutual
TLS ports) or :func:`address_of_peer` (the source address without its port,
for the registry's public port). :class:`ConcurrencyLimit` is the counting,
with no gRPC in it; :class:`PeerLimitInterceptor` applies limits to a
``grpc.aio`` server.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import grpc.aio
from cryptography import x509

from credence.errors import CredenceError
from credence.ops.log_throttle import ThrottledWarning
from credence.pki import member_id_from_certificate
from credence.rpc.tls import PeerContext, checked_async, peer_certificate_pem, rebuild_handler

_log = logging.getLogger(__name__)

#: A flood of refused calls writes one line per peer and method a minute.
_refusals = ThrottledWarning(_log)

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")

PeerKey = Callable[[PeerContext], str]

HEALTH_WATCH = "/grpc.health.v1.Health/Watch"


class ConcurrencyLimit:
    """Calls in flight per peer and in all, for one kind of call. Thread-safe.

    Args:
        what: what is counted, for the refusal reason (e.g. "calls").
        per_peer: the most one peer may have in flight, or a function of the
            peer giving its limit (e.g. a higher one for the registry).
        total: the most all peers together may have in flight; None for no
            overall limit.

    Raises:
        ValueError: a limit is below 1.
    """

    def __init__(
        self, what: str, per_peer: int | Callable[[str], int], total: int | None = None
    ) -> None:
        if (isinstance(per_peer, int) and per_peer < 1) or (total is not None and total < 1):
            raise ValueError(f"limits on {what} must be at least 1")
        self._what = what
        self._per_peer = per_peer
        self._total = total
        self._lock = threading.Lock()
        self._by_peer: dict[str, int] = {}
        self._all = 0

    def limit_for(self, peer: str) -> int:
        """The most ``peer`` may have in flight."""
        return self._per_peer(peer) if callable(self._per_peer) else self._per_peer

    def in_flight(self, peer: str | None = None) -> int:
        """Calls in flight from ``peer``, or from all peers."""
        with self._lock:
            return self._all if peer is None else self._by_peer.get(peer, 0)

    def acquire(self, peer: str) -> str | None:
        """Take a place for one call of ``peer``; the refusal reason when there is none."""
        limit = self.limit_for(peer)
        with self._lock:
            held = self._by_peer.get(peer, 0)
            if held >= limit:
                return (
                    f"{peer} already has {held} {self._what} in flight, the most this server "
                    f"allows one peer; retry when one has finished"
                )
            if self._total is not None and self._all >= self._total:
                return (
                    f"this server already has {self._all} {self._what} in flight, its limit; "
                    f"retry later"
                )
            self._by_peer[peer] = held + 1
            self._all += 1
            return None

    def release(self, peer: str) -> None:
        """Give back the place one call of ``peer`` held."""
        with self._lock:
            held = self._by_peer.get(peer, 0)
            if held <= 0:  # pragma: no cover - every release follows an acquire
                return
            if held == 1:
                del self._by_peer[peer]
            else:
                self._by_peer[peer] = held - 1
            self._all -= 1


@functools.lru_cache(maxsize=1024)
def _member_in(pem: bytes) -> str:
    return member_id_from_certificate(x509.load_pem_x509_certificate(pem))


def member_of_peer(context: PeerContext) -> str:
    """The member id named by the client certificate, for limits on mutual-TLS ports.

    The TLS handshake has already checked that the certificate chains to the
    federation CA; revocation is checked by
    :class:`credence.rpc.tls.AsyncRevocationInterceptor`. A peer whose certificate
    names no member is keyed by its address. (Member ids hold no colon, so a
    member and an address never share a key.)
    """
    try:
        return _member_in(peer_certificate_pem(context))
    except (CredenceError, ValueError):
        return address_of_peer(context)


def address_of_peer(context: PeerContext) -> str:
    """The peer's source address without its port (``ipv4:127.0.0.1``, ``ipv6:[::1]``)."""
    peer = context.peer() or "unknown"
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6") and ":" in rest:
        rest = rest.rsplit(":", 1)[0]
    return f"{kind}:{rest}" if rest else kind


@dataclass(frozen=True)
class _Held:
    limits: Sequence[ConcurrencyLimit]
    peer: str

    def release(self) -> None:
        for limit in self.limits:
            limit.release(self.peer)


class PeerLimitInterceptor(grpc.aio.ServerInterceptor):
    """Refuses, with RESOURCE_EXHAUSTED, a call beyond its peer's limits (``grpc.aio``).

    Every call counts against ``calls``; a call to a method in ``per_method``
    also counts against that method's limit (e.g. ``Health/Watch`` streams).
    The place is held until the call is done, cancelled or aborted.

    Args:
        peer_of: names the peer of a call (:func:`member_of_peer`,
            :func:`address_of_peer`).
        calls: the limit on all calls.
        per_method: further limits by full method name.
    """

    def __init__(
        self,
        peer_of: PeerKey,
        calls: ConcurrencyLimit,
        per_method: Mapping[str, ConcurrencyLimit] | None = None,
    ) -> None:
        self._peer_of = peer_of
        self._calls = calls
        self._per_method = dict(per_method or {})

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[_Req, _Resp] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[_Req, _Resp] | None:
        """Wrap the method's handler so that it takes its places first."""
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        limits = [self._calls]
        if (own := self._per_method.get(method)) is not None:
            limits.append(own)

        async def take(context: grpc.aio.ServicerContext[Any, Any]) -> None:
            peer = self._peer_of(context)
            taken: list[ConcurrencyLimit] = []
            for limit in limits:
                if (refusal := limit.acquire(peer)) is not None:
                    _Held(taken, peer).release()
                    _refusals.warn((peer, method), "refused call to %s: %s", method, refusal)
                    await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refusal)
                taken.append(limit)
            held = _Held(taken, peer)
            # The stubs type the callback as a class no function matches.
            context.add_done_callback(lambda _context: held.release())  # type: ignore[arg-type]

        return rebuild_handler(
            handler, lambda behaviour, streaming: checked_async(behaviour, streaming, take)
        )
