"""Everything a node checks before it answers, as pure functions.

The order is fixed and each step raises a :class:`~credence.errors.CredenceError`
naming what failed:

1. the envelope is signed by a current registry key from the manifest;
2. the query is fresh (issued, not expired, not living longer than allowed)
   and addressed to this node;
3. its id was never seen before (the caller's ``claim_id`` records it);
4. the grant verifies, is not revoked in the registry's signed revocation
   list, and covers this subject, requester, purpose and kinds;
5. the log promise is signed by the log key and commits to this very query;
6. the node's own policy allows the purpose and the requester.

Database and clock stay outside: the replay check is a callback and ``now``
is passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import NamedTuple

from google.protobuf.timestamp_pb2 import Timestamp

from agency_node.config import NodePolicy
from credence import payloads
from credence.encoding import format_time
from credence.envelope import Envelope, verify_message
from credence.errors import (
    ClaimMismatch,
    CredenceError,
    Expired,
    InvalidInput,
    NotYetValid,
    PermissionDenied,
    Replayed,
    WrongAudience,
)
from credence.grants import check
from credence.grants.cache import GrantCache
from credence.grants.check import Asked, RevocationCheck
from credence.manifest import TrustedManifest
from credence.subjects import REF_BYTES, SubjectRef, SubjectType
from credence.transparency import log_promise
from credence.v1 import agency_pb2, common_pb2

#: Records a query id as seen; raises :class:`~credence.errors.Replayed` if it was.
ClaimId = Callable[[str, datetime], None]


@dataclass(frozen=True, slots=True)
class CheckedQuery:
    """A query that passed every check, with what the node logs about it."""

    query_id: str
    subject: SubjectRef
    kinds: tuple[int, ...]
    purpose: int
    requester: str
    entry_commitment: bytes


class CheckedItem(NamedTuple):
    """A batch item that passed every check: what the node reads and logs for it.

    The rest (query id, requester, purpose, kinds) is the item's and its batch's.
    """

    subject_ref: bytes
    entry_commitment: bytes


def timestamp(value: object, what: str) -> datetime:
    """A set protobuf Timestamp as an aware UTC datetime.

    Raises:
        InvalidInput: the field is missing.
    """
    if not isinstance(value, Timestamp) or (value.seconds == 0 and value.nanos == 0):
        raise InvalidInput(f"{what} is missing")
    return value.ToDatetime(tzinfo=UTC)


@dataclass(frozen=True)
class QueryChecker:
    """The node's checks, bound to its identity, manifest and policy."""

    member_id: str
    manifest: TrustedManifest
    policy: NodePolicy
    grants: GrantCache
    #: None when the node has no registry to fetch a revocation list from.
    revocations: RevocationCheck | None = None

    @cached_property
    def grant_rules(self) -> check.GrantRules:
        """The shared grant check's rules, as this node's manifest states them."""
        return check.GrantRules.from_manifest(self.manifest)

    # -- steps 1-2 -------------------------------------------------------------

    def open_query(self, envelope: Envelope, now: datetime) -> agency_pb2.Query:
        """Steps 1 and 2: registry signature, parse, audience and freshness.

        Raises:
            VerificationError: not signed by a current registry key.
            InvalidInput: the payload does not parse or lacks a field.
            WrongAudience: the query is addressed to other agencies.
            Expired, NotYetValid: outside its validity window.
        """
        query = verify_message(
            envelope, payloads.QUERY, self.manifest.registry_keys, agency_pb2.Query
        )
        if not query.query_id:
            raise InvalidInput("query has no query_id")
        self.check_window(query.query_id, query.audience, query.issued_at, query.expires_at, now)
        return query

    def check_window(
        self,
        what: str,
        audience: Sequence[str],
        issued: object,
        expires: object,
        now: datetime,
    ) -> None:
        """Audience and validity window of a query or batch.

        Raises:
            WrongAudience: not addressed to this node.
            Expired, NotYetValid: outside its validity window.
            InvalidInput: a time is missing or the lifetime is too long.
        """
        # An answer is masked for its audience (credence.blind): a query names it, this node in it.
        if self.member_id not in audience:
            raise WrongAudience(
                f"{what} is addressed to {', '.join(audience) or 'no agency'}, not to this node"
            )
        issued_at = timestamp(issued, f"{what}: issued_at")
        expires_at = timestamp(expires, f"{what}: expires_at")
        if issued_at > now + payloads.CLOCK_SKEW:
            raise NotYetValid(
                f"{what} is issued at {format_time(issued_at)}, in the future "
                f"(now {format_time(now)})"
            )
        if now >= expires_at + payloads.CLOCK_SKEW:
            raise Expired(f"{what} expired at {format_time(expires_at)} (now {format_time(now)})")
        if expires_at - issued_at > payloads.MAX_QUERY_LIFETIME:
            raise InvalidInput(
                f"{what} lives {expires_at - issued_at}, longer than the "
                f"{payloads.MAX_QUERY_LIFETIME} allowed"
            )

    # -- steps 4-6, per subject -----------------------------------------------------

    def check_item(
        self,
        *,
        query_id: str,
        subject: common_pb2.SubjectRef,
        grant: agency_pb2.Grant,
        promise: common_pb2.LogPromise,
        kinds: Sequence[int],
        purpose: int,
        requester: str,
        issued_at: datetime,
        now: datetime,
    ) -> CheckedQuery:
        """Steps 4-6 for one subject: grant, log promise, local policy.

        The promise must already be verified as signed by the log key (the
        single path opens its envelope; a batch's signature covers it).

        Raises:
            CredenceError: the first check that fails, naming it.
        """
        subject_type = check.SUBJECT_TYPES.get(subject.type)
        if subject_type is None:
            raise InvalidInput(f"query {query_id}: subject type is unspecified")
        ref = SubjectRef(subject_type, bytes(subject.ref))
        if not kinds:
            raise InvalidInput(f"query {query_id}: no verdict kind asked")
        asked = Asked.of(requester, purpose, kinds)
        self.manifest.active_member(requester)
        grant_id = self._check_grant(grant, ref, asked, now)
        entry = log_promise.LogEntry(
            query_id=query_id,
            requester=requester,
            subject_type=subject.type,
            subject_ref=ref.ref,
            purpose=purpose,
            kinds=tuple(kinds),
            grant_id=grant_id,
            issued_at=issued_at,
        )
        log_promise.check_promise(promise, entry, log_id=self.manifest.registry.log_id, now=now)
        self._check_local_policy(asked)
        return CheckedQuery(
            query_id=query_id,
            subject=ref,
            kinds=tuple(kinds),
            purpose=purpose,
            requester=requester,
            entry_commitment=bytes(promise.entry_commitment),
        )

    def check_batch_items(
        self, batch: agency_pb2.BatchQuery, fresh: Collection[str], now: datetime
    ) -> list[CheckedItem | CredenceError]:
        """Steps 4-6 for every item of a verified batch, sharing what the items share.

        ``fresh`` holds the item ids the replay check let through; any other
        item is refused as replayed. A batch-wide failure (unknown purpose,
        suspended requester, the node's policy) refuses every item with the
        same reason, exactly as the single path would refuse each query.
        What the items share (requester, purpose, kinds) is the batch's.
        """
        issued_at = timestamp(batch.issued_at, f"batch {batch.batch_id}: issued_at")
        try:
            asked = self._shared_checks(batch.kinds, batch.purpose, batch.requester)
        except CredenceError as exc:
            return [exc for _ in batch.items]
        commit = log_promise.CommitmentEncoder.for_shared(
            requester=batch.requester, purpose=batch.purpose, kinds=batch.kinds, issued_at=issued_at
        ).commit
        check_promise = log_promise.PromiseRules.at(self.manifest.registry.log_id, now).check
        salt_bytes = log_promise.SALT_BYTES
        subject_types = check.SUBJECT_TYPES
        # The public-register basis depends only on the subject type and what the
        # batch asks: checked once per type, not once per item (screening's common case).
        public: dict[SubjectType, str | CredenceError] = {}
        results: list[CheckedItem | CredenceError] = []
        append = results.append
        for item in batch.items:
            query_id = item.query_id
            try:
                if query_id not in fresh:
                    raise Replayed(f"query {query_id} was already received")
                subject = item.subject
                subject_type = subject_types.get(subject.type)
                if subject_type is None:
                    raise InvalidInput(f"query {query_id}: subject type is unspecified")
                ref = subject.ref
                if len(ref) != REF_BYTES:
                    SubjectRef(subject_type, ref)  # raises, naming the length
                grant = item.grant
                if grant.WhichOneof("basis") == "public_register":
                    basis = public.get(subject_type)
                    if basis is None:
                        basis = public[subject_type] = self._public_basis(
                            grant, SubjectRef(subject_type, ref), asked, now
                        )
                    if not isinstance(basis, str):
                        append(basis)
                        continue
                    grant_id = basis
                else:
                    grant_id = self._check_grant(grant, SubjectRef(subject_type, ref), asked, now)
                promise = item.log_promise
                salt = promise.salt
                check_promise(
                    promise,
                    query_id,
                    commit(salt, query_id, subject.type, ref, grant_id)
                    if len(salt) == salt_bytes
                    else b"",
                )
                append(CheckedItem(ref, promise.entry_commitment))
            except CredenceError as exc:
                append(exc)
        return results

    def _shared_checks(self, kinds: Sequence[int], purpose: int, requester: str) -> Asked:
        if not kinds:
            raise InvalidInput("no verdict kind asked")
        asked = Asked.of(requester, purpose, kinds)
        self.manifest.active_member(requester)
        self._check_local_policy(asked)
        return asked

    def _check_local_policy(self, asked: Asked) -> None:
        if asked.purpose_name in self.policy.refused_purposes:
            raise PermissionDenied(f"this agency does not answer queries for {asked.purpose_name}")
        if asked.requester in self.policy.refused_requesters:
            raise PermissionDenied(f"this agency does not answer queries from {asked.requester!r}")

    def _public_basis(
        self, grant: agency_pb2.Grant, ref: SubjectRef, asked: Asked, now: datetime
    ) -> str | CredenceError:
        try:
            return self._check_grant(grant, ref, asked, now)
        except CredenceError as exc:
            return exc

    def _check_grant(
        self, grant: agency_pb2.Grant, ref: SubjectRef, asked: Asked, now: datetime
    ) -> str:
        return check.check_grant(
            grant,
            ref,
            asked,
            rules=self.grant_rules,
            cache=self.grants,
            now=now,
            revocations=self.revocations,
        ).grant_id


def open_single_promise(checker: QueryChecker, query: agency_pb2.Query) -> common_pb2.LogPromise:
    """Verify the single path's signed promise envelope (step 5's signature part).

    Raises:
        InvalidInput: the query carries no promise.
        VerificationError: the promise is not signed by the log key.
    """
    if not query.HasField("log_promise"):
        raise ClaimMismatch(f"query {query.query_id} carries no log promise")
    log_keys = checker.manifest.registry_keys
    return log_promise.open_promise(Envelope.from_proto(query.log_promise), log_keys)
