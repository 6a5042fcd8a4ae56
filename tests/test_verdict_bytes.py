"""Screening's shared verdict template gives, byte for byte, what aggregation gives per row."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from central_registry.access import Allowed
from central_registry.aggregation import Recovery, aggregate
from central_registry.fanout import AgencyTarget, BatchReply
from central_registry.outcomes import AgencyOutcome
from central_registry.screening import _BatchSums, _Checked, _chunk_verdicts
from central_registry.verdict_bytes import VerdictTemplate, verdict_batch_bytes
from credence import queries
from credence.blind.layout import for_scorecard
from credence.blind.sums import MOD
from credence.grants.check import Asked
from credence.keys import KeySet, SigningKey
from credence.scorecard import Aggregator, default_scorecard
from credence.subjects import SubjectRef, SubjectType
from credence.v1 import agency_pb2, common_pb2, registry_pb2

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
BLACKLIST = common_pb2.VERDICT_KIND_BLACKLIST
CREDIT = common_pb2.VERDICT_KIND_CREDIT
PURPOSE = common_pb2.PURPOSE_COUNTERPARTY_VERIFICATION
AGENCIES = ("court", "tax-office", "fraud-desk")
LIFE = timedelta(days=1)
LAYOUT = for_scorecard(default_scorecard())


@dataclass
class _Ctx:
    """The one thing chunk verdicts ask of the lookup context."""

    def verdict_life(self, allowed: Allowed) -> timedelta:
        return allowed.data_life or LIFE


def _vector(
    blacklist: agency_pb2.BlacklistAssertion | None,
    credit: agency_pb2.CreditContribution | None = None,
) -> agency_pb2.BatchAnswerItem:
    """A batch item's answer vector, unmasked: the test's audience adds plain vectors."""
    vector = LAYOUT.fill(blacklist, credit)
    return agency_pb2.BatchAnswerItem(
        answer=agency_pb2.Answer(masked=[v % MOD for v in vector], layout_id=LAYOUT.layout_id)
    )


def _clear() -> agency_pb2.BatchAnswerItem:
    return _vector(agency_pb2.BlacklistAssertion(listed=False))


def _listed() -> agency_pb2.BatchAnswerItem:
    return _vector(agency_pb2.BlacklistAssertion(listed=True, categories=["fraud"]))


def _refused() -> agency_pb2.BatchAnswerItem:
    return agency_pb2.BatchAnswerItem(
        refusal=agency_pb2.ItemRefusal(code=7, reason="not for this requester")
    )


def _rows(count: int, *, grant_ids: dict[int, str] | None = None) -> list[_Checked]:
    grant = queries.public_register()
    ids = queries.new_query_ids(count)
    rows = []
    for index in range(count):
        subject = SubjectRef(SubjectType.ORGANISATION, hashlib.sha256(b"%d" % index).digest())
        grant_id = (grant_ids or {}).get(index, "")
        item = registry_pb2.ScreenItem(
            row_key=f"r{index}", subject=queries.subject_to_proto(subject), grant=grant
        )
        data_life = timedelta(hours=1) if grant_id else None
        allowed = Allowed(subject, grant_id, "consent", "basis", None, data_life=data_life)
        rows.append(
            _Checked(index, item, queries.Lookup(subject, grant, grant_id, ids[index]), allowed)
        )
    return rows


def _reply(name: str, items: list[agency_pb2.BatchAnswerItem]) -> BatchReply:
    target = AgencyTarget(name, "127.0.0.1:1", KeySet([SigningKey.generate().public]))
    return BatchReply(target, items=items, answer_hash=hashlib.sha256(name.encode()).digest())


def _zero_shares(replies: list[BatchReply], words: int) -> Recovery:
    return Recovery(shares={r.target.member_id: [0] * words for r in replies if r.failure is None})


def _expected(
    row: _Checked,
    replies: list[BatchReply],
    verdict_id: str,
    kinds: tuple[int, ...],
    recovery: Recovery | None = None,
) -> bytes:
    aggregator = Aggregator(default_scorecard())
    position = row.index
    return aggregate(
        verdict_id=verdict_id,
        query_id=row.lookup.query_id,
        subject=queries.subject_to_proto(row.lookup.subject),
        requester="company",
        purpose=PURPOSE,
        kinds=kinds,
        grant_id=row.allowed.grant_id,
        outcomes=[reply.outcome(position) for reply in replies],
        aggregator=aggregator,
        layout=LAYOUT,
        scorecard_version=aggregator.version,
        log_promise=None,
        issued_at=NOW,
        expires_at=NOW + _Ctx().verdict_life(row.allowed),
        contributors={kind: set(AGENCIES) for kind in kinds},
        recovery=recovery or _zero_shares(replies, LAYOUT.length),
    ).verdict.SerializeToString()


def _chunk(
    rows: list[_Checked], replies: list[BatchReply], kinds: tuple[int, ...] = (BLACKLIST,)
) -> list[bytes]:
    aggregator = Aggregator(default_scorecard())
    asked = Asked("company", PURPOSE, "counterparty_verification", kinds, ("blacklist",))
    sums = _BatchSums(replies, LAYOUT, len(rows))
    recovery = _zero_shares(replies, LAYOUT.length * len(rows)) if sums.missing else None
    return _chunk_verdicts(
        _Ctx(), asked, rows, replies, sums=sums, recovery=recovery,  # type: ignore[arg-type]
        aggregator=aggregator, layout=LAYOUT, version=aggregator.version,
        contributors={kind: set(AGENCIES) for kind in kinds}, now=NOW,
    )  # fmt: skip


def _check_every_row(
    rows: list[_Checked],
    replies: list[BatchReply],
    got: list[bytes],
    kinds: tuple[int, ...],
    recoveries: dict[int, Recovery] | None = None,
) -> list[registry_pb2.Verdict]:
    batch = registry_pb2.VerdictBatch.FromString(verdict_batch_bytes(got))
    assert len(batch.verdicts) == len(rows)
    for row, verdict, raw in zip(rows, batch.verdicts, got, strict=True):
        recovery = (recoveries or {}).get(row.index)
        assert raw == _expected(row, replies, verdict.verdict_id, kinds, recovery)
    assert len({verdict.verdict_id for verdict in batch.verdicts}) == len(rows)
    return list(batch.verdicts)


def test_mixed_chunk_matches_aggregation_row_for_row() -> None:
    rows = _rows(8, grant_ids={5: "grant-5", 6: "grant-6"})
    items = {name: [_clear() for _ in rows] for name in AGENCIES}
    items["court"][2] = _listed()  # one agency lists row 2
    items["fraud-desk"][3] = _refused()  # one agency refuses row 3
    replies = [_reply(name, items[name]) for name in AGENCIES]
    # Row 3's masks cannot be removed: the fraud desk answered the batch but not it.
    unreadable = Recovery(
        failure="agencies fraud-desk answered the batch but not this item with a usable "
        "vector: its masks cannot be removed without unmasking the others' answers"
    )
    verdicts = _check_every_row(rows, replies, _chunk(rows, replies), (BLACKLIST,), {3: unreadable})
    assert verdicts[3].incomplete_reason == unreadable.failure
    statuses = [verdict.blacklist.status for verdict in verdicts]
    assert statuses[2] == common_pb2.BLACKLIST_STATUS_LISTED
    assert statuses[3] == common_pb2.BLACKLIST_STATUS_INCOMPLETE
    assert statuses.count(common_pb2.BLACKLIST_STATUS_CLEAR) == 6
    # A grant with a shorter life keeps it: the template is per grant and lifetime.
    assert verdicts[5].expires_at.ToDatetime(tzinfo=UTC) == NOW + timedelta(hours=1)
    assert verdicts[0].expires_at.ToDatetime(tzinfo=UTC) == NOW + LIFE


def test_a_failed_agency_is_named_on_every_row() -> None:
    rows = _rows(4)
    replies = [_reply(name, [_clear() for _ in rows]) for name in AGENCIES[:2]]
    target = AgencyTarget(AGENCIES[2], "127.0.0.1:1", KeySet([SigningKey.generate().public]))
    timeout = AgencyOutcome(AGENCIES[2], common_pb2.COVERAGE_STATE_TIMEOUT, "no answer in 1 s")
    replies.append(BatchReply(target, failure=timeout))
    verdicts = _check_every_row(rows, replies, _chunk(rows, replies), (BLACKLIST,))
    assert {verdict.blacklist.status for verdict in verdicts} == {
        common_pb2.BLACKLIST_STATUS_INCOMPLETE
    }


def test_credit_rows_are_aggregated_each_on_their_own() -> None:
    rows = _rows(3)
    items = [
        _vector(
            agency_pb2.BlacklistAssertion(listed=False),
            agency_pb2.CreditContribution(
                scorecard_version=default_scorecard().version, partial_points=10 * index
            ),
        )
        for index in range(len(rows))
    ]
    replies = [_reply(name, list(items)) for name in AGENCIES]
    verdicts = _check_every_row(rows, replies, _chunk(rows, replies, (BLACKLIST, CREDIT)),
                                (BLACKLIST, CREDIT))  # fmt: skip
    assert len({verdict.credit.score for verdict in verdicts}) == len(rows)


def test_template_rows_are_the_bytes_protobuf_writes() -> None:
    rows = _rows(1)
    replies = [_reply(name, [_clear()]) for name in AGENCIES]
    full = registry_pb2.Verdict.FromString(_expected(rows[0], replies, "v-1", (BLACKLIST,)))
    template = VerdictTemplate(full)
    subject = rows[0].lookup.subject
    raw = template.row(
        "v-1", rows[0].lookup.query_id, queries.subject_type_value(subject), subject.ref
    )
    assert raw == full.SerializeToString()
    with pytest.raises(ValueError, match="names a subject"):
        VerdictTemplate(registry_pb2.Verdict(verdict_id="no subject"))


def test_batch_sums_read_every_answer_shape_alike() -> None:
    # Row 0 plain, row 1 an answer that also names its query (read field by field),
    # row 2 refused by the court, row 3 listed by the court.
    named = _clear()
    named.answer.query_id = "q-1"
    items = {name: [_clear(), _clear(), _clear(), _clear()] for name in AGENCIES}
    items["court"][1] = named
    items["court"][2] = _refused()
    items["court"][3] = _listed()
    sums = _BatchSums([_reply(name, items[name]) for name in AGENCIES], LAYOUT, 4)
    assert sums.complete == [True, True, False, True]
    assert sums.zero == [True, True, True, False]
    assert (sums.answering, sums.missing) == (list(AGENCIES), [])
