"""A batch signed from logged rows carries, item for item, the promises sign_batch would."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

from credence import payloads, queries
from credence.envelope import verify_message
from credence.keys import KeySet, SigningKey
from credence.subjects import SubjectRef, SubjectType
from credence.v1 import agency_pb2, common_pb2

NOW = datetime(2026, 12, 1, 12, 0, 0, 123456, tzinfo=UTC)
KINDS = (common_pb2.VERDICT_KIND_BLACKLIST,)
PURPOSE = common_pb2.PURPOSE_COUNTERPARTY_VERIFICATION


def test_promised_batch_items_equal_sign_batch_items() -> None:
    key = SigningKey.generate()
    grant = queries.public_register()
    lookups = [
        queries.Lookup(
            SubjectRef(SubjectType.ORGANISATION, hashlib.sha256(b"%d" % index).digest()),
            grant,
            "",
            query_id,
        )
        for index, query_id in enumerate(queries.new_query_ids(5))
    ]
    logged = [(lookup, hashlib.sha256(lookup.query_id.encode()).digest(), b"s" * 16)
              for lookup in lookups]  # fmt: skip
    shared = common_pb2.LogPromise(log_id=key.kid)
    shared.promised_at.FromDatetime(NOW)
    shared.max_merge_delay.FromTimedelta(timedelta(minutes=5))
    promises = []
    for lookup, commitment, salt in logged:
        promise = common_pb2.LogPromise()
        promise.CopyFrom(shared)
        promise.query_id = lookup.query_id
        promise.entry_commitment = commitment
        promise.salt = salt
        promises.append(promise)
    common = {
        "requester": "company", "purpose": PURPOSE, "kinds": KINDS, "audience": ["court"],
        "scorecard_version": "v1", "now": NOW, "registry_key": key,
    }  # fmt: skip
    fast = queries.sign_promised_batch(logged, shared=shared, **common)  # type: ignore[arg-type]
    plain = queries.sign_batch(list(zip(lookups, promises, strict=True)), **common)  # type: ignore[arg-type]
    keys = KeySet([key.public])
    fast_batch = verify_message(fast, payloads.BATCH_QUERY, keys, agency_pb2.BatchQuery)
    plain_batch = verify_message(plain, payloads.BATCH_QUERY, keys, agency_pb2.BatchQuery)
    assert [item.SerializeToString() for item in fast_batch.items] == [
        item.SerializeToString() for item in plain_batch.items
    ]
    assert fast_batch.items[3].log_promise.query_id == lookups[3].query_id
    assert fast_batch.items[3].subject.ref == lookups[3].subject.ref
    assert fast_batch.items[3].log_promise.promised_at.ToDatetime(tzinfo=UTC) == NOW
