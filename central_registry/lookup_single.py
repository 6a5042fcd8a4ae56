"""One subject's lookup: check, log, query the nodes, aggregate, sign.

The requester's rights and grant are checked, the lookup is logged (refusals
too) and its grant use counted in one transaction, a signed query carrying the
log promise fans out to every agency contributing to the asked kinds, and the
answers become a signed verdict.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from central_registry.access import check_asked, check_grant, subject_from_proto
from central_registry.aggregation import aggregate
from central_registry.limits import request_shape
from central_registry.log.rows import entry_row, refused_row
from central_registry.lookup_context import LookupContext
from credence import queries
from credence.errors import CredenceError
from credence.queries import Lookup
from credence.transparency import log_promise
from credence.v1 import registry_pb2
from credence.verdicts import sign_verdict, verdict_jws

__all__ = ["request_verdict"]


def _log_refusal(
    ctx: LookupContext,
    requester: str,
    request: registry_pb2.RequestVerdictRequest,
    error: CredenceError,
    now: datetime,
) -> None:
    row = refused_row(
        requester,
        request.subject,
        purpose=request.purpose,
        kinds=request.kinds,
        error=error,
        now=now,
    )
    if row is not None:
        ctx.log.record_refusals([row], requester, now, single=True)


async def request_verdict(
    ctx: LookupContext, requester: str, request: registry_pb2.RequestVerdictRequest
) -> registry_pb2.RequestVerdictResponse:
    """Check, log, fan out, aggregate and sign one lookup.

    Raises:
        CredenceError: the lookup is refused; the refusal is logged first (within
            the log quota).
    """
    now = ctx.clock()
    try:
        request_shape.check_verdict_request(request)
        await asyncio.to_thread(ctx.log.admit, requester, now, 1)
        policy = ctx.policy()
        asked = check_asked(policy, requester, request.purpose, tuple(request.kinds))
        subject = subject_from_proto(request.subject)
        allowed = check_grant(policy, asked, subject, request.grant, cache=ctx.grants, now=now)
        lookup = Lookup(
            subject=subject,
            grant=request.grant,
            grant_id=allowed.grant_id,
            query_id=queries.new_query_id(),
        )
        entry = lookup.log_entry(
            requester=requester, purpose=asked.purpose, kinds=asked.kinds, issued_at=now
        )
        salt = log_promise.new_salt()
        row = entry_row(entry, salt, basis=allowed.basis, embargo_until=allowed.embargo_until)
        # The grant's use and the log entry land together, or neither does.
        await asyncio.to_thread(
            ctx.log.record,
            [row],
            requester,
            now,
            [subject.ref],
            [allowed.grant_id] if allowed.grant_id else [],
        )
    except CredenceError as exc:
        await asyncio.to_thread(_log_refusal, ctx, requester, request, exc, now)
        raise
    promise = log_promise.sign_promise(
        log_promise.make_promise(
            entry,
            salt,
            log_id=ctx.keys.signing.kid,
            promised_at=now,
            max_merge_delay=ctx.config.log_merge_delay,
        ),
        ctx.keys.signing,
    )
    targets, contributors = ctx.views.targets_for(policy, asked.kinds)
    aggregator, version = ctx.views.scorecard(policy)
    query = queries.sign_query(
        lookup,
        requester=requester,
        purpose=asked.purpose,
        kinds=asked.kinds,
        audience=[target.member_id for target in targets],
        scorecard_version=version,
        now=now,
        promise=promise,
        registry_key=ctx.keys.signing,
        lifetime=ctx.config.query_lifetime,
    )
    outcomes = await ctx.fanout.query(targets, query)
    verdict = aggregate(
        verdict_id=queries.new_query_id(),
        query_id=lookup.query_id,
        subject=queries.subject_to_proto(subject),
        requester=requester,
        purpose=asked.purpose,
        kinds=asked.kinds,
        grant_id=allowed.grant_id,
        outcomes=outcomes,
        aggregator=aggregator,
        scorecard_version=version,
        log_promise=promise.to_proto(),
        issued_at=now,
        expires_at=now + ctx.verdict_life(allowed),
        contributors=contributors,
    )
    envelope = sign_verdict(verdict, ctx.keys.signing)
    return registry_pb2.RequestVerdictResponse(
        verdict=envelope.to_proto(),
        verdict_jws=verdict_jws(verdict, ctx.keys.signing, ctx.config.member_id),
    )
