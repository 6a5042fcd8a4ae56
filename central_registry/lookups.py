"""A lookup end to end at the registry: check, log, query the nodes, aggregate, sign.

:class:`Lookups` is what the gRPC servicer calls. For one subject
(:meth:`Lookups.request_verdict`): the requester's rights and grant are
checked, the lookup is logged (refusals too) and its grant use counted in one
transaction, a signed query carrying the log promise fans out to every agency
contributing to the asked kinds, and the answers become a signed verdict.
Screening (:meth:`Lookups.screen_message`) does the same for many subjects
with one log transaction, one signed batch per node batch and one signed
verdict batch per message.

A request's shape is checked (:mod:`central_registry.request_limits`) before
anything is written for it. Each request spends its requester's quota of log
rows per minute before anything else is written, and a refusal writes bounded
rows only: at most :func:`~central_registry.request_limits.refusal_row_budget`
per message, within the quota.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from central_registry import request_limits, store
from central_registry.access import Allowed, Asked, check_asked, check_grant, subject_from_proto
from central_registry.aggregation import aggregate
from central_registry.config import RegistryConfig
from central_registry.fanout import AgencyTarget, FanOut
from central_registry.grants import GrantPolicy
from central_registry.keyring import RegistryKeys
from central_registry.log_store import OUTCOME_DISPATCHED, OUTCOME_REFUSED, LogRow, append_entries
from central_registry.manifest_cache import ManifestCache
from central_registry.ratelimit import REFUSED_ROWS, TokenBucket, log_quota, log_quota_key
from credence import payloads, queries
from credence.clock import Clock
from credence.envelope import sign
from credence.errors import CredenceError, ResourceExhausted
from credence.grants.cache import GrantCache
from credence.queries import Lookup
from credence.rpc.status import reason_for, status_for
from credence.scorecard import Aggregator
from credence.storage import session_factory
from credence.transparency import log_promise
from credence.v1 import agency_pb2, common_pb2, registry_pb2
from credence.verdicts import sign_verdict, verdict_jws

_log = logging.getLogger(__name__)


@dataclass
class _Targets:
    """The agencies to ask for a set of kinds, cached per manifest version."""

    version: int = -1
    by_kinds: dict[tuple[int, ...], tuple[list[AgencyTarget], dict[int, set[str]]]] = field(
        default_factory=dict
    )


def _seconds_to_midnight(now: datetime) -> float:
    tomorrow = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (tomorrow - now).total_seconds()


class Lookups:
    """The registry's lookup logic over its keys, database, manifest and fan-out."""

    def __init__(
        self,
        *,
        config: RegistryConfig,
        keys: RegistryKeys,
        engine: Engine,
        manifests: ManifestCache,
        fanout: FanOut,
        clock: Clock,
    ) -> None:
        self._config = config
        self._keys = keys
        self._sessions = session_factory(engine)
        self._manifests = manifests
        self._fanout = fanout
        self._clock = clock
        self._grants = GrantCache()
        self._rate = TokenBucket(
            config.rate_limits.requests_per_second, float(config.rate_limits.burst)
        )
        self._row_quota = log_quota(config.rate_limits.log_rows_per_minute)
        self._refused_quota = log_quota(config.rate_limits.refused_rows_per_minute)
        self._targets = _Targets()
        self._aggregator: tuple[int, Aggregator, str] | None = None

    # -- shared pieces ---------------------------------------------------------------

    def _policy(self) -> GrantPolicy:
        return GrantPolicy(self._manifests.current(), self._config)

    def _scorecard(self, policy: GrantPolicy) -> tuple[Aggregator, str]:
        version = policy.manifest.version
        if self._aggregator is None or self._aggregator[0] != version:
            scorecard = policy.manifest.scorecard
            self._aggregator = (version, Aggregator(scorecard), scorecard.version)
        return self._aggregator[1], self._aggregator[2]

    def _targets_for(
        self, policy: GrantPolicy, kinds: tuple[int, ...]
    ) -> tuple[list[AgencyTarget], dict[int, set[str]]]:
        manifest = policy.manifest
        if self._targets.version != manifest.version:
            self._targets = _Targets(manifest.version)
        cached = self._targets.by_kinds.get(kinds)
        if cached is None:
            contributors = {
                kind: {member.member_id for member in manifest.contributors(kind)}  # type: ignore[arg-type]
                for kind in kinds
            }
            ids = sorted(set().union(*contributors.values()))
            targets = [
                AgencyTarget(
                    member_id=member_id,
                    endpoint=manifest.member(member_id).endpoint,
                    keys=manifest.member_keys(member_id),
                )
                for member_id in ids
            ]
            cached = self._targets.by_kinds[kinds] = (targets, contributors)
        return cached

    def _limit_rate(self, requester: str, now: datetime, rows: int) -> None:
        # In the database, so the limits hold across every registry process. The
        # rows' quota is spent before anything else is written for the request.
        with self._sessions.begin() as session:
            store.take_rate_tokens(session, requester, self._rate, now)
            self._take_row_quota(session, requester, rows, now)

    def _take_row_quota(self, session: Session, requester: str, rows: int, now: datetime) -> None:
        try:
            store.take_rate_tokens(
                session, log_quota_key(requester), self._row_quota, now, cost=float(rows)
            )
        except ResourceExhausted as exc:
            quota = self._config.rate_limits.log_rows_per_minute
            raise ResourceExhausted(
                f"{requester!r} reached its quota of {quota} logged lookups per minute "
                f"({rows} more asked): slow down or ask the registry operator to raise "
                f"log_rows_per_minute",
                retry_after=exc.retry_after,
            ) from None

    def _log_rows(
        self,
        rows: Sequence[LogRow],
        requester: str,
        now: datetime,
        subjects: Sequence[bytes],
        grant_ids: Sequence[str] = (),
    ) -> int:
        """Count grant uses, append log rows and count distinct subjects: one transaction."""
        with self._sessions.begin() as session:
            for grant_id in grant_ids:
                store.use_grant(session, grant_id, now)
            first = append_entries(session, rows)
            if subjects:
                day = now.strftime("%Y-%m-%d")
                used = store.note_subject_uses(session, requester, day, subjects)
                limit = self._config.rate_limits.distinct_subjects_per_day
                if used > limit:
                    raise ResourceExhausted(
                        f"{requester!r} looked up {used} distinct subjects today, over the "
                        f"limit of {limit}",
                        retry_after=_seconds_to_midnight(now),
                    )
            return first

    @staticmethod
    def _refusal_row(
        asked_requester: str,
        subject: common_pb2.SubjectRef,
        *,
        purpose: int,
        kinds: Sequence[int],
        error: CredenceError,
        now: datetime,
    ) -> LogRow | None:
        if len(subject.ref) != 32 or subject.type not in (1, 2):
            return None  # nothing identifiable to log
        # What was refused and why, never a copy of what the request carried.
        kinds = request_limits.refusal_kinds(kinds)
        salt = log_promise.new_salt()
        entry = log_promise.LogEntry(
            query_id=queries.new_query_id(),
            requester=asked_requester,
            subject_type=subject.type,
            subject_ref=bytes(subject.ref),
            purpose=purpose,
            kinds=tuple(kinds),
            grant_id="",
            issued_at=now,
            outcome=OUTCOME_REFUSED,
        )
        return LogRow(
            query_id=entry.query_id,
            requester=asked_requester,
            subject_type=subject.type,
            subject_ref=bytes(subject.ref),
            purpose=purpose,
            kinds=",".join(str(kind) for kind in kinds),
            grant_id="",
            basis="",
            outcome=OUTCOME_REFUSED,
            reason=request_limits.bounded_reason(f"{status_for(error).name}: {reason_for(error)}"),
            issued_at=now,
            salt=salt,
            commitment=log_promise.entry_commitment(salt, entry),
        )

    def _log_refusal(self, requester: str, request: registry_pb2.RequestVerdictRequest,
                     error: CredenceError, now: datetime) -> None:  # fmt: skip
        row = self._refusal_row(
            requester,
            request.subject,
            purpose=request.purpose,
            kinds=request.kinds,
            error=error,
            now=now,
        )
        if row is not None:
            self._append_refusals([row], requester, now, single=True)

    def _append_refusals(
        self, rows: Sequence[LogRow], requester: str, now: datetime, *, single: bool = False
    ) -> None:
        """Log refused rows within the requester's quotas, or warn that they went unlogged.

        A single refused lookup is logged whatever its size, so that its
        subject sees it; the refused-rows quota bounds what a flood of them adds.
        """
        if rows:
            try:
                with self._sessions.begin() as session:
                    self._take_row_quota(session, requester, len(rows), now)
                    if single:
                        store.take_rate_tokens(
                            session,
                            log_quota_key(requester, REFUSED_ROWS),
                            self._refused_quota,
                            now,
                            cost=float(len(rows)),
                        )
                    append_entries(session, rows)
            except CredenceError as exc:
                # A refusal cannot itself be refused: it goes unlogged, and says so once.
                _log.warning("%d refused lookups by %r not logged: %s", len(rows), requester, exc)

    def _use_grant(self, allowed: Allowed, now: datetime) -> None:
        if allowed.grant_id:
            with self._sessions.begin() as session:
                store.use_grant(session, allowed.grant_id, now)

    # -- one subject ----------------------------------------------------------------

    async def request_verdict(
        self, requester: str, request: registry_pb2.RequestVerdictRequest
    ) -> registry_pb2.RequestVerdictResponse:
        """Check, log, fan out, aggregate and sign one lookup.

        Raises:
            CredenceError: the lookup is refused; the refusal is logged first (within
                the log quota).
        """
        now = self._clock()
        try:
            request_limits.check_verdict_request(request)
            await asyncio.to_thread(self._limit_rate, requester, now, 1)
            policy = self._policy()
            asked = check_asked(policy, requester, request.purpose, tuple(request.kinds))
            subject = subject_from_proto(request.subject)
            allowed = check_grant(
                policy, asked, subject, request.grant, cache=self._grants, now=now
            )
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
            row = self._dispatch_row(entry, salt, allowed)
            # The grant's use and the log entry land together, or neither does.
            await asyncio.to_thread(
                self._log_rows,
                [row],
                requester,
                now,
                [subject.ref],
                [allowed.grant_id] if allowed.grant_id else [],
            )
        except CredenceError as exc:
            await asyncio.to_thread(self._log_refusal, requester, request, exc, now)
            raise
        promise = log_promise.sign_promise(
            log_promise.make_promise(
                entry,
                salt,
                log_id=self._keys.signing.kid,
                promised_at=now,
                max_merge_delay=self._config.log_merge_delay,
            ),
            self._keys.signing,
        )
        targets, contributors = self._targets_for(policy, asked.kinds)
        query = queries.sign_query(
            lookup,
            requester=requester,
            purpose=asked.purpose,
            kinds=asked.kinds,
            audience=[target.member_id for target in targets],
            scorecard_version=self._scorecard(policy)[1],
            now=now,
            promise=promise,
            registry_key=self._keys.signing,
            lifetime=self._config.query_lifetime,
        )
        outcomes = await self._fanout.query(targets, query)
        aggregator, version = self._scorecard(policy)
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
            expires_at=now + self._verdict_life(allowed),
            contributors=contributors,
        )
        envelope = sign_verdict(verdict, self._keys.signing)
        return registry_pb2.RequestVerdictResponse(
            verdict=envelope.to_proto(),
            verdict_jws=verdict_jws(verdict, self._keys.signing, self._config.member_id),
        )

    def _verdict_life(self, allowed: Allowed) -> timedelta:
        # A consent names how long the requester may keep the verdict.
        if allowed.data_life is not None:
            return min(allowed.data_life, self._config.verdict_lifetime)
        return self._config.verdict_lifetime

    @staticmethod
    def _dispatch_row(entry: log_promise.LogEntry, salt: bytes, allowed: Allowed) -> LogRow:
        return LogRow(
            query_id=entry.query_id,
            requester=entry.requester,
            subject_type=entry.subject_type,
            subject_ref=entry.subject_ref,
            purpose=entry.purpose,
            kinds=",".join(str(kind) for kind in entry.kinds),
            grant_id=entry.grant_id,
            basis=allowed.basis,
            outcome=OUTCOME_DISPATCHED,
            reason="",
            issued_at=entry.issued_at,
            salt=salt,
            commitment=log_promise.entry_commitment(salt, entry),
            embargo_until=allowed.embargo_until,
        )

    # -- screening ------------------------------------------------------------------

    def _refuse_message(
        self,
        requester: str,
        message: registry_pb2.ScreenBatchRequest,
        error: CredenceError,
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
            row = self._refusal_row(
                requester, item.subject, purpose=message.purpose,
                kinds=message.kinds, error=error, now=now,
            )  # fmt: skip
            if row is not None:
                rows.append(row)
        self._append_refusals(rows, requester, now)

    async def screen_message(
        self, requester: str, message: registry_pb2.ScreenBatchRequest
    ) -> registry_pb2.ScreenBatchResponse:
        """Screen one message's rows: refusals per row, verdicts under one signature.

        Raises:
            CredenceError: the whole message is refused (its shape, rate limit, log quota,
                rights); its identifiable rows are logged as refused, within budget.
        """
        now = self._clock()
        # Refusal rows may cost the database twice what the message carried, no more.
        budget = request_limits.refusal_row_budget(message.ByteSize())
        try:
            request_limits.check_screen_message(message, self._config.max_screen_rows)
            await asyncio.to_thread(self._limit_rate, requester, now, max(1, len(message.items)))
            policy = self._policy()
            asked = check_asked(policy, requester, message.purpose, tuple(message.kinds))
        except CredenceError as exc:
            await asyncio.to_thread(self._refuse_message, requester, message, exc, now, budget)
            raise
        accepted: list[tuple[registry_pb2.ScreenItem, Lookup, Allowed]] = []
        refused: list[tuple[str, CredenceError]] = []
        refusal_rows: list[LogRow] = []
        # One draw of randomness per message, not one per row (each draw costs a syscall).
        query_ids = iter(queries.new_query_ids(len(message.items)))
        for item in message.items:
            try:
                subject = subject_from_proto(item.subject)
                allowed = check_grant(
                    policy, asked, subject, item.grant, cache=self._grants, now=now
                )
                if allowed.grant_id:
                    await asyncio.to_thread(self._use_grant, allowed, now)
            except CredenceError as exc:
                refused.append((item.row_key, exc))
                if len(refusal_rows) >= budget:
                    continue  # answered as refused, beyond what the message paid to log
                row = self._refusal_row(
                    requester,
                    item.subject,
                    purpose=asked.purpose,
                    kinds=asked.kinds,
                    error=exc,
                    now=now,
                )
                if row is not None:
                    refusal_rows.append(row)
                continue
            lookup = Lookup(
                subject=subject,
                grant=item.grant,
                grant_id=allowed.grant_id,
                query_id=next(query_ids),
            )
            accepted.append((item, lookup, allowed))
        encoder = log_promise.CommitmentEncoder.for_shared(
            requester=requester, purpose=asked.purpose, kinds=asked.kinds, issued_at=now
        )
        promises: list[common_pb2.LogPromise] = []
        rows = list(refusal_rows)
        salts = log_promise.new_salts(len(accepted))
        promised_at = Timestamp()
        promised_at.FromDatetime(now)
        merge_delay = Duration()
        merge_delay.FromTimedelta(self._config.log_merge_delay)
        log_id = self._keys.signing.kid
        for (_, lookup, allowed), salt in zip(accepted, salts, strict=True):
            commitment = encoder.commit(
                salt, lookup.query_id, _subject_type(lookup), lookup.subject.ref, lookup.grant_id
            )
            promises.append(
                common_pb2.LogPromise(
                    log_id=log_id,
                    query_id=lookup.query_id,
                    entry_commitment=commitment,
                    salt=salt,
                    promised_at=promised_at,
                    max_merge_delay=merge_delay,
                )
            )
            rows.append(
                LogRow(
                    query_id=lookup.query_id,
                    requester=requester,
                    subject_type=_subject_type(lookup),
                    subject_ref=lookup.subject.ref,
                    purpose=asked.purpose,
                    kinds=",".join(str(kind) for kind in asked.kinds),
                    grant_id=lookup.grant_id,
                    basis=allowed.basis,
                    outcome=OUTCOME_DISPATCHED,
                    reason="",
                    issued_at=now,
                    salt=salt,
                    commitment=commitment,
                    embargo_until=allowed.embargo_until,
                )
            )
        await asyncio.to_thread(
            self._log_rows, rows, requester, now, [lookup.subject.ref for _, lookup, _ in accepted]
        )
        response = registry_pb2.ScreenBatchResponse()
        for row_key, error in refused:
            response.results.add(
                row_key=row_key,
                refusal=agency_pb2.ItemRefusal(
                    code=status_for(error).value[0], reason=reason_for(error)
                ),
            )
        if accepted:
            verdicts = await self._screen_accepted(policy, asked, accepted, promises, now)
            batch = registry_pb2.VerdictBatch(verdicts=verdicts)
            for index, (item, _, _) in enumerate(accepted):
                response.results.add(row_key=item.row_key, verdict_index=index)
            response.verdicts.CopyFrom(
                sign(
                    payloads.VERDICT_BATCH, batch.SerializeToString(), [self._keys.signing]
                ).to_proto()
            )
        return response

    async def _screen_accepted(
        self,
        policy: GrantPolicy,
        asked: Asked,
        accepted: Sequence[tuple[registry_pb2.ScreenItem, Lookup, Allowed]],
        promises: Sequence[common_pb2.LogPromise],
        now: datetime,
    ) -> list[registry_pb2.Verdict]:
        targets, contributors = self._targets_for(policy, asked.kinds)
        aggregator, version = self._scorecard(policy)
        size = self._config.node_batch_size
        chunks = [
            (accepted[start : start + size], promises[start : start + size])
            for start in range(0, len(accepted), size)
        ]

        async def one_chunk(
            chunk: Sequence[tuple[registry_pb2.ScreenItem, Lookup, Allowed]],
            chunk_promises: Sequence[common_pb2.LogPromise],
        ) -> list[registry_pb2.Verdict]:
            envelope = queries.sign_batch(
                [
                    (lookup, promise)
                    for (_, lookup, _), promise in zip(chunk, chunk_promises, strict=True)
                ],
                requester=asked.requester,
                purpose=asked.purpose,
                kinds=asked.kinds,
                audience=[target.member_id for target in targets],
                scorecard_version=version,
                now=now,
                registry_key=self._keys.signing,
                lifetime=self._config.query_lifetime,
            )
            outcomes = await self._fanout.batch(
                targets, envelope, [lookup.query_id for _, lookup, _ in chunk]
            )
            verdict_ids = iter(queries.new_query_ids(len(chunk)))
            return [
                aggregate(
                    verdict_id=next(verdict_ids),
                    query_id=lookup.query_id,
                    subject=queries.subject_to_proto(lookup.subject),
                    requester=asked.requester,
                    purpose=asked.purpose,
                    kinds=asked.kinds,
                    grant_id=allowed.grant_id,
                    outcomes=outcomes[lookup.query_id],
                    aggregator=aggregator,
                    scorecard_version=version,
                    log_promise=None,
                    issued_at=now,
                    expires_at=now + self._verdict_life(allowed),
                    contributors=contributors,
                )
                for _, lookup, allowed in chunk
            ]

        results = await asyncio.gather(*(one_chunk(chunk, ps) for chunk, ps in chunks))
        return [verdict for chunk_verdicts in results for verdict in chunk_verdicts]


def _subject_type(lookup: Lookup) -> int:
    return queries.subject_to_proto(lookup.subject).type
