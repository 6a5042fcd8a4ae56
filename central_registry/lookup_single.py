"""One subject's lookup: check, log, query the nodes, aggregate, sign.

The requester's rights and grant are checked, then its rate, its grant use,
its log entry (refusals too) and its subject count are written in one
transaction (shared with the lookups waiting at that moment), a signed query
carrying the log promise fans out to every agency contributing to the asked kinds, and the
masked answers become a signed verdict read from their sum; when agencies are
missing, the answering ones are first asked for their recovery shares.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime

from central_registry.access import check_asked, check_grant, subject_from_proto
from central_registry.aggregation import Aggregated, aggregate, usable_members
from central_registry.limits import request_shape
from central_registry.log.rows import LogRow, entry_row, refused_row
from central_registry.lookup_context import LookupContext
from central_registry.mask_recovery import layout_of, recover
from central_registry.verdict_records import VerdictRow
from central_registry.verdict_writes import VerdictWrite
from credence import payloads, queries
from credence.envelope import Envelope, sign
from credence.errors import CredenceError
from credence.explanations import explain
from credence.manifest import TrustedManifest
from credence.ops import tracing
from credence.queries import Lookup
from credence.transparency import log_promise
from credence.v1 import common_pb2, manifest_pb2, registry_pb2
from credence.verdicts import sign_verdict, verdict_jws

__all__ = ["request_verdict"]

# The latest manifest's scorecard, parsed once per version: (manifest version, scorecard).
_scorecard: list[tuple[int, manifest_pb2.Scorecard]] = []


def _scorecard_of(manifest: TrustedManifest) -> manifest_pb2.Scorecard:
    if not _scorecard or _scorecard[0][0] != manifest.version:
        _scorecard[:] = [(manifest.version, manifest.scorecard)]
    return _scorecard[0][1]


def _explanation(
    ctx: LookupContext, manifest: TrustedManifest, aggregated: Aggregated, verdict: Envelope
) -> Envelope:
    """The registry-signed explanation of a credit verdict, from the sum it was read from."""
    explanation = explain(
        aggregated.verdict,
        verdict.payload,
        scorecard=_scorecard_of(manifest),
        layout=layout_of(manifest),
        summed=aggregated.summed,
        credit_answering=aggregated.credit_answering,
        credit_expected=aggregated.credit_expected,
        manifest_version=manifest.version,
        scorecard_url=ctx.scorecard_url,
    )
    payload = explanation.SerializeToString(deterministic=True)
    return sign(payloads.EXPLANATION, payload, [ctx.keys.signing])


def _refusal(
    requester: str, request: registry_pb2.RequestVerdictRequest, now: datetime
) -> Callable[[CredenceError], LogRow | None]:
    def row(error: CredenceError) -> LogRow | None:
        return refused_row(
            requester,
            request.subject,
            purpose=request.purpose,
            kinds=request.kinds,
            error=error,
            now=now,
        )

    return row


async def request_verdict(
    ctx: LookupContext, requester: str, request: registry_pb2.RequestVerdictRequest
) -> registry_pb2.RequestVerdictResponse:
    """Check, log, fan out, aggregate and sign one lookup.

    Raises:
        CredenceError: the lookup is refused; the refusal is logged first (within
            the log quota).
    """
    now = ctx.clock()
    refusal = _refusal(requester, request, now)
    admitted = False  # refused by its shape, a request spends no rate
    try:
        request_shape.check_verdict_request(request)
        admitted = True
        policy = ctx.policy()
        asked = check_asked(policy, requester, request.purpose, tuple(request.kinds))
        subject = subject_from_proto(request.subject)
        with tracing.span("registry.grant_check"):
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
    except CredenceError as exc:
        # Logged first; a rate refusal, if any, comes before the checks' refusal.
        await ctx.log.write_verdict(
            VerdictWrite(requester, now, refusal, error=exc, admitted=admitted)
        )
        raise
    # Rate, grant use, log entry and subject count in one transaction, committed
    # before the query leaves; a refusal raises here, logged.
    with tracing.span("registry.log_append"):
        await ctx.log.write_verdict(
            VerdictWrite(requester, now, refusal, row=row, grant_id=allowed.grant_id)
        )
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
    layout = layout_of(policy.manifest)
    answering, missing = usable_members(outcomes, layout)
    recovery = None
    if answering and missing:
        by_id = {target.member_id: target for target in targets}
        recovery = await recover(
            ctx.fanout,
            [by_id[member] for member in answering],
            query_id=lookup.query_id,
            missing=missing,
            log_promise_hash=hashlib.sha256(promise.payload).digest(),
            layout_id=layout.layout_id,
            count=layout.length,
            batch=False,
            now=ctx.clock(),
            lifetime=ctx.config.query_lifetime,
            key=ctx.keys.signing,
            registry_id=ctx.config.member_id,
            log=ctx.log.record_recovery,
        )
    expires_at = now + ctx.verdict_life(allowed)
    with tracing.span("registry.aggregate"):
        aggregated = aggregate(
            verdict_id=queries.new_query_id(),
            query_id=lookup.query_id,
            subject=queries.subject_to_proto(subject),
            requester=requester,
            purpose=asked.purpose,
            kinds=asked.kinds,
            grant_id=allowed.grant_id,
            outcomes=outcomes,
            aggregator=aggregator,
            layout=layout,
            scorecard_version=version,
            log_promise=promise.to_proto(),
            issued_at=now,
            expires_at=expires_at,
            contributors=contributors,
            recovery=recovery,
        )
    verdict = aggregated.verdict
    envelope = sign_verdict(verdict, ctx.keys.signing)
    explained = (
        _explanation(ctx, policy.manifest, aggregated, envelope).to_proto()
        if verdict.HasField("credit")
        else None
    )
    # Written before the response leaves: a verdict the subject cannot name in
    # a review, or whose explanation it cannot read, must not exist.
    await ctx.records.record(
        VerdictRow(
            verdict_id=verdict.verdict_id,
            query_id=verdict.query_id,
            subject_type=verdict.subject.type,
            subject_ref=verdict.subject.ref,
            requester=requester,
            answered=tuple(answering),
            issued_at=now,
            expires_at=expires_at,
            explanation=None
            if explained is None
            else explained.SerializeToString(deterministic=True),
        )
    )
    response = registry_pb2.RequestVerdictResponse(
        verdict=envelope.to_proto(),
        verdict_jws=verdict_jws(verdict, ctx.keys.signing, ctx.config.member_id),
    )
    if explained is not None and asked.purpose == common_pb2.PURPOSE_CREDIT_ASSESSMENT:
        response.explanation.CopyFrom(explained)
    return response
