"""The node's audit from tiles: its promises against the latest cosigned checkpoint.

One pass reads the registry's latest checkpoint over HTTPS, checks the log's
signature and the manifest's witness quorum (k of n cosignatures), checks
that it extends the last checkpoint the node saw (the old root recomputed
from the new tree's tiles), then reads the entry bundles once each, every
one checked against the root (:class:`credence.transparency.tile_tree.TileTree`),
and looks up every promise the node has not yet seen included. Full tiles
come from the reader's caches after the first pass, so a pass costs the
right edge of the tree plus what is new.

A promise whose merge delay had passed when the registry signed the
checkpoint (bounded by the quorum's cosignatures, less a witnessing round),
and that is not in it, is evidence: an alarm, and the node's
log gate is told, so the node stops answering until the audit finds
everything again. Promises not yet due against this checkpoint stay
unchecked (the lag the audit reports).

The same read looks for this node's recovery leaves: for every query or
batch it answered within :data:`RECOVERY_WATCH`, the leaf by which the
registry would claim it missing (:func:`credence.blind.recovery_leaf.recovery_leaf`).
One in the log means the registry asked the other agencies for their masks
with this node, which answered: it could read this node's answer. That is a
:data:`CLAIMED_MISSING` alarm, with the leaf and its index as evidence.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import ColumnElement, bindparam, select, update
from sqlalchemy.orm import Session, sessionmaker

from agency_node.models import AnswerVectors, QueryLogEntry, SeenTreeHead
from agency_node.recovery import RECOVERY_MAX_AGE
from credence.blind.recovery_leaf import recovery_leaf
from credence.encoding import format_time
from credence.errors import InvalidInput, VerificationError
from credence.manifest import TrustedManifest
from credence.storage import reader
from credence.transparency.log_audit import MISSING_ENTRY
from credence.transparency.tile_reader import TileReader
from credence.transparency.tile_tree import TileTree
from credence.transparency.witness_policy import policy_from_manifest, verify_cosigned

if TYPE_CHECKING:
    from agency_node.audit import AuditReport

#: Problem kinds this pass adds, beside ``MISSING_ENTRY`` (a promise missing from the log).
BAD_CHECKPOINT = "bad_checkpoint"
BAD_TILE = "bad_tile"
INCONSISTENT_LOG = "inconsistent_log"
#: The registry logged a recovery naming this node missing for a query it answered.
CLAIMED_MISSING = "claimed_missing"
#: How far back the audit looks for recovery leaves naming this node: answers
#: given since. A node gives a share only within RECOVERY_MAX_AGE of its answer,
#: so a pass within this window of each answer (and the merge delay) finds any.
RECOVERY_WATCH = timedelta(days=1)
#: Rows read per statement (missing promises' details).
_UPDATE_CHUNK = 1_000
#: Rows marked verified per transaction.
_MARK_BATCH = 10_000
#: How long a witnessing round may take, from the registry signing a checkpoint to
#: the quorum's cosignatures: a checkpoint cosigned at T was signed after T minus this.
ROUND_ALLOWANCE = timedelta(seconds=60)


#: Problems that stop the node answering (through its log gate) until an audit clears them.
GATING = frozenset({MISSING_ENTRY, BAD_TILE, INCONSISTENT_LOG})


@dataclass(frozen=True)
class _Due:
    id: int
    query_id: str
    received_at: datetime


def run_tile_pass(
    *,
    sessions: sessionmaker[Session],
    tiles: TileReader,
    note: bytes,
    manifest: TrustedManifest,
    report: AuditReport,
    now: datetime,
    merge_delay: timedelta,
    everything: bool = False,
    progress: Callable[[int, int], None] | None = None,
    stop: threading.Event | None = None,
    member_id: str | None = None,
) -> bool:
    """One audit pass from tiles against the cosigned checkpoint ``note``; fills ``report``.

    ``note`` is the registry's latest quorum-cosigned checkpoint (empty when it
    has none yet: nothing can be checked). ``everything`` re-checks promises
    already verified too. With ``member_id`` (this node's), the pass also
    looks for recovery leaves naming this node missing for a query it
    answered since ``now - RECOVERY_WATCH``.

    Returns:
        Whether the pass got as far as checking the tree against the node's
        promises (a refused checkpoint or an empty ``note`` checks nothing).

    Raises:
        Unavailable: the registry's HTTP side could not be reached.
        NotFound: it does not serve a tile the check needs.
    """
    if not note:
        return False
    try:
        cosigned = verify_cosigned(note, policy_from_manifest(manifest), now=now)
    except (VerificationError, InvalidInput) as exc:
        report.problems.append((BAD_CHECKPOINT, "", f"the log's checkpoint is refused: {exc}"))
        return False
    checkpoint = cosigned.checkpoint
    report.tree_size = checkpoint.size
    tree = tiles.tree(checkpoint.size, checkpoint.root_hash)
    where = _due_where(everything=everything)
    # Ids and commitments only: the rest is read for the few promises not found.
    with reader(sessions()) as session:
        due = session.execute(
            select(QueryLogEntry.id, QueryLogEntry.entry_commitment)
            .where(*where)
            .order_by(QueryLogEntry.id)
        ).all()
    by_commitment: dict[bytes, list[int]] = {}
    for row_id, commitment in due:
        by_commitment.setdefault(bytes(commitment or b""), []).append(row_id)
    watched = {} if member_id is None else _watched_leaves(sessions, member_id, now)
    try:
        if not _extends_what_was_seen(sessions, tree, report):
            return True
        _remember(sessions, checkpoint.size, checkpoint.root_hash, note, now)
        if stop is not None and stop.is_set():
            return False
        found = tree.find(
            by_commitment.keys() | watched.keys(),
            progress=None if progress is None else lambda n: progress(n, len(due)),
        )
    except (VerificationError, InvalidInput) as exc:
        report.problems.append((BAD_TILE, "", f"the log's tiles are refused: {exc}"))
        return True
    for leaf, answered in watched.items():
        if leaf in found:
            report.problems.append(
                (CLAIMED_MISSING, answered,
                 f"the registry claimed this node ({member_id}) missing for {answered}, "
                 f"which it answered: its recovery leaf {leaf.hex()} is log entry "
                 f"{found[leaf]} of the cosigned checkpoint of {checkpoint.size} entries; "
                 "with the other agencies' recovery shares the registry can read this "
                 "node's answer")
            )  # fmt: skip
    verified = [row_id for commitment in found for row_id in by_commitment.get(commitment, ())]
    _mark(sessions, verified, now)
    report.checked += len(verified)
    missing = [row_id for commitment, ids in by_commitment.items() if commitment not in found
               for row_id in ids]  # fmt: skip
    if progress is not None:
        progress(len(due), len(due))
    # Promises due before the registry signed this checkpoint must be in it. Its
    # cosignatures bound when that was (a registry that keeps a withheld entry out
    # gets old trees cosigned afresh, and is caught the same way).
    signed_by = (cosigned.cosigned_at or now) - ROUND_ALLOWANCE
    for row in _rows(sessions, missing):
        if row.received_at + merge_delay <= signed_by:
            report.problems.append(
                (MISSING_ENTRY, row.query_id,
                 f"query {row.query_id} was promised at {format_time(row.received_at)} "
                 f"but is not in the log's cosigned checkpoint of {checkpoint.size} "
                 f"entries, past the merge delay of {int(merge_delay.total_seconds())} s")
            )  # fmt: skip
    return True


def _watched_leaves(
    sessions: sessionmaker[Session], member_id: str, now: datetime
) -> dict[bytes, str]:
    """This node's recovery leaf of each query or batch it answered since the watch began."""
    since = now - RECOVERY_WATCH - RECOVERY_MAX_AGE
    with reader(sessions()) as session:
        answered = session.scalars(
            select(AnswerVectors.query_id).where(AnswerVectors.answered_at >= since)
        ).all()
    return {recovery_leaf(query_id, member_id): query_id for query_id in answered}


def _due_where(*, everything: bool) -> tuple[ColumnElement[bool], ...]:
    where: tuple[ColumnElement[bool], ...] = (
        QueryLogEntry.outcome == "answered",
        QueryLogEntry.entry_commitment.is_not(None),
    )
    if not everything:
        where = (*where, QueryLogEntry.inclusion_checked_at.is_(None))
    return where


def _rows(sessions: sessionmaker[Session], ids: Sequence[int]) -> list[_Due]:
    found: list[_Due] = []
    for start in range(0, len(ids), _UPDATE_CHUNK):
        with reader(sessions()) as session:
            found.extend(
                _Due(*row)
                for row in session.execute(
                    select(QueryLogEntry.id, QueryLogEntry.query_id, QueryLogEntry.received_at)
                    .where(QueryLogEntry.id.in_(ids[start : start + _UPDATE_CHUNK]))
                    .order_by(QueryLogEntry.id)
                )
            )
    return found


def _mark(sessions: sessionmaker[Session], ids: Sequence[int], now: datetime) -> None:
    """Mark rows ``ids`` verified at ``now``: one statement executed per id, in batches."""
    # Core execution on the connection: an executemany, not the ORM's bulk update.
    statement = (
        update(QueryLogEntry)
        .where(QueryLogEntry.id == bindparam("row_id"))
        .values(inclusion_checked_at=now)
    )
    for start in range(0, len(ids), _MARK_BATCH):
        with sessions.begin() as session:
            session.connection().execute(
                statement, [{"row_id": row_id} for row_id in ids[start : start + _MARK_BATCH]]
            )


def _extends_what_was_seen(
    sessions: sessionmaker[Session], tree: TileTree, report: AuditReport
) -> bool:
    """Whether the new tree keeps the last checkpoint the node saw as its prefix."""
    with reader(sessions()) as session:
        previous = session.scalars(
            select(SeenTreeHead).order_by(SeenTreeHead.tree_size.desc()).limit(1)
        ).first()
    if previous is None:
        tree.check_root()
        return True
    if tree.size < previous.tree_size:
        report.problems.append(
            (INCONSISTENT_LOG, "",
             f"the log shrank from {previous.tree_size} to {tree.size} entries: it was rewritten")
        )  # fmt: skip
        return False
    old_root = tree.root_at(previous.tree_size)
    if old_root != previous.root:
        report.problems.append(
            (INCONSISTENT_LOG, "",
             f"the log's tree of {tree.size} entries does not extend the checkpoint of "
             f"{previous.tree_size} the node saw before: its first {previous.tree_size} "
             f"entries hash to {old_root.hex()}, not {bytes(previous.root).hex()} "
             "(a split view or a rewritten log)")
        )  # fmt: skip
        return False
    return True


def _remember(
    sessions: sessionmaker[Session], size: int, root: bytes, note: bytes, now: datetime
) -> None:
    with sessions.begin() as session:
        if session.get(SeenTreeHead, size) is None:
            session.add(SeenTreeHead(tree_size=size, root=root, envelope=note, seen_at=now))
