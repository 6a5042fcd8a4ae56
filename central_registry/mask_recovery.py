"""Dropout recovery: asking the answering agencies for their masks with the missing ones.

When agencies of a query's audience do not answer (or their answer cannot
be used), the masks the others applied with them do not cancel in the sum.
The registry signs one :class:`~credence.v1.agency_pb2.RecoveryRequest`
naming the missing and the answering members and sends it to every
answering node (``AgencyNodeService.RecoverMasks``) under a deadline of its
own; each returns a signed share (docs/protocol.md section 10). A share that
does not come, or fails a check, leaves the sum unreadable: the verdict is
then INCOMPLETE with the reason (a second, different missing set would be
refused by the nodes, and rightly: it would give away single pairs' masks).

Before the request leaves, the registry appends to its transparency log one
leaf per missing agency (:func:`credence.blind.recovery_leaf.recovery_leaf`,
rows from :func:`central_registry.log.rows.recovery_row`) and the request
carries them with the first one's index: signed by the log's key, it is the
log's promise of those leaves. A node refuses a request without exactly
them, and the agency named missing finds its leaf in the log when its audit
reads the entry bundles: a registry that claims a dropout for an agency that
answered is caught by that agency.

Every recovery is also logged by the registry's operational log (missing and
answering members, how many shares: no query, subject or value), carried by
the verdict (``Verdict.recoveries``: each share names its query, its missing
set and the hash of the request) and kept as a row of each asked node's
query log, whose audit flags a request that names it missing when it answered.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from central_registry.aggregation import Recovery
from central_registry.fanout import AgencyTarget, FanOut
from central_registry.log.rows import LogRow, recovery_row
from credence import payloads
from credence.blind.layout import VectorLayout, for_scorecard
from credence.blind.recovery_leaf import recovery_leaves
from credence.envelope import Envelope, sign, verify_message
from credence.errors import CredenceError
from credence.keys import SigningKey
from credence.manifest import TrustedManifest
from credence.v1 import agency_pb2

__all__ = ["layout_of", "recover", "recovery_request", "verify_share"]

_log = logging.getLogger(__name__)
# The layout of the latest manifest's scorecard: (manifest version, layout).
_layout: list[tuple[int, VectorLayout]] = []


def layout_of(manifest: TrustedManifest) -> VectorLayout:
    """The vector layout of ``manifest``'s scorecard, computed once per manifest version.

    Raises:
        InvalidInput: the scorecard's published layout is not the computed one.
    """
    if not _layout or _layout[0][0] != manifest.version:
        _layout[:] = [(manifest.version, for_scorecard(manifest.scorecard))]
    return _layout[0][1]


def recovery_request(
    *,
    query_id: str,
    missing: Sequence[str],
    answered: Sequence[str],
    log_promise_hash: bytes,
    log_index: int,
    layout_id: str,
    count: int,
    batch: bool,
    now: datetime,
    lifetime: timedelta,
    key: SigningKey,
) -> Envelope:
    """The registry-signed request for the masks shared with ``missing``.

    It promises the recovery leaves of ``missing``, logged from ``log_index`` on.
    """
    request = agency_pb2.RecoveryRequest(
        query_id=query_id,
        missing=sorted(missing),
        answered=sorted(answered),
        log_promise_hash=log_promise_hash,
        layout_id=layout_id,
        count=count,
        batch=batch,
        log_leaves=recovery_leaves(query_id, missing),
        log_index=log_index,
    )
    request.issued_at.FromDatetime(now)
    request.expires_at.FromDatetime(now + lifetime)
    return sign(payloads.RECOVERY_REQUEST, request.SerializeToString(), [key])


def verify_share(
    target: AgencyTarget,
    response: agency_pb2.RecoverMasksResponse,
    *,
    request: Envelope,
    query_id: str,
    missing: Sequence[str],
    count: int,
) -> list[int]:
    """The share in ``response``, checked to be ``target``'s answer to ``request``.

    Raises:
        CredenceError: the envelope is malformed or not signed by the agency
            (from :func:`credence.envelope.verify_message`).
        ValueError: the share is for another query, agency, request or
            missing set, or not ``count`` words long.
    """
    envelope = Envelope.from_proto(response.share)
    share = verify_message(envelope, payloads.RECOVERY_SHARE, target.keys, agency_pb2.RecoveryShare)
    if share.query_id != query_id or share.agency != target.member_id:
        raise ValueError(
            f"share is {share.agency!r}'s for {share.query_id!r}, "
            f"not {target.member_id!r}'s for {query_id!r}"
        )
    if share.request_hash != hashlib.sha256(request.payload).digest():
        raise ValueError("share's request_hash is not the SHA-256 of the request sent")
    if list(share.missing) != sorted(missing):
        raise ValueError(f"share covers missing {list(share.missing)}, not {sorted(missing)}")
    if len(share.share) != count:
        raise ValueError(f"share has {len(share.share)} words, not {count}")
    return list(share.share)


async def recover(
    fanout: FanOut,
    answering: Sequence[AgencyTarget],
    *,
    query_id: str,
    missing: Sequence[str],
    log_promise_hash: bytes,
    layout_id: str,
    count: int,
    batch: bool,
    now: datetime,
    lifetime: timedelta,
    key: SigningKey,
    registry_id: str,
    log: Callable[[Sequence[LogRow]], int],
) -> Recovery:
    """Ask every answering agency for its share; the shares, or why they fall short.

    ``log`` appends the recovery leaves to the transparency log and returns
    the first one's index (:meth:`central_registry.lookup_log.LookupLog.record_recovery`);
    it is committed before any node is asked. A log that refuses them (a
    leaf already logged: a second missing set for the query) asks no node.
    """
    rows = [
        recovery_row(query_id=query_id, missing_agency=agency, registry=registry_id, now=now)
        for agency in sorted(missing)
    ]
    try:
        log_index = await asyncio.to_thread(log, rows)
    except CredenceError as exc:
        return Recovery(
            shares={}, envelopes=[],
            failure=f"the recovery request could not be logged, so no node was asked ({exc})",
        )  # fmt: skip
    request = recovery_request(
        query_id=query_id,
        missing=missing,
        answered=[target.member_id for target in answering],
        log_promise_hash=log_promise_hash,
        log_index=log_index,
        layout_id=layout_id,
        count=count,
        batch=batch,
        now=now,
        lifetime=lifetime,
        key=key,
    )
    replies = await fanout.recover(answering, request)
    shares: dict[str, list[int]] = {}
    envelopes = []
    failures = []
    for target, reply in zip(answering, replies, strict=True):
        if isinstance(reply, str):
            failures.append(f"{target.member_id}: {reply}")
            continue
        try:
            shares[target.member_id] = verify_share(
                target, reply, request=request, query_id=query_id, missing=missing, count=count
            )
        except (CredenceError, ValueError) as exc:
            failures.append(f"{target.member_id}: {' '.join(str(exc).split())}")
            continue
        envelopes.append(reply.share)
    # Member ids and counts only: the log output names no query, subject or value.
    _log.info(
        "mask recovery for a %s: missing %s, answering %s, %d of %d shares",
        "batch" if batch else "lookup", ",".join(sorted(missing)),
        ",".join(sorted(t.member_id for t in answering)), len(shares), len(answering),
    )  # fmt: skip
    failure = ""
    if failures:
        failure = "an answering agency gave no recovery share (" + "; ".join(failures) + ")"
    return Recovery(shares=shares, envelopes=envelopes, failure=failure)
