"""Screening: many subjects per message, one log transaction, one signature per batch.

Each message is checked as a whole (shape, rate, log quota, rights), then row
by row (subject, grant). Its rows are logged in one transaction with their
grant uses (a grant used up or revoked meanwhile refuses its row alone), sent
to the nodes in signed batches of ``node_batch_size``, and answered with one
signed verdict batch. A refusal writes bounded rows only: at most
:func:`~central_registry.limits.request_shape.refusal_row_budget` per message.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import struct
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass
from datetime import datetime

from central_registry.access import Allowed, check_asked, check_grant, subject_from_proto
from central_registry.aggregation import Recovery, aggregate, answer_problem
from central_registry.fanout import BatchReply
from central_registry.grants import GrantPolicy
from central_registry.limits import request_shape
from central_registry.log.rows import LogRow, dispatched_row, refused_row
from central_registry.lookup_context import LookupContext
from central_registry.mask_recovery import layout_of, recover
from central_registry.verdict_bytes import VerdictTemplate, varint, verdict_batch_bytes
from credence import payloads, queries
from credence.blind.layout import VectorLayout
from credence.envelope import sign
from credence.errors import CredenceError
from credence.grants.check import PUBLIC_REGISTER, Asked
from credence.ops import tracing
from credence.queries import Lookup
from credence.rpc.status import reason_for, status_for
from credence.scorecard import Aggregator
from credence.subjects import SubjectType
from credence.transparency import log_promise
from credence.v1 import agency_pb2, common_pb2, registry_pb2

__all__ = ["screen_message"]

_log = logging.getLogger(__name__)

_BLACKLIST = common_pb2.VERDICT_KIND_BLACKLIST
_ANSWERED_STATE = common_pb2.COVERAGE_STATE_ANSWERED
_WORD = (1 << 64) - 1
_PUBLIC = "public_register"  # the Grant oneof's case
_PUBLIC_KIND = PUBLIC_REGISTER.kind


@dataclass(frozen=True, slots=True)
class _Checked:
    """A row whose subject and grant passed: its place in the message and its lookup."""

    index: int
    item: registry_pb2.ScreenItem
    lookup: Lookup
    allowed: Allowed


def _refuse_message(
    ctx: LookupContext,
    requester: str,
    message: registry_pb2.ScreenBatchRequest,
    error: CredenceError,
    *,
    now: datetime,
    budget: int,
) -> None:
    """Log a message refused as a whole: its identifiable rows as refused, within budget."""
    rows: list[LogRow] = []
    for item in message.items:
        if len(rows) >= budget:
            _log.warning(
                "refused message of %d rows by %r: only %d logged (its budget)",
                len(message.items), requester, budget,
            )  # fmt: skip
            break
        row = refused_row(
            requester, item.subject, purpose=message.purpose,
            kinds=message.kinds, error=error, now=now,
        )  # fmt: skip
        if row is not None:
            rows.append(row)
    ctx.log.record_refusals(rows, requester, now)


async def screen_message(
    ctx: LookupContext, requester: str, message: registry_pb2.ScreenBatchRequest
) -> registry_pb2.ScreenBatchResponse:
    """Screen one message's rows: refusals per row, verdicts under one signature.

    Raises:
        CredenceError: the whole message is refused (its shape, rate limit, log quota,
            rights); its identifiable rows are logged as refused, within budget.
    """
    now = ctx.clock()
    # Refusal rows may cost the database twice what the message carried, no more.
    budget = request_shape.refusal_row_budget(message.ByteSize())
    try:
        request_shape.check_screen_message(message, ctx.config.max_screen_rows)
        await asyncio.to_thread(ctx.log.admit, requester, now, max(1, len(message.items)))
        policy = ctx.policy()
        asked = check_asked(policy, requester, message.purpose, tuple(message.kinds))
    except CredenceError as exc:
        await asyncio.to_thread(
            _refuse_message, ctx, requester, message, exc, now=now, budget=budget
        )
        raise
    with tracing.span("registry.grant_check", items=len(message.items)):
        checked, refused = _check_rows(ctx, policy, asked, message, now)
    rows = _dispatched_rows(requester, asked, checked, now)

    def refusal_rows(used_up: Mapping[int, CredenceError]) -> list[LogRow]:
        # Every refusal of the message in its order, grant uses included; the
        # rows beyond what the message paid to log are answered, not logged.
        for position, error in used_up.items():
            refused[checked[position].index] = (checked[position].item, error)
        logged: list[LogRow] = []
        for index in sorted(refused):
            if len(logged) >= budget:
                break
            item, error = refused[index]
            refusal = refused_row(
                requester, item.subject, purpose=asked.purpose, kinds=asked.kinds,
                error=error, now=now,
            )  # fmt: skip
            if refusal is not None:
                logged.append(refusal)
        return logged

    with tracing.span("registry.log_append", items=len(rows)):
        used_up = await asyncio.to_thread(
            ctx.log.record_screened, rows, requester, now, refusal_rows
        )
    accepted = [row for position, row in enumerate(checked) if position not in used_up]
    logged = [row for position, row in enumerate(rows) if position not in used_up]
    response = registry_pb2.ScreenBatchResponse()
    for index in sorted(refused):
        item, error = refused[index]
        response.results.add(
            row_key=item.row_key,
            refusal=agency_pb2.ItemRefusal(
                code=status_for(error).value[0], reason=reason_for(error)
            ),
        )
    if accepted:
        verdicts = await _screen_accepted(ctx, policy, asked, accepted, logged, now=now)
        add_result = response.results.add
        for verdict_index, row in enumerate(accepted):
            add_result(row_key=row.item.row_key, verdict_index=verdict_index)
        payload = verdict_batch_bytes(verdicts)
        response.verdicts.CopyFrom(
            sign(payloads.VERDICT_BATCH, payload, [ctx.keys.signing]).to_proto()
        )
    return response


def _check_rows(
    ctx: LookupContext,
    policy: GrantPolicy,
    asked: Asked,
    message: registry_pb2.ScreenBatchRequest,
    now: datetime,
) -> tuple[list[_Checked], dict[int, tuple[registry_pb2.ScreenItem, CredenceError]]]:
    """Each row's subject and grant: the rows that passed, and the refused ones by index."""
    checked: list[_Checked] = []
    refused: dict[int, tuple[registry_pb2.ScreenItem, CredenceError]] = {}
    # One draw of randomness per message, not one per row (each draw costs a syscall).
    query_ids = iter(queries.new_query_ids(len(message.items)))
    # The public-register basis depends on the subject's type and the message's
    # kinds and purpose alone: checked once per type that passes, not per row.
    public_ok: set[SubjectType] = set()
    for index, item in enumerate(message.items):
        grant = item.grant
        try:
            subject = subject_from_proto(item.subject)
            if subject.subject_type in public_ok and grant.WhichOneof("basis") == _PUBLIC:
                allowed = Allowed(subject, "", _PUBLIC_KIND, _PUBLIC_KIND, None)
            else:
                allowed = check_grant(policy, asked, subject, grant, cache=ctx.grants, now=now)
                if allowed.grant_kind == _PUBLIC_KIND:
                    public_ok.add(subject.subject_type)
        except CredenceError as exc:
            refused[index] = (item, exc)
            continue
        lookup = Lookup(
            subject=subject, grant=grant, grant_id=allowed.grant_id, query_id=next(query_ids)
        )
        checked.append(_Checked(index, item, lookup, allowed))
    return checked, refused


def _dispatched_rows(
    requester: str, asked: Asked, checked: Sequence[_Checked], now: datetime
) -> list[LogRow]:
    """The log rows of the checked rows, each under a fresh salt and its commitment."""
    encoder = log_promise.CommitmentEncoder.for_shared(
        requester=requester, purpose=asked.purpose, kinds=asked.kinds, issued_at=now
    )
    rows = []
    for row, salt in zip(checked, log_promise.new_salts(len(checked)), strict=True):
        lookup = row.lookup
        subject_type = queries.subject_type_value(lookup.subject)
        rows.append(
            dispatched_row(
                query_id=lookup.query_id,
                requester=requester,
                subject_type=subject_type,
                subject_ref=lookup.subject.ref,
                purpose=asked.purpose,
                kinds=asked.kinds,
                grant_id=lookup.grant_id,
                issued_at=now,
                salt=salt,
                commitment=encoder.commit(
                    salt, lookup.query_id, subject_type, lookup.subject.ref, lookup.grant_id
                ),
                basis=row.allowed.basis,
                embargo_until=row.allowed.embargo_until,
            )
        )
    return rows


def _shared_promise(ctx: LookupContext, now: datetime) -> common_pb2.LogPromise:
    """What every logged row's promise shares; the batch query adds each row's own part."""
    promise = common_pb2.LogPromise(log_id=ctx.keys.signing.kid)
    promise.promised_at.FromDatetime(now)
    promise.max_merge_delay.FromTimedelta(ctx.config.log_merge_delay)
    return promise


async def _screen_accepted(
    ctx: LookupContext,
    policy: GrantPolicy,
    asked: Asked,
    accepted: Sequence[_Checked],
    logged: Sequence[LogRow],
    *,
    now: datetime,
) -> list[bytes]:
    targets, contributors = ctx.views.targets_for(policy, asked.kinds)
    aggregator, version = ctx.views.scorecard(policy)
    layout = layout_of(policy.manifest)
    size = ctx.config.node_batch_size
    chunks = [
        (accepted[start : start + size], logged[start : start + size])
        for start in range(0, len(accepted), size)
    ]

    shared = _shared_promise(ctx, now)

    async def one_chunk(chunk: Sequence[_Checked], chunk_logged: Sequence[LogRow]) -> list[bytes]:
        envelope = queries.sign_promised_batch(
            [
                (row.lookup, log_row.commitment, log_row.salt)
                for row, log_row in zip(chunk, chunk_logged, strict=True)
            ],
            shared=shared,
            requester=asked.requester,
            purpose=asked.purpose,
            kinds=asked.kinds,
            audience=[target.member_id for target in targets],
            scorecard_version=version,
            now=now,
            registry_key=ctx.keys.signing,
            lifetime=ctx.config.query_lifetime,
        )
        replies = await ctx.fanout.batch_replies(
            targets, envelope, [row.lookup.query_id for row in chunk]
        )
        sums = _BatchSums(replies, layout, len(chunk))
        recovery = None
        if sums.answering and sums.missing:
            batch = agency_pb2.BatchQuery.FromString(envelope.payload)
            recovery = await recover(
                ctx.fanout,
                [reply.target for reply in replies if reply.failure is None],
                query_id=batch.batch_id,
                missing=sums.missing,
                log_promise_hash=b"",
                layout_id=layout.layout_id,
                count=layout.length * len(chunk),
                batch=True,
                now=ctx.clock(),
                lifetime=ctx.config.query_lifetime,
                key=ctx.keys.signing,
                registry_id=ctx.config.member_id,
                log=ctx.log.record_recovery,
            )
        with tracing.span("registry.aggregate", items=len(chunk)):
            return _chunk_verdicts(
                ctx, asked, chunk, replies, sums=sums, recovery=recovery, aggregator=aggregator,
                layout=layout, version=version, contributors=contributors, now=now,
            )  # fmt: skip

    results = await asyncio.gather(*(one_chunk(chunk, ps) for chunk, ps in chunks))
    return [verdict for chunk_verdicts in results for verdict in chunk_verdicts]


@functools.lru_cache(maxsize=8)
def _even_lanes(words: int) -> int:
    """All 64 bits set in each even-numbered 64-bit word of ``words`` words."""
    pairs = (words + 1) // 2
    return ((1 << (128 * pairs)) - 1) // ((1 << 128) - 1) * _WORD


class _BatchSums:
    """Which items of one node batch have masked answers that add up to zero, and can be read.

    The masked vectors of every agency that answered the batch are added as
    big integers (the even-numbered words and the odd ones apart, a 128-bit
    lane per word, so no carry crosses words): a few C-speed operations per
    agency instead of Python operations per word. Only the zero test of each
    item's sum is read here; an item aggregated on its own is added again.

    Attributes:
        answering: the agencies that answered the batch (some items may be refusals).
        missing: the agencies that did not answer the batch at all.
        complete: per item, whether every agency in ``answering`` answered it
            with a vector of the layout: only then can its masks be removed.
        zero: per item, whether those vectors sum to all zeros (masks with
            ``missing`` still in).
    """

    __slots__ = ("answering", "complete", "missing", "zero")

    def __init__(self, replies: Sequence[BatchReply], layout: VectorLayout, items: int) -> None:
        self.answering = [r.target.member_id for r in replies if r.failure is None]
        self.missing = [r.target.member_id for r in replies if r.failure is not None]
        length = layout.length
        size = 8 * length
        words = length * items
        lanes = _even_lanes(words) if words else 0
        # An item's answer holding exactly the masked words and the layout id
        # serializes to prefix + words + suffix: its words are read as bytes,
        # about a third of the CPU of reading them as Python integers.
        layout_id = layout.layout_id.encode()
        prefix = b"\x3a" + varint(size)
        suffix = b"\x42" + varint(len(layout_id)) + layout_id
        shape = len(prefix) + size + len(suffix)
        end = len(prefix) + size
        zero = bytes(size)
        even = odd = 0
        complete = [True] * items
        for reply in replies:
            if reply.failure is not None:
                continue
            parts: list[bytes] = []
            keep = parts.append
            for index, item in enumerate(reply.items):
                raw = item.answer.SerializeToString()
                if len(raw) == shape and raw.startswith(prefix) and raw.endswith(suffix):
                    keep(raw[len(prefix) : end])
                    continue
                answer = item.answer
                if answer_problem(answer, layout):
                    complete[index] = False
                    keep(zero)
                else:
                    keep(struct.pack(f"<{length}Q", *answer.masked))
            number = int.from_bytes(b"".join(parts), "little")
            even += number & lanes
            odd += (number >> 64) & lanes
        total = ((even & lanes) | ((odd & lanes) << 64)).to_bytes(8 * words, "little")
        self.zero = [total[start : start + size] == zero for start in range(0, 8 * words, size)]
        self.complete = complete


def _item_recovery(
    sums: _BatchSums,
    recovery: Recovery | None,
    position: int,
    length: int,
    replies: Sequence[BatchReply],
) -> Recovery | None:
    """The recovery of one item: its slice of each batch share, or why there is none."""
    if not sums.complete[position]:
        partial = [
            reply.target.member_id
            for reply in replies
            if reply.failure is None and reply.outcome(position).state == _ANSWERED_STATE
        ]
        if partial:
            refused = sorted(set(sums.answering) - set(partial))
            return Recovery(
                failure=(
                    f"agencies {', '.join(refused) or 'of the batch'} answered the batch but not "
                    "this item with a usable vector: its masks cannot be removed without "
                    "unmasking the others' answers"
                )
            )
        return None
    if recovery is None or recovery.failure:
        return recovery
    start = position * length
    return Recovery(
        shares={member: share[start : start + length] for member, share in recovery.shares.items()}
    )


def _chunk_verdicts(
    ctx: LookupContext,
    asked: Asked,
    chunk: Sequence[_Checked],
    replies: Sequence[BatchReply],
    *,
    sums: _BatchSums,
    recovery: Recovery | None,
    aggregator: Aggregator,
    layout: VectorLayout,
    version: str,
    contributors: Mapping[int, Set[str]],
    now: datetime,
) -> list[bytes]:
    """The serialized verdict of each row of one node batch, in the chunk's order.

    A blacklist-only row that every asked agency answered and whose sum is
    all zeros (nobody lists the subject) shares the verdict template of its
    grant and lifetime, built by :func:`aggregate` from the first such row;
    every other row is aggregated on its own. A screening verdict references
    the batch answers by their hashes (``answer_hashes``); it carries neither
    them nor the batch's recovery shares, which cover every item.
    """
    verdict_ids = queries.new_query_ids(len(chunk))
    shareable = asked.kinds == (_BLACKLIST,) and all(reply.failure is None for reply in replies)
    templates: dict[tuple[str, datetime], VerdictTemplate] = {}
    verdicts: list[bytes] = []
    length = layout.length
    for position, row in enumerate(chunk):
        lookup = row.lookup
        expires_at = now + ctx.verdict_life(row.allowed)
        shared = shareable and sums.complete[position] and sums.zero[position]
        key = (row.allowed.grant_id, expires_at)
        template = templates.get(key) if shared else None
        if template is not None:
            verdicts.append(
                template.row(
                    verdict_ids[position],
                    lookup.query_id,
                    queries.subject_type_value(lookup.subject),
                    lookup.subject.ref,
                )
            )
            continue
        verdict = aggregate(
            verdict_id=verdict_ids[position],
            query_id=lookup.query_id,
            subject=queries.subject_to_proto(lookup.subject),
            requester=asked.requester,
            purpose=asked.purpose,
            kinds=asked.kinds,
            grant_id=row.allowed.grant_id,
            outcomes=[reply.outcome(position) for reply in replies],
            aggregator=aggregator,
            layout=layout,
            scorecard_version=version,
            log_promise=None,
            issued_at=now,
            expires_at=expires_at,
            contributors=contributors,
            recovery=_item_recovery(sums, recovery, position, length, replies),
        ).verdict
        if shared:
            templates[key] = VerdictTemplate(verdict)
        verdicts.append(verdict.SerializeToString())
    return verdicts
