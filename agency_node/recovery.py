"""Answering the registry's mask recovery requests, and refusing the ones that would unmask.

When agencies of a query's audience do not answer, the registry asks each
answering agency, with a signed :class:`RecoveryRequest`, for the sum of
the masks it applied with the missing ones (:mod:`credence.blind.recovery`).
A share given for an agency that did answer would let the registry remove
that agency's masks and read its answer: the node refuses

* a query or batch it did not answer (it has no masks in the sum);
* a missing set that names this node, or that names an agency the request
  itself lists as answered, or one outside the query's audience;
* a request that does not list this node as answered;
* an answer older than :data:`RECOVERY_MAX_AGE` (a dropout is recovered
  while its query is answered; the audit looks for leaves naming this node
  for a bounded time after each answer);
* a second, different missing set for the same query (two shares with
  different sets would reveal the masks of single pairs);
* a request that does not promise, signed by the log's key, exactly the
  recovery leaves of its missing set
  (:func:`credence.blind.recovery_leaf.recovery_leaves`): the leaves by which
  each agency named missing finds the claim in the log.

Every request, given or refused, leaves a row in the node's query log
(purpose ``mask_recovery``, requester the registry); a refusal raises the
domain error that says why, after its row is written. A given share's rows
(one per missing agency) carry the promised leaves as their entry
commitments, so the node's log audit checks them like a query's promise:
each must be in the log by the merge delay.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from agency_node import database
from agency_node.agreement import PairKeys
from agency_node.answer_vectors import KeptAnswer, find_kept
from agency_node.manifest_holder import ManifestHolder
from agency_node.models import QueryLogEntry
from agency_node.query_checks import timestamp
from credence import payloads
from credence.blind.masks import signed_masks
from credence.blind.recovery_leaf import recovery_leaves
from credence.clock import Clock
from credence.encoding import format_time
from credence.envelope import Envelope, sign, verify_message
from credence.errors import (
    CredenceError,
    Expired,
    FailedPrecondition,
    InvalidInput,
    NotFound,
    NotYetValid,
    PermissionDenied,
)
from credence.keys import SigningKey
from credence.rpc.status import reason_for, status_for
from credence.v1 import agency_pb2, common_pb2

__all__ = ["RECOVERY_PURPOSE", "RecoveryDesk", "check_recovery"]

#: The query-log purpose of a recovery request's row.
RECOVERY_PURPOSE = "mask_recovery"
#: How long after its answer the node gives a recovery share for it.
RECOVERY_MAX_AGE = timedelta(minutes=10)


def check_recovery(
    request: agency_pb2.RecoveryRequest,
    kept: KeptAnswer | None,
    *,
    member_id: str,
    earlier_missing: Sequence[str] | None,
    now: datetime,
) -> tuple[str, ...]:
    """Check a verified recovery request against what this node answered; the missing set.

    Args:
        request: the registry's request, its signature already verified.
        kept: this node's kept answer for the request's query or batch id.
        member_id: this node's member id.
        earlier_missing: the missing set of a share given earlier for the
            same query, if any.
        now: the current time.

    Returns:
        The missing set, sorted.

    Raises:
        InvalidInput: a field is missing or does not fit the kept answer.
        Expired, NotYetValid: outside the request's window.
        NotFound: this node answered no such query or batch.
        FailedPrecondition: the answer is older than :data:`RECOVERY_MAX_AGE`.
        PermissionDenied: the missing set names an agency that answered
            (this node or one the request lists), differs from a share
            given before, or the request does not promise its recovery leaves.
    """
    what = f"recovery request for {request.query_id!r}"
    issued = timestamp(request.issued_at, f"{what}: issued_at")
    expires = timestamp(request.expires_at, f"{what}: expires_at")
    if issued > now + payloads.CLOCK_SKEW:
        raise NotYetValid(f"{what} is issued at {format_time(issued)}, in the future")
    if expires + payloads.CLOCK_SKEW < now:
        raise Expired(f"{what} expired at {format_time(expires)} (now {format_time(now)})")
    if kept is None or kept.batch != request.batch:
        raise NotFound(
            f"this node answered no {'batch' if request.batch else 'query'} "
            f"{request.query_id!r}: it has no masks in that sum"
        )
    if kept.answered_at + RECOVERY_MAX_AGE < now:
        raise FailedPrecondition(
            f"{what}: this node answered it at {format_time(kept.answered_at)}, more than "
            f"{int(RECOVERY_MAX_AGE.total_seconds())} s ago; shares are given only while the "
            "query is being answered"
        )
    missing = tuple(sorted(set(request.missing)))
    answered = set(request.answered)
    if not missing or len(missing) != len(request.missing):
        raise InvalidInput(f"{what} must name each missing agency once, and at least one")
    if member_id in missing:
        raise PermissionDenied(
            f"{what} names this node ({member_id}) missing, but it answered at "
            f"{format_time(kept.answered_at)}: no share is given for an answered agency"
        )
    if member_id not in answered:
        raise PermissionDenied(f"{what} does not list this node ({member_id}) as answered")
    if both := sorted(answered.intersection(missing)):
        raise PermissionDenied(f"{what} lists {', '.join(both)} as both answered and missing")
    if outside := sorted(set(missing) - set(kept.audience)):
        raise InvalidInput(f"{what} names {', '.join(outside)}, outside the query's audience")
    if request.layout_id != kept.layout_id or request.count != kept.words:
        raise InvalidInput(
            f"{what} asks for {request.count} words of layout {request.layout_id!r}; this node "
            f"answered {kept.words} words of layout {kept.layout_id!r}"
        )
    if list(request.log_leaves) != recovery_leaves(request.query_id, missing):
        raise PermissionDenied(
            f"{what} does not promise the log's recovery leaves of its missing set "
            f"({', '.join(missing)}): the registry must log them, and the request carry "
            "them, before any share is given"
        )
    if earlier_missing is not None and tuple(earlier_missing) != missing:
        raise PermissionDenied(
            f"this node already gave a share for {request.query_id!r} with missing set "
            f"{', '.join(earlier_missing)}; a second set ({', '.join(missing)}) would reveal "
            "single pairs' masks"
        )
    return missing


class RecoveryDesk:
    """Answers RecoverMasks: verifies, checks, computes and signs the share, logs the request."""

    def __init__(
        self,
        *,
        member_id: str,
        manifests: ManifestHolder,
        signing_key: SigningKey,
        pair_keys: PairKeys,
        engine: Engine,
        clock: Clock,
    ) -> None:
        self._member_id = member_id
        self._manifests = manifests
        self._key = signing_key
        self._pairs = pair_keys
        self._sessions = database.session_factory(engine)
        self._clock = clock

    def recover(self, message: common_pb2.Envelope) -> Envelope:
        """The signed share for one signed recovery request.

        Raises:
            CredenceError: the request is refused (see :func:`check_recovery`);
                its query-log row is written first.
        """
        now = self._clock()
        manifest = self._manifests.current()
        query_id, reason, share_hash = "", "", None
        leaves: list[bytes] = []
        refusal: CredenceError | None = None
        try:
            envelope = Envelope.from_proto(message)
            request = verify_message(
                envelope,
                payloads.RECOVERY_REQUEST,
                manifest.registry_keys,
                agency_pb2.RecoveryRequest,
            )
            query_id = request.query_id
            with self._sessions() as session:
                kept = find_kept(session, query_id)
                missing = check_recovery(
                    request,
                    kept,
                    member_id=self._member_id,
                    earlier_missing=_earlier_missing(session, query_id),
                    now=now,
                )
            assert kept is not None  # check_recovery refuses a query this node did not answer
            share = signed_masks(
                own_id=self._member_id,
                audience=kept.audience,
                pair_keys=self._pairs.for_audience(manifest, kept.audience),
                label=query_id,
                words=kept.words,
                peers=missing,
            )
            reply = agency_pb2.RecoveryShare(
                query_id=query_id,
                agency=self._member_id,
                share=share,
                request_hash=hashlib.sha256(envelope.payload).digest(),
                missing=missing,
            )
            reply.answered_at.FromDatetime(now)
            payload = reply.SerializeToString()
            signed = sign(payloads.RECOVERY_SHARE, payload, [self._key])
            reason, share_hash = _MISSING + ",".join(missing), hashlib.sha256(payload).digest()
            leaves = list(request.log_leaves)
        except CredenceError as exc:
            refusal = exc
        self._log(query_id, manifest.registry.member_id, refusal, reason, share_hash, now, leaves)
        if refusal is not None:
            raise refusal
        return signed

    def _log(  # noqa: PLR0917 - one log row's columns
        self,
        query_id: str,
        registry: str,
        refusal: CredenceError | None,
        reason: str,
        share_hash: bytes | None,
        now: datetime,
        leaves: Sequence[bytes],
    ) -> None:
        # A given share: one row per promised leaf (the first holds the share's hash),
        # which the log audit finds in the log; a refusal: one row, no leaf.
        with self._sessions.begin() as session:
            for number, leaf in enumerate(leaves or [None]):
                session.add(
                    QueryLogEntry(
                        query_id=query_id[:64],
                        received_at=now,
                        requester=registry,
                        purpose=RECOVERY_PURPOSE,
                        kinds="",
                        outcome="answered" if refusal is None else "refused",
                        status_code="OK" if refusal is None else status_for(refusal).name,
                        reason=reason if refusal is None else reason_for(refusal),
                        answer_hash=share_hash if number == 0 else None,
                        entry_commitment=leaf,
                    )
                )


#: How a given share's row names its missing set (``reason``), read back by the next request.
_MISSING = "missing: "


def _earlier_missing(session: Session, query_id: str) -> tuple[str, ...] | None:
    reason = session.scalar(
        select(QueryLogEntry.reason)
        .where(
            QueryLogEntry.query_id == query_id,
            QueryLogEntry.purpose == RECOVERY_PURPOSE,
            QueryLogEntry.outcome == "answered",
        )
        .order_by(QueryLogEntry.id)
        .limit(1)
    )
    if reason is None:
        return None
    return tuple(reason.removeprefix(_MISSING).split(","))
