"""Asking every agency node at once: the registry's grpc.aio fan-out.

One :class:`FanOut` holds one mutual-TLS channel per agency (per member id and
endpoint), opened on first use and reused by every later lookup, so the TLS
handshake is paid once per node, not once per call. A lookup calls all its
agencies in parallel under one deadline that covers the wait for a
concurrency slot as well as the call itself: a dead node fails fast with
UNAVAILABLE, a slow one costs at most the deadline, and neither holds up any
other lookup.

Calls are fail-fast, so a channel in gRPC's reconnect backoff (TRANSIENT_FAILURE,
after its node refused a connection) fails every call at once, even once its
node is up again, until its next attempt up to 5 s later. A call (or
:meth:`FanOut.channel`) that finds its node's channel so is given a fresh
channel instead, which dials at once: a node that has come up is answered by
the very next lookup, a dead one still refuses that dial at once. A node is
redialled so at most every :data:`REDIAL_SECONDS`, however busy the registry;
a call that finds a channel in backoff opened before the call began, too
recently to be replaced, waits for the rest of that time and redials rather
than report a refusal that may predate the node's start. A dead node so
costs a call at most :data:`REDIAL_SECONDS`, and every UNAVAILABLE a lookup
reports comes from a dial made during it.

Nothing a node sends counts until it is checked: the signature by one of that
agency's keys from the manifest, the payload type, and that the answer is to
this very query (id and payload hash) from this very agency. What fails a
check becomes INVALID_ANSWER with the reason, never an exception: one bad node
lowers coverage, it does not fail the lookup.

Requests are serialized once per lookup and sent as bytes to every node; the
only per-node CPU is the call itself and one signature verification.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final, NoReturn

import grpc
import grpc.aio
from google.protobuf.message import DecodeError

from central_registry.outcomes import AgencyOutcome
from credence import payloads
from credence.envelope import Envelope, verify_message
from credence.errors import CredenceError, InvalidInput
from credence.keys import KeySet
from credence.ops import tracing
from credence.rpc.tls import RECONNECT_OPTIONS, channel_credentials
from credence.v1 import agency_pb2, common_pb2

_SERVICE = agency_pb2.DESCRIPTOR.services_by_name["AgencyNodeService"].full_name
_ANSWER_QUERY = f"/{_SERVICE}/AnswerQuery"
_ANSWER_BATCH = f"/{_SERVICE}/AnswerBatch"
_RECOVER_MASKS = f"/{_SERVICE}/RecoverMasks"

_ANSWERED: Final = common_pb2.COVERAGE_STATE_ANSWERED
_TIMEOUT: Final = common_pb2.COVERAGE_STATE_TIMEOUT
_UNAVAILABLE: Final = common_pb2.COVERAGE_STATE_UNAVAILABLE
_REFUSED: Final = common_pb2.COVERAGE_STATE_REFUSED
_INVALID: Final = common_pb2.COVERAGE_STATE_INVALID_ANSWER

_CODE_NAMES: Final = {code.value[0]: code.name for code in grpc.StatusCode}

#: Told of every call to an agency: (agency id, seconds it took, "ok" | "timeout" |
#: "error" | "invalid"). No query, no subject: the console's figures and metrics.
Observe = Callable[[str, float, str], None]
_OBSERVED: Final[dict[int, str]] = {
    _ANSWERED: "ok",
    _TIMEOUT: "timeout",
    _UNAVAILABLE: "error",
    _REFUSED: "error",
    _INVALID: "invalid",
}

# Keepalive pings go out only while a call is in flight and has lasted 30 s
# (a long batch): nodes run gRPC's default ping policy, which answers pings
# on an idle connection with GOAWAY. A node that comes back after an outage
# is retried within 5 s, not after gRPC's default backoff of up to 2 minutes
# (and at once by a call that finds the channel in backoff, see REDIAL_SECONDS).
# Each channel has a subchannel of its own: in gRPC's process-wide pool a fresh
# channel would share, and wait out, the backoff of the one it replaces.
_CHANNEL_OPTIONS: Final = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.http2.max_pings_without_data", 0),
    *RECONNECT_OPTIONS,
    ("grpc.use_local_subchannel_pool", 1),
)

#: Seconds a node's channel lives at least before a call that finds it in
#: reconnect backoff replaces it with a fresh one: a dead node is dialled on
#: demand at most this often, and a node that has come up is answered by any
#: lookup that comes this long after the last dial it refused.
REDIAL_SECONDS: Final = 0.25


@dataclass(frozen=True)
class AgencyTarget:
    """An agency node to ask, as the manifest describes it.

    Attributes:
        member_id: the agency's member id; its answers must name it.
        endpoint: ``host:port`` of its node.
        keys: the agency's signing keys from the manifest.
    """

    member_id: str
    endpoint: str
    keys: KeySet


class _Stubs:
    """The channel to one node, when it was opened, and its methods, requests passed as bytes."""

    __slots__ = ("answer_batch", "answer_query", "channel", "opened", "recover_masks")

    def __init__(self, channel: grpc.aio.Channel, opened: float) -> None:
        self.channel = channel
        self.opened = opened
        self.answer_query: grpc.aio.UnaryUnaryMultiCallable[
            bytes, agency_pb2.AnswerQueryResponse
        ] = channel.unary_unary(
            _ANSWER_QUERY, response_deserializer=agency_pb2.AnswerQueryResponse.FromString
        )
        self.answer_batch: grpc.aio.StreamStreamMultiCallable[
            bytes, agency_pb2.AnswerBatchResponse
        ] = channel.stream_stream(
            _ANSWER_BATCH, response_deserializer=agency_pb2.AnswerBatchResponse.FromString
        )
        self.recover_masks: grpc.aio.UnaryUnaryMultiCallable[
            bytes, agency_pb2.RecoverMasksResponse
        ] = channel.unary_unary(
            _RECOVER_MASKS, response_deserializer=agency_pb2.RecoverMasksResponse.FromString
        )

    def failing(self) -> bool:
        """Whether the channel is in reconnect backoff (its last dial was refused)."""
        return (
            self.channel.get_state(try_to_connect=False)
            is grpc.ChannelConnectivity.TRANSIENT_FAILURE
        )

    def in_backoff(self, now: float) -> bool:
        """Whether the channel is in reconnect backoff and old enough to be replaced."""
        return now - self.opened >= REDIAL_SECONDS and self.failing()


class _Invalid(Exception):
    """An answer that fails a check; its message is the outcome's reason."""


class FanOut:
    """Parallel, deadline-bound calls to agency nodes over reused mTLS channels.

    Bound to the event loop it is first used on (grpc.aio channels are);
    create one per loop and :meth:`close` it on that loop.

    Args:
        key_pem: the registry's TLS private key (PEM, P-256).
        cert_pem: the registry's member certificate.
        ca_pem: the federation CA certificate, the only root nodes are trusted by.
        deadline: seconds a single lookup may take, slot wait included.
        batch_deadline: seconds a batch may take, slot wait included.
        max_concurrency: calls in flight at once, across all lookups.
        max_message_bytes: largest message sent or received.
        observe: told how each call to an agency went (:data:`Observe`).

    Raises:
        InvalidInput: the key or certificates are unusable (as
            :func:`credence.rpc.tls.channel_credentials`), or a bound is not positive.
    """

    def __init__(
        self,
        *,
        key_pem: bytes,
        cert_pem: bytes,
        ca_pem: bytes,
        deadline: float = 2.0,
        batch_deadline: float = 10.0,
        max_concurrency: int = 64,
        max_message_bytes: int = 16 * 1024 * 1024,
        observe: Observe | None = None,
    ) -> None:
        if deadline <= 0 or batch_deadline <= 0:
            raise InvalidInput(
                f"fan-out deadlines must be positive (deadline {deadline} s, "
                f"batch_deadline {batch_deadline} s)"
            )
        if max_concurrency < 1 or max_message_bytes < 1:
            raise InvalidInput(
                f"max_concurrency ({max_concurrency}) and max_message_bytes "
                f"({max_message_bytes}) must be at least 1"
            )
        self._credentials = channel_credentials(key_pem, cert_pem, ca_pem)
        self._options = (
            *_CHANNEL_OPTIONS,
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
        )
        self._deadline = float(deadline)
        self._batch_deadline = float(batch_deadline)
        self._slots = asyncio.Semaphore(max_concurrency)
        self._stubs: dict[tuple[str, str], _Stubs] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._observe = observe

    @property
    def open_channels(self) -> int:
        """How many node channels are open."""
        return len(self._stubs)

    def channel(self, target: AgencyTarget) -> grpc.aio.Channel:
        """The channel to ``target``'s node, opened on first use and then reused.

        A channel in reconnect backoff is replaced by a fresh one first, as for
        every call (see :data:`REDIAL_SECONDS`).
        """
        return self._stubs_for(target).channel

    def _stubs_for(self, target: AgencyTarget) -> _Stubs:
        key = (target.member_id, target.endpoint)
        stubs = self._stubs.get(key)
        now = time.monotonic()
        if stubs is None or stubs.in_backoff(now):
            if stubs is not None:
                self._close_later(stubs.channel)
            channel = grpc.aio.secure_channel(target.endpoint, self._credentials, self._options)
            stubs = self._stubs[key] = _Stubs(channel, now)
        return stubs

    async def _live_stubs(
        self, target: AgencyTarget, since: float, end: float
    ) -> tuple[_Stubs, float] | None:
        """The stubs to call ``target`` with, and the seconds left until ``end``.

        A channel in backoff that was opened before ``since`` (the call's start)
        and is too young to replace is waited out and replaced, so a refusal the
        call reports comes from a dial made after it began. None: no time left.
        """
        loop = asyncio.get_running_loop()
        while True:
            stubs = self._stubs_for(target)
            remaining = end - loop.time()
            if remaining <= 0:
                return None
            if stubs.opened >= since or not stubs.failing():
                return stubs, remaining
            wait = stubs.opened + REDIAL_SECONDS - time.monotonic()
            if wait >= remaining:
                return stubs, remaining
            await asyncio.sleep(max(wait, 0.0))

    def _close_later(self, channel: grpc.aio.Channel) -> None:
        """Close a replaced channel without holding up the call that replaced it."""
        task = asyncio.get_running_loop().create_task(channel.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def query(self, targets: Sequence[AgencyTarget], query: Envelope) -> list[AgencyOutcome]:
        """Ask every target the signed single-subject ``query``, in parallel.

        Returns within the deadline (plus the time to verify the answers),
        whatever the nodes do.

        Returns:
            One outcome per target, in the order of ``targets``.

        Raises:
            InvalidInput: ``query`` is not a query envelope (payload type, payload).
        """
        if query.payload_type != payloads.QUERY:
            raise InvalidInput(
                f"fan-out sends queries of payload type {payloads.QUERY!r}, "
                f"not {query.payload_type!r}"
            )
        parsed = agency_pb2.Query()
        try:
            parsed.ParseFromString(query.payload)
        except DecodeError as exc:
            raise InvalidInput(f"query payload is not a credence.v1.Query: {exc}") from exc
        request = agency_pb2.AnswerQueryRequest(query=query.to_proto()).SerializeToString()
        expected = _Expected(parsed.query_id, hashlib.sha256(query.payload).digest())
        end = asyncio.get_running_loop().time() + self._deadline
        return list(
            await asyncio.gather(*(self._ask(target, request, expected, end) for target in targets))
        )

    async def batch(
        self, targets: Sequence[AgencyTarget], batch: Envelope, item_ids: Sequence[str]
    ) -> dict[str, list[AgencyOutcome]]:
        """Send every target the signed ``batch``; each item's outcomes (see :meth:`batch_replies`).

        Returns:
            For each item's query id, one outcome per target in the order of
            ``targets``. An item answered carries the item's answer (whose
            ``query_id``, ``agency`` and ``answered_at`` are empty: the batch
            answer carries them once) and the hash of the batch answer payload.

        Raises:
            InvalidInput: as :meth:`batch_replies`.
        """
        replies = await self.batch_replies(targets, batch, item_ids)
        return {
            query_id: [reply.outcome(index) for reply in replies]
            for index, query_id in enumerate(item_ids)
        }

    async def batch_replies(
        self, targets: Sequence[AgencyTarget], batch: Envelope, item_ids: Sequence[str]
    ) -> list[BatchReply]:
        """Send every target the signed ``batch`` on one AnswerBatch stream each, in parallel.

        Args:
            targets: the agencies to ask.
            batch: the signed batch query.
            item_ids: the query ids of the batch's items, in the batch's order.

        Returns:
            One reply per target, in the order of ``targets``: its verified
            items (checked item for item against ``item_ids``), or the one
            outcome every item gets when the agency did not answer validly.

        Raises:
            InvalidInput: ``batch`` is not a signed batch query, or its items
                are not ``item_ids``.
        """
        if batch.payload_type != payloads.BATCH_QUERY:
            raise InvalidInput(
                f"fan-out sends batches of payload type {payloads.BATCH_QUERY!r}, "
                f"not {batch.payload_type!r}"
            )
        parsed = agency_pb2.BatchQuery()
        try:
            parsed.ParseFromString(batch.payload)
        except DecodeError as exc:
            raise InvalidInput(f"batch payload is not a credence.v1.BatchQuery: {exc}") from exc
        ids = tuple(item_ids)
        if tuple(item.query_id for item in parsed.items) != ids:
            raise InvalidInput(
                f"item_ids ({len(ids)}) are not the query ids of the batch's "
                f"{len(parsed.items)} items in order"
            )
        request = agency_pb2.AnswerBatchRequest(batch=batch.to_proto()).SerializeToString()
        expected = _Expected(parsed.batch_id, hashlib.sha256(batch.payload).digest())
        end = asyncio.get_running_loop().time() + self._batch_deadline
        return list(
            await asyncio.gather(
                *(self._ask_batch(target, request, expected, ids, end) for target in targets)
            )
        )

    async def recover(
        self, targets: Sequence[AgencyTarget], request: Envelope
    ) -> list[agency_pb2.RecoverMasksResponse | str]:
        """Send every target the signed recovery ``request``, in parallel, under the deadline.

        A recovery gets the single-lookup deadline of its own: the dropout it
        recovers from has spent the lookup's.

        Returns:
            Per target, in order: its response (not yet verified), or why there is none.
        """
        body = agency_pb2.RecoverMasksRequest(request=request.to_proto()).SerializeToString()
        end = asyncio.get_running_loop().time() + self._deadline
        return list(await asyncio.gather(*(self._recover(t, body, end) for t in targets)))

    async def _recover(
        self, target: AgencyTarget, body: bytes, end: float
    ) -> agency_pb2.RecoverMasksResponse | str:
        since = time.monotonic()
        if await self._slot(end) is None:
            return f"no recovery share within {self._deadline} s"
        try:
            live = await self._live_stubs(target, since, end)
            if live is None:
                return f"no recovery share within {self._deadline} s"
            stubs, remaining = live
            return await stubs.recover_masks(body, timeout=remaining)
        except grpc.aio.AioRpcError as error:
            if error.code() is grpc.StatusCode.DEADLINE_EXCEEDED:
                return f"no recovery share within {self._deadline} s"
            return self._failed(target, error, self._deadline).reason
        finally:
            self._slots.release()

    async def retain(self, targets: Iterable[AgencyTarget]) -> None:
        """Close the channels of every node not among ``targets`` (after a manifest change)."""
        keep = {(target.member_id, target.endpoint) for target in targets}
        for key in [key for key in self._stubs if key not in keep]:
            await self._stubs.pop(key).channel.close()

    async def close(self) -> None:
        """Close every channel; calls still in flight are cancelled."""
        stubs, self._stubs = list(self._stubs.values()), {}
        for entry in stubs:
            await entry.channel.close()
        await asyncio.gather(*self._closing)

    # -- one node ----------------------------------------------------------------------

    async def _slot(self, end: float) -> float | None:
        """Take a concurrency slot by ``end``; the seconds left, or None when none are."""
        loop = asyncio.get_running_loop()
        if self._slots.locked():
            try:
                async with asyncio.timeout_at(end):
                    await self._slots.acquire()
            except TimeoutError:
                return None
        else:
            await self._slots.acquire()
        remaining = end - loop.time()
        if remaining <= 0:
            self._slots.release()
            return None
        return remaining

    def _observed(self, target: AgencyTarget, started: float, state: int) -> None:
        if self._observe is not None:
            seconds = asyncio.get_running_loop().time() - started
            self._observe(target.member_id, seconds, _OBSERVED.get(state, "error"))

    async def _ask(
        self, target: AgencyTarget, request: bytes, expected: _Expected, end: float
    ) -> AgencyOutcome:
        started = asyncio.get_running_loop().time()
        with tracing.span("registry.agency_call", agency=target.member_id):
            outcome = await self._ask_once(target, request, expected, end)
        self._observed(target, started, outcome.state)
        return outcome

    async def _ask_once(
        self, target: AgencyTarget, request: bytes, expected: _Expected, end: float
    ) -> AgencyOutcome:
        since = time.monotonic()
        if await self._slot(end) is None:
            return self._timed_out(target, self._deadline)
        try:
            live = await self._live_stubs(target, since, end)
            if live is None:
                return self._timed_out(target, self._deadline)
            stubs, remaining = live
            response = await stubs.answer_query(
                request, timeout=remaining, metadata=tracing.outgoing_metadata()
            )
        except grpc.aio.AioRpcError as error:
            return self._failed(target, error, self._deadline)
        finally:
            self._slots.release()
        try:
            answer, answer_hash = _verify_answer(target, response, expected)
        except (CredenceError, _Invalid) as exc:
            return _invalid(target, exc)
        return AgencyOutcome(
            target.member_id,
            _ANSWERED,
            answer=answer,
            answer_hash=answer_hash,
            envelope=response.answer,
        )

    async def _ask_batch(
        self,
        target: AgencyTarget,
        request: bytes,
        expected: _Expected,
        item_ids: tuple[str, ...],
        end: float,
    ) -> BatchReply:
        started = asyncio.get_running_loop().time()
        with tracing.span("registry.agency_call", agency=target.member_id):
            reply = await self._ask_batch_once(target, request, expected, item_ids, end)
        self._observed(target, started, _ANSWERED if reply.failure is None else reply.failure.state)
        return reply

    async def _ask_batch_once(
        self,
        target: AgencyTarget,
        request: bytes,
        expected: _Expected,
        item_ids: tuple[str, ...],
        end: float,
    ) -> BatchReply:
        since = time.monotonic()
        if await self._slot(end) is None:
            return BatchReply(target, failure=self._timed_out(target, self._batch_deadline))
        try:
            live = await self._live_stubs(target, since, end)
            if live is None:
                return BatchReply(target, failure=self._timed_out(target, self._batch_deadline))
            stubs, remaining = live
            call = stubs.answer_batch(timeout=remaining, metadata=tracing.outgoing_metadata())
            await call.write(request)
            await call.done_writing()
            response = await call.read()
            # The stream's status follows the one reply at once; a node that
            # answered and then failed the stream has not answered.
            code = await call.code()
        except grpc.aio.AioRpcError as error:
            return BatchReply(target, failure=self._failed(target, error, self._batch_deadline))
        finally:
            self._slots.release()
        try:
            if code is not grpc.StatusCode.OK:
                _refuse(f"node ended the batch stream with {code.name} after answering")
            reply, answer_hash = _verify_batch_answer(target, response, expected, item_ids)
        except (CredenceError, _Invalid) as exc:
            return BatchReply(target, failure=_invalid(target, exc))
        return BatchReply(target, items=reply.items, answer_hash=answer_hash)

    def _timed_out(self, target: AgencyTarget, deadline: float) -> AgencyOutcome:
        return AgencyOutcome(target.member_id, _TIMEOUT, f"no answer within {deadline} s")

    def _failed(
        self, target: AgencyTarget, error: grpc.aio.AioRpcError, deadline: float
    ) -> AgencyOutcome:
        code = error.code()
        details = " ".join((error.details() or "").split())
        if code is grpc.StatusCode.DEADLINE_EXCEEDED:
            return self._timed_out(target, deadline)
        if code is grpc.StatusCode.UNAVAILABLE:
            return AgencyOutcome(target.member_id, _UNAVAILABLE, details or code.name)
        return AgencyOutcome(target.member_id, _REFUSED, f"{code.name}: {details}")


@dataclass(frozen=True, slots=True)
class BatchReply:
    """One agency's reply to a batch: its verified items, or why it has none.

    Attributes:
        target: the agency asked.
        items: the verified answer's items, in the batch's order (empty on failure).
        answer_hash: SHA-256 of the signed batch answer payload (empty on failure).
        failure: the outcome of every item when the agency did not answer
            validly (timeout, unavailable, refused, invalid answer); else None.
    """

    target: AgencyTarget
    items: Sequence[agency_pb2.BatchAnswerItem] = ()
    answer_hash: bytes = b""
    failure: AgencyOutcome | None = None

    def outcome(self, index: int) -> AgencyOutcome:
        """The outcome of the batch's item ``index`` from this agency."""
        if self.failure is not None:
            return self.failure
        return _item_outcome(self.target, self.items[index], self.answer_hash)


@dataclass(frozen=True, slots=True)
class _Expected:
    """What an answer must echo: the query's (or batch's) id and its payload hash."""

    id: str
    hash: bytes


def _check(got: str, want: str, field: str, of: str) -> None:
    if got != want:
        raise _Invalid(f"answer's {field} is {got!r}, not the {of}'s {want!r}")


def _invalid(target: AgencyTarget, exc: CredenceError | _Invalid) -> AgencyOutcome:
    return AgencyOutcome(target.member_id, _INVALID, " ".join(str(exc).split()))


def _item_outcome(
    target: AgencyTarget, item: agency_pb2.BatchAnswerItem, answer_hash: bytes
) -> AgencyOutcome:
    kind = item.WhichOneof("outcome")
    if kind == "answer":
        return AgencyOutcome(
            target.member_id, _ANSWERED, answer=item.answer, answer_hash=answer_hash
        )
    if kind == "refusal":
        code = _CODE_NAMES.get(item.refusal.code, f"CODE_{item.refusal.code}")
        return AgencyOutcome(target.member_id, _REFUSED, f"{code}: {item.refusal.reason}")
    return _invalid(
        target, _Invalid(f"batch answer item {item.query_id!r} has neither answer nor refusal")
    )


def _refuse(reason: str) -> NoReturn:
    raise _Invalid(reason)


def _verify_answer(
    target: AgencyTarget, response: agency_pb2.AnswerQueryResponse, expected: _Expected
) -> tuple[agency_pb2.Answer, bytes]:
    """The verified answer and the hash of its signed payload.

    Raises:
        CredenceError: the envelope is malformed or not signed by the agency.
        _Invalid: the answer is not this agency's answer to this query.
    """
    envelope = Envelope.from_proto(response.answer)
    answer = verify_message(envelope, payloads.ANSWER, target.keys, agency_pb2.Answer)
    _check(answer.query_id, expected.id, "query_id", "query")
    _check(answer.agency, target.member_id, "agency", "node")
    if answer.query_hash != expected.hash:
        _refuse("answer's query_hash is not the SHA-256 of the query sent")
    return answer, hashlib.sha256(envelope.payload).digest()


def _verify_batch_answer(
    target: AgencyTarget,
    response: object,
    expected: _Expected,
    item_ids: tuple[str, ...],
) -> tuple[agency_pb2.BatchAnswer, bytes]:
    """The verified batch answer, items checked against ``item_ids``, and its payload hash.

    Raises:
        CredenceError: the envelope is malformed or not signed by the agency.
        _Invalid: the answer is not this agency's answer to this batch, item for item.
    """
    if not isinstance(response, agency_pb2.AnswerBatchResponse):
        _refuse("node closed the batch stream without an answer")
    envelope = Envelope.from_proto(response.answers)
    reply = verify_message(envelope, payloads.BATCH_ANSWER, target.keys, agency_pb2.BatchAnswer)
    _check(reply.batch_id, expected.id, "batch_id", "batch")
    _check(reply.agency, target.member_id, "agency", "node")
    if reply.batch_hash != expected.hash:
        _refuse("batch answer's batch_hash is not the SHA-256 of the batch sent")
    if len(reply.items) != len(item_ids):
        _refuse(f"batch answer has {len(reply.items)} items for {len(item_ids)} queries")
    # An item out of place could pin one subject's answer on another: refuse them all.
    for index, (item, query_id) in enumerate(zip(reply.items, item_ids, strict=True)):
        if item.query_id != query_id:
            _refuse(f"batch answer item {index} is for query {item.query_id!r}, not {query_id!r}")
    return reply, hashlib.sha256(envelope.payload).digest()
