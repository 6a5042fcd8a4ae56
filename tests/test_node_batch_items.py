"""The node's batch path refuses each bad item as the single path refuses it, and logs it.

The batch path checks items with shortcuts the single path does not take (the
public-register basis once per subject type, the subject reference's length
without building a reference object): a registry signing a batch with bad
items, from the attacker's side, gets the same refusal per item, the good items
are still answered, and every item leaves its query-log row.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from agency_node import config as node_config
from agency_node import database
from agency_node.agreement import PairKeys
from agency_node.answering import Answerer
from agency_node.manifest_holder import ManifestHolder, load_manifest
from agency_node.models import QueryLogEntry
from agency_node.offline_node import write_node_dir
from credence import payloads, queries
from credence.dev.offline_federation import NOW, Federation
from credence.envelope import Envelope, sign, verify_message
from credence.errors import CredenceError
from credence.keys import KeySet, load_signing_key
from credence.v1 import agency_pb2

COURT = "court-1"


@pytest.fixture
def federation() -> Federation:
    federation = Federation.create()
    federation.add_agency(COURT, ("court_judgment",))
    federation.enrol("acme")
    return federation


@pytest.fixture
def engine(tmp_path: Path, federation: Federation) -> Iterator[Engine]:
    data_dir = write_node_dir(federation, tmp_path, COURT)
    engine = database.create_engine_for(database.sqlite_url_for(data_dir))
    yield engine
    engine.dispose()


@pytest.fixture
def answerer(tmp_path: Path, federation: Federation, engine: Engine) -> Answerer:
    config = node_config.load_config(tmp_path / COURT)
    return Answerer(
        config=config,
        manifests=ManifestHolder(
            load_manifest(config, NOW), config.path(node_config.MANIFEST_FILE)
        ),
        signing_key=load_signing_key(config.path(node_config.SIGNING_KEY_FILE)),
        engine=engine,
        clock=lambda: NOW,
        pair_keys=PairKeys(COURT, federation.members[COURT].agreement_key),
    )


def _lookup(federation: Federation, identifier: str) -> queries.Lookup:
    return queries.Lookup(
        subject=federation.subject(identifier),
        grant=queries.public_register(),
        grant_id="",
        query_id=queries.new_query_id(),
    )


def _resigned(federation: Federation, batch: agency_pb2.BatchQuery) -> Envelope:
    """The registry's signature over a batch it altered (the registry is the attacker)."""
    return sign(payloads.BATCH_QUERY, batch.SerializeToString(), [federation.registry_key])


def _single_refusal(answerer: Answerer, envelope: Envelope) -> CredenceError:
    with pytest.raises(CredenceError) as caught:
        answerer.answer(envelope.to_proto())
    return caught.value


def _log(engine: Engine) -> dict[str, tuple[str, str, str]]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(
                QueryLogEntry.query_id,
                QueryLogEntry.outcome,
                QueryLogEntry.status_code,
                QueryLogEntry.reason,
            )
        ).all()
    return {query_id: (outcome, code, reason) for query_id, outcome, code, reason in rows}


def test_bad_items_are_refused_one_by_one_and_logged(
    federation: Federation, answerer: Answerer, engine: Engine
) -> None:
    organisations = [_lookup(federation, f"reg:CN:ORG{index:05d}") for index in range(3)]
    people = [_lookup(federation, f"nin:P{index:07d}") for index in range(2)]
    replayed = _lookup(federation, "reg:CN:REPLAYED1")
    answerer.answer(
        federation.query(replayed.subject, query_id=replayed.query_id, now=NOW).to_proto()
    )
    short_ref, bad_salt = organisations[1], organisations[2]
    lookups = [organisations[0], people[0], short_ref, people[1], replayed, bad_salt]
    batch = agency_pb2.BatchQuery.FromString(federation.batch(lookups, now=NOW).payload)
    batch.items[2].subject.ref = bytes(31)
    batch.items[5].log_promise.salt = bytes(len(batch.items[5].log_promise.salt))

    answered = answerer.answer_batch(_resigned(federation, batch).to_proto())

    reply = verify_message(
        answered,
        payloads.BATCH_ANSWER,
        KeySet([federation.members[COURT].signing_key.public]),
        agency_pb2.BatchAnswer,
    )
    outcomes = [(item.query_id, item.WhichOneof("outcome")) for item in reply.items]
    assert outcomes == [
        (organisations[0].query_id, "answer"),
        (people[0].query_id, "refusal"),
        (short_ref.query_id, "refusal"),
        (people[1].query_id, "refusal"),
        (replayed.query_id, "refusal"),
        (bad_salt.query_id, "refusal"),
    ]
    reasons = {item.query_id: item.refusal.reason for item in reply.items}
    # Each person is refused with the reason the single path gives for the same query.
    person_refusal = _single_refusal(
        answerer, federation.query(federation.subject("nin:P9999999"), now=NOW)
    )
    for person in people:
        assert reasons[person.query_id] == str(person_refusal)
    assert reasons[short_ref.query_id] == "a subject reference is 32 bytes, got 31"
    assert reasons[replayed.query_id] == f"query {replayed.query_id} was already received"
    assert "commits to other content than the query" in reasons[bad_salt.query_id]

    log = _log(engine)
    assert log[organisations[0].query_id][:2] == ("answered", "OK")
    for person in people:
        assert log[person.query_id] == ("refused", "PERMISSION_DENIED", str(person_refusal))
    assert log[short_ref.query_id][:2] == ("refused", "INVALID_ARGUMENT")
    assert log[bad_salt.query_id][:2] == ("refused", "PERMISSION_DENIED")
    # The replayed id: answered once on the single path, refused in the batch.
    with engine.connect() as connection:
        rows = connection.execute(
            select(QueryLogEntry.outcome, QueryLogEntry.status_code).where(
                QueryLogEntry.query_id == replayed.query_id
            )
        ).all()
    assert sorted(rows) == [("answered", "OK"), ("refused", "ALREADY_EXISTS")]


def test_a_replayed_batch_changes_nothing_but_its_refusal_row(
    federation: Federation, answerer: Answerer, engine: Engine
) -> None:
    lookups = [_lookup(federation, f"reg:CN:ORG{index:05d}") for index in range(5)]
    envelope = federation.batch(lookups, now=NOW)
    answerer.answer_batch(envelope.to_proto())
    before = _log(engine)
    with pytest.raises(CredenceError, match="already received"):
        answerer.answer_batch(envelope.to_proto())
    after = _log(engine)
    batch_id = agency_pb2.BatchQuery.FromString(envelope.payload).batch_id
    assert {key: after[key] for key in before} == before
    assert set(after) - set(before) == {batch_id}
    assert after[batch_id][:2] == ("refused", "ALREADY_EXISTS")
