"""Answering queries: checks, local evaluation, signed minimal answers, the local log.

This is the node's behaviour without gRPC: the servicer hands it envelopes and
sends back what it returns. Every query, answered or refused, leaves one row in
the node's query log; a refusal raises the domain error that says why, after
the row is written.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from agency_node import database
from agency_node.agreement import PairKeys
from agency_node.answer_vectors import pack_words
from agency_node.batch_store import BatchStore, LogValues
from agency_node.bloom_filter import BloomFilter
from agency_node.config import NodeConfig
from agency_node.evaluation import Evaluation, Evaluator, RecordFacts
from agency_node.manifest_holder import ManifestHolder
from agency_node.metrics import count_logged, count_query
from agency_node.models import Record
from agency_node.query_checks import CheckedItem, QueryChecker, open_single_promise, timestamp
from agency_node.single_store import SingleStore
from credence import names, payloads
from credence.blind.layout import VectorLayout, for_scorecard
from credence.blind.masks import signed_masks
from credence.clock import Clock
from credence.envelope import Envelope, open_message, sign
from credence.errors import CredenceError, InvalidInput, MessageTooLarge, Replayed
from credence.grants.cache import GrantCache
from credence.grants.check import RevocationCheck
from credence.keys import SigningKey
from credence.manifest import TrustedManifest
from credence.ops import tracing
from credence.rpc.status import reason_for, status_for
from credence.v1 import agency_pb2, common_pb2

_log = logging.getLogger(__name__)
#: Vector words are integers mod 2^64.
_WORD = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class _LogRow:
    query_id: str
    requester: str = ""
    purpose: str = ""
    kinds: str = ""
    subject_ref: bytes | None = None
    outcome: str = "refused"
    status_code: str = "OK"
    reason: str = ""
    entry_commitment: bytes | None = None
    log_promise: bytes | None = None
    answer_hash: bytes | None = None


class QueryLogRow(NamedTuple):
    """One query-log row as the batch store writes it: its columns, in their order."""

    query_id: str
    received_at: Any  # already in the driver's form (BatchStore.time)
    requester: str
    purpose: str
    kinds: str
    subject_ref: bytes | None
    outcome: str
    status_code: str
    reason: str
    entry_commitment: bytes | None
    log_promise: bytes | None
    answer_hash: bytes | None


def _kinds_text(kinds: Sequence[int]) -> str:
    return ",".join(names.kind_name(kind) for kind in kinds if kind in names.KIND_VALUES)


def _purpose_text(purpose: int) -> str:
    return names.purpose_name(purpose) if purpose in names.PURPOSE_VALUES else ""


class RecordReader:
    """Reads the records of many subjects at once, skipping those the filter rules out.

    The filter must hold every subject the database holds, so it is rebuilt
    whenever the record generation moves (every import bumps it). The rebuild
    reads every subject reference (about 2 s for 750k) and runs in a thread of
    its own: until it is done, lookups ask the database for every subject
    (correct, only slower), so an import never stalls the answers after it.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._store = SingleStore(engine)
        self._lock = threading.Lock()
        self._filter: BloomFilter | None = None
        self._generation: int | None = None
        self._rebuilding: threading.Thread | None = None

    def _generation_now(self) -> int:
        return self._store.record_generation()

    def _build(self, generation: int) -> None:
        # The generation is read before the scan: a record imported during the
        # scan either is in it or moves the generation again.
        with Session(self._engine) as session:
            count = session.scalar(select(func.count()).select_from(Record)) or 0
            built = BloomFilter.build(database.iter_all_subject_refs(session), max(count, 1))
        with self._lock:
            self._filter, self._generation = built, generation

    def _rebuild_in_background(self, generation: int) -> None:
        try:
            self._build(generation)
        except Exception:  # the next lookup starts another; until then, the database answers
            _log.exception("could not rebuild the Bloom filter")
        finally:
            with self._lock:
                self._rebuilding = None

    def warm(self) -> None:
        """Build the filter now, in the caller's thread (start-up, benchmarks)."""
        self._build(self._generation_now())

    def _current_filter(self) -> BloomFilter | None:
        """The filter if it matches the records; otherwise None, and a rebuild under way."""
        generation = self._generation_now()
        with self._lock:
            if self._filter is not None and generation == self._generation:
                return self._filter
            if self._rebuilding is None:
                self._rebuilding = threading.Thread(
                    target=self._rebuild_in_background,
                    args=(generation,),
                    name="bloom-filter",
                    daemon=True,
                )
                self._rebuilding.start()
            return None

    def records_for(self, refs: Collection[bytes]) -> dict[bytes, list[RecordFacts]]:
        """Every stored record of each subject in ``refs`` (absent: none held)."""
        membership = self._current_filter()
        unique = set(refs)
        wanted = (
            list(unique) if membership is None else [ref for ref in unique if ref in membership]
        )
        if not wanted:
            return {}
        return self._store.records_of_many(wanted)


class Answerer:
    """The node's answering logic, bound to its keys, manifest, database and clock."""

    def __init__(
        self,
        *,
        config: NodeConfig,
        manifests: ManifestHolder,
        signing_key: SigningKey,
        engine: Engine,
        clock: Clock,
        pair_keys: PairKeys,
        revocations: RevocationCheck | None = None,
    ) -> None:
        self._config = config
        self._pairs = pair_keys
        self._manifests = manifests
        self._revocations = revocations
        self._key = signing_key
        self._engine = engine
        self._sessions = database.session_factory(engine)
        self._clock = clock
        self._grants = GrantCache()
        self.records = RecordReader(engine)
        self._batches = BatchStore(engine)
        self._single = SingleStore(engine)
        self._adopt(manifests.current())

    def _adopt(self, manifest: TrustedManifest) -> None:
        """Bind the checks and the scorecard to ``manifest`` (a new version replaces all)."""
        scorecard = manifest.scorecard
        self._manifest = manifest
        self._checker = QueryChecker(
            member_id=self._config.member_id,
            manifest=manifest,
            policy=self._config.policy,
            grants=self._grants,
            revocations=self._revocations,
        )
        self._scorecard_version = scorecard.version
        self._evaluator = Evaluator(scorecard, self._config.record_kinds)
        self._layout: VectorLayout = for_scorecard(scorecard)

    def _refresh(self) -> None:
        if self._manifests.current() is not self._manifest:
            self._adopt(self._manifests.current())

    # -- the single path -------------------------------------------------------------

    def answer(self, message: common_pb2.Envelope) -> Envelope:
        """Check one signed query and return the signed answer.

        The replay claim and the log row (answered or refused) are one
        transaction: one commit per query.

        Raises:
            CredenceError: the query is refused; the refusal is logged first.
        """
        self._refresh()
        now = self._clock()
        row = _LogRow(query_id="")
        refusal: CredenceError | None = None
        with self._single.transaction() as transaction:
            try:
                envelope = self._open(message)
                query = self._checker.open_query(envelope, now)
                row = _LogRow(
                    query_id=query.query_id,
                    requester=query.requester,
                    purpose=_purpose_text(query.purpose),
                    kinds=_kinds_text(query.kinds),
                    subject_ref=bytes(query.subject.ref) or None,
                    log_promise=query.log_promise.SerializeToString() or None,
                )
                expires_at = timestamp(query.expires_at, "query expires_at")
                if not transaction.claim(query.query_id, expires_at):
                    raise Replayed(
                        f"query {query.query_id} was already received; send a new query id"
                    )
                checked = self._checker.check_item(
                    query_id=query.query_id,
                    subject=query.subject,
                    grant=query.grant,
                    promise=open_single_promise(self._checker, query),
                    kinds=query.kinds,
                    purpose=query.purpose,
                    requester=query.requester,
                    issued_at=timestamp(query.issued_at, "query issued_at"),
                    now=now,
                )
                with tracing.span("node.evaluate"):
                    records = transaction.records(checked.subject.ref)
                    evaluation = self._evaluator.evaluate(records, now)
                vector = self._vector(checked.kinds, evaluation)
                audience = list(query.audience)
                masks = self._masks(audience, checked.query_id, len(vector))
                answer = agency_pb2.Answer(
                    masked=[(v + m) & _WORD for v, m in zip(vector, masks, strict=True)],
                    layout_id=self._layout.layout_id,
                )
                answer.query_id = checked.query_id
                answer.agency = self._config.member_id
                answer.query_hash = hashlib.sha256(envelope.payload).digest()
                answer.answered_at.FromDatetime(now)
                payload = answer.SerializeToString()
                signed = sign(payloads.ANSWER, payload, [self._key])
                logged = _LogRow(
                    query_id=checked.query_id,
                    requester=checked.requester,
                    purpose=row.purpose,
                    kinds=row.kinds,
                    subject_ref=checked.subject.ref,
                    outcome="answered",
                    entry_commitment=checked.entry_commitment,
                    log_promise=row.log_promise,
                    answer_hash=hashlib.sha256(payload).digest(),
                )
                kept = self._kept(checked.query_id, audience, "", [vector], masks, now)
            except CredenceError as exc:
                refusal, logged = exc, _refused(row, exc)
            transaction.log(self._values(logged, now))
            if refusal is None:
                transaction.keep_vectors(kept)
        count_query(logged.outcome, logged.status_code)
        if refusal is not None:
            raise refusal
        return signed

    # -- the batch path -----------------------------------------------------------------

    def answer_batch(self, message: common_pb2.Envelope) -> Envelope:
        """Check a signed batch and answer every item under one signature.

        Item refusals travel inside the answer; only a batch-level failure
        (signature, freshness, replayed batch id) raises. The replay claims and
        the log rows of the whole batch are one transaction.

        Raises:
            CredenceError: the whole batch is refused; logged first.
        """
        self._refresh()
        now = self._clock()
        row = _LogRow(query_id="")
        try:
            envelope = self._open(message)
            batch = self._open_batch(envelope, now)
            row = _LogRow(
                query_id=batch.batch_id,
                requester=batch.requester,
                purpose=_purpose_text(batch.purpose),
                kinds=_kinds_text(batch.kinds),
            )
            expires_at = timestamp(batch.expires_at, "batch expires_at")
            with self._engine.begin() as connection:
                if not self._batches.claim(connection, [batch.batch_id], expires_at):
                    raise Replayed(f"batch {batch.batch_id} was already received")
                fresh = self._batches.claim(
                    connection, [item.query_id for item in batch.items], expires_at
                )
                reply, rows, kept = self._answer_items(envelope, batch, fresh, now)
                self._batches.log(connection, rows)
                self._batches.keep_vectors(connection, kept)
            count_logged(rows)
        except CredenceError as exc:
            self._log([_refused(row, exc)], now)
            raise
        return sign(payloads.BATCH_ANSWER, reply.SerializeToString(), [self._key])

    def _answer_items(
        self,
        envelope: Envelope,
        batch: agency_pb2.BatchQuery,
        fresh: set[str],
        now: datetime,
    ) -> tuple[agency_pb2.BatchAnswer, list[LogValues], tuple[Any, ...]]:
        checked = self._checker.check_batch_items(batch, fresh, now)
        found = self.records.records_for(
            [result.subject_ref for result in checked if isinstance(result, CheckedItem)]
        )
        reply = agency_pb2.BatchAnswer(
            batch_id=batch.batch_id,
            agency=self._config.member_id,
            batch_hash=hashlib.sha256(envelope.payload).digest(),
        )
        reply.answered_at.FromDatetime(now)
        # Most subjects hold no record: their vector is one template. One mask
        # stream per pair covers the batch: item k takes words k*L .. (k+1)*L - 1.
        template = self._vector(batch.kinds, self._evaluator.evaluate([], now))
        length = len(template)
        audience = list(batch.audience)
        masks = self._masks(audience, batch.batch_id, length * len(batch.items))
        layout_id = self._layout.layout_id
        # Kept for the operator and recovery: every item's vector in batch order
        # (a refused item's words are zeros, its masks never sent).
        zeros = [0] * length
        vectors: list[list[int]] = []
        keep = vectors.append
        stored_now = self._batches.time(now)
        requester, purpose = batch.requester, _purpose_text(batch.purpose)
        kinds = _kinds_text(batch.kinds)
        rows: list[LogValues] = []
        append = rows.append
        add = reply.items.add
        for index, (item, result) in enumerate(zip(batch.items, checked, strict=True)):
            entry = add(query_id=item.query_id)
            if isinstance(result, CredenceError):
                keep(zeros)
                code = status_for(result)
                entry.refusal.code = code.value[0]
                entry.refusal.reason = reason_for(result)
                subject_ref = bytes(item.subject.ref)
                append(
                    QueryLogRow(
                        query_id=item.query_id[:64],
                        received_at=stored_now,
                        requester=requester[:128],
                        purpose=purpose,
                        kinds=kinds,
                        subject_ref=subject_ref if len(subject_ref) == 32 else None,
                        outcome="refused",
                        status_code=code.name,
                        reason=entry.refusal.reason,
                        entry_commitment=None,
                        log_promise=None,
                        answer_hash=None,
                    )
                )
                continue
            subject_ref, commitment = result
            records = found.get(subject_ref)
            vector = (
                self._vector(batch.kinds, self._evaluator.evaluate(records, now))
                if records
                else template
            )
            keep(vector)
            offset = index * length
            answer = entry.answer
            answer.masked.extend(
                [
                    (v + m) & _WORD
                    for v, m in zip(vector, masks[offset : offset + length], strict=True)
                ]
            )
            answer.layout_id = layout_id
            # The hot path of screening: a plain tuple in QueryLogRow's field order
            # (keywords cost about 2 us a row here, a named tuple about 0.5 us).
            append(
                (item.query_id, stored_now, requester, purpose, kinds, subject_ref,
                 "answered", "OK", "", commitment, None, None)
            )  # fmt: skip
        item_ids = ",".join(item.query_id for item in batch.items)
        kept = self._kept(batch.batch_id, audience, item_ids, vectors, masks, now, batch=True)
        return reply, rows, kept

    # -- pieces ---------------------------------------------------------------------------

    def _open(self, message: common_pb2.Envelope) -> Envelope:
        # gRPC already bounds the message; this keeps the limit when called directly.
        if (size := message.ByteSize()) > self._config.max_message_bytes:
            raise MessageTooLarge(
                f"query envelope is {size} bytes, over this node's limit of "
                f"{self._config.max_message_bytes}"
            )
        return Envelope.from_proto(message)

    def _open_batch(self, envelope: Envelope, now: datetime) -> agency_pb2.BatchQuery:
        # A batch is signed with the log key: the one signature covers every promise.
        verified = open_message(
            envelope, payloads.BATCH_QUERY, self._manifest.registry_keys, agency_pb2.BatchQuery
        )
        if self._manifest.registry.log_id not in verified.kids:
            raise InvalidInput("batch is not signed by the registry's log key")
        batch = verified.message
        if not batch.batch_id:
            raise InvalidInput("batch has no batch_id")
        if len(batch.items) > payloads.MAX_BATCH_ITEMS:
            raise MessageTooLarge(
                f"batch has {len(batch.items)} items, over the {payloads.MAX_BATCH_ITEMS} allowed"
            )
        self._checker.check_window(
            f"batch {batch.batch_id}", batch.audience, batch.issued_at, batch.expires_at, now
        )
        return batch

    def _vector(self, kinds: Sequence[int], evaluation: Evaluation) -> list[int]:
        """The evaluation as the layout's vector; a kind not asked is zeros."""
        return self._layout.fill(
            evaluation.blacklist if common_pb2.VERDICT_KIND_BLACKLIST in kinds else None,
            evaluation.credit if common_pb2.VERDICT_KIND_CREDIT in kinds else None,
        )

    def _masks(self, audience: Sequence[str], label: str, words: int) -> list[int]:
        """This node's masks for ``label`` (a query or batch id), summed over the audience.

        Raises:
            FailedPrecondition: a pair key cannot be agreed (a key the manifest lacks).
        """
        pair_keys = self._pairs.for_audience(self._manifest, audience)
        return signed_masks(
            own_id=self._config.member_id,
            audience=audience,
            pair_keys=pair_keys,
            label=label,
            words=words,
        )

    def _kept(  # noqa: PLR0917 - one row's columns, in their order
        self,
        query_id: str,
        audience: Sequence[str],
        item_ids: str,
        vectors: Sequence[Sequence[int]],
        masks: Sequence[int],
        now: datetime,
        *,
        batch: bool = False,
    ) -> tuple[Any, ...]:
        """One ``answer_vectors`` row, in :data:`agency_node.batch_store.VECTOR_COLUMNS` order."""
        flat = [value & _WORD for vector in vectors for value in vector]
        return (
            query_id,
            batch,
            self._layout.layout_id,
            ",".join(audience),
            item_ids,
            pack_words(flat),
            pack_words(masks),
            self._batches.time(now),
        )

    def _values(self, row: _LogRow, now: datetime) -> QueryLogRow:
        return QueryLogRow(
            query_id=row.query_id[:64],
            received_at=self._batches.time(now),
            requester=row.requester[:128],
            purpose=row.purpose,
            kinds=row.kinds,
            subject_ref=row.subject_ref,
            outcome=row.outcome,
            status_code=row.status_code,
            reason=row.reason,
            entry_commitment=row.entry_commitment,
            log_promise=row.log_promise,
            answer_hash=row.answer_hash,
        )

    def _log(self, rows: Sequence[_LogRow], now: datetime) -> None:
        if rows:
            values = [self._values(row, now) for row in rows]
            with self._engine.begin() as connection:
                self._batches.log(connection, values)
            count_logged(values)


def _refused(row: _LogRow, error: CredenceError) -> _LogRow:
    return _LogRow(
        query_id=row.query_id,
        requester=row.requester,
        purpose=row.purpose,
        kinds=row.kinds,
        subject_ref=row.subject_ref if row.subject_ref and len(row.subject_ref) == 32 else None,
        outcome="refused",
        status_code=status_for(error).name,
        reason=reason_for(error),
        log_promise=row.log_promise,
    )
