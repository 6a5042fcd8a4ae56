"""The agency node over real sockets and mutual TLS, in process.

Each refusal is shown from the attacker's side: the right status, no answer,
and a row in the node's query log saying why.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from sqlalchemy import select
from support.blind import unmask

from agency_node import database
from agency_node.importer import import_records
from agency_node.models import QueryLogEntry, Record
from agency_node.offline_node import write_node_dir
from agency_node.server import RunningNode, start_node
from agency_node.service import AgencyNodeServicer
from credence import payloads, queries
from credence.dev.offline_federation import NOW, REGISTRY_ID, Federation
from credence.envelope import Envelope, verify_message
from credence.keys import KeySet, SigningKey
from credence.rpc.tls import channel_credentials
from credence.scorecard import default_scorecard
from credence.v1 import agency_pb2, agency_pb2_grpc, common_pb2

BANK = "bank-1"
COURT = "court-1"
LISTED_ORG = "reg:CN:LISTED001"
CLEAR_ORG = "reg:CN:CLEAR0001"
EXPIRED_ORG = "reg:CN:EXPIRED01"
DISPUTED_ORG = "reg:CN:DISPUTED1"
PERSON = "nin:P1234567"

RECORDS_CSV = """\
record_id,identifier,kind,category,amount,currency,status,occurred_at,expires_at,disputed,\
days_overdue
j-1,reg:CN:LISTED001,court_judgment,dishonest_debtor,125000.00,CNY,active,2025-03-01,,false,
j-2,reg:CN:EXPIRED01,court_judgment,dishonest_debtor,9000.00,CNY,active,2019-01-01,,false,
j-3,reg:CN:DISPUTED1,court_judgment,judgment_debt,500.00,CNY,active,2026-01-15,,true,
j-4,nin:P1234567,court_judgment,judgment_debt,300.00,CNY,active,2026-02-01,,false,
"""


@pytest.fixture
def federation() -> Federation:
    federation = Federation.create()
    federation.add_agency(COURT, ("court_judgment",))
    # A second agency of the audience: the court's answers are masked with it.
    federation.add_agency(BANK, ("loan_default",))
    federation.enrol("acme")
    federation.enrol("idp")
    federation.identity_verifiers.add("idp")
    federation.enrol("other-co")
    return federation


@pytest.fixture
def node_dir(tmp_path: Path, federation: Federation) -> Path:
    data_dir = write_node_dir(federation, tmp_path, COURT)
    (tmp_path / "records.csv").write_text(RECORDS_CSV)
    engine = database.create_engine_for(database.sqlite_url_for(data_dir))
    import_records(
        database.session_factory(engine),
        tmp_path / "records.csv",
        federation.pseudonymisation_key,
        now=NOW,
    )
    engine.dispose()
    return data_dir


@pytest.fixture
def node(node_dir: Path) -> Iterator[RunningNode]:
    running = start_node(node_dir, clock=lambda: NOW, listen="127.0.0.1:0")
    yield running
    running.stop(0)


def _stub(
    federation: Federation, node: RunningNode, member_id: str = REGISTRY_ID
) -> Iterator[agency_pb2_grpc.AgencyNodeServiceStub]:
    member = federation.members[member_id]
    credentials = channel_credentials(
        member.tls_key_pem, member.cert_pem, federation.ca.certificate_pem
    )
    with grpc.secure_channel(f"127.0.0.1:{node.port}", credentials) as channel:
        yield agency_pb2_grpc.AgencyNodeServiceStub(channel)


@pytest.fixture
def registry_stub(
    federation: Federation, node: RunningNode
) -> Iterator[agency_pb2_grpc.AgencyNodeServiceStub]:
    yield from _stub(federation, node)


def _ask(
    stub: agency_pb2_grpc.AgencyNodeServiceStub, envelope: Envelope, federation: Federation
) -> agency_pb2.Answer:
    response = stub.AnswerQuery(
        agency_pb2.AnswerQueryRequest(query=envelope.to_proto()), timeout=10
    )
    node_key = federation.members[COURT].signing_key.public
    answer = verify_message(
        Envelope.from_proto(response.answer), payloads.ANSWER, KeySet([node_key]), agency_pb2.Answer
    )
    assert answer.query_hash == hashlib.sha256(envelope.payload).digest()
    return answer


def _log_rows(node_dir: Path) -> list[QueryLogEntry]:
    engine = database.create_engine_for(database.sqlite_url_for(node_dir))
    with database.session_factory(engine)() as session:
        rows = list(session.scalars(select(QueryLogEntry).order_by(QueryLogEntry.id)))
    engine.dispose()
    return rows


# -- answers ---------------------------------------------------------------------------


def test_listed_organisation(
    federation: Federation, registry_stub: agency_pb2_grpc.AgencyNodeServiceStub, node_dir: Path
) -> None:
    answer = _ask(registry_stub, federation.query(federation.subject(LISTED_ORG)), federation)
    opened = unmask(answer, federation, agency=COURT, label=answer.query_id)
    assert opened.listed
    assert opened.categories == ["dishonest_debtor"]
    assert (opened.partial_points, opened.has_history) == (0, False), "credit was not asked for"
    assert list(answer.masked) != list(opened.vector), "the answer left the node masked"
    row = _log_rows(node_dir)[-1]
    assert (row.outcome, row.query_id) == ("answered", answer.query_id)


def test_answer_reveals_no_amount_or_record(
    federation: Federation, registry_stub: agency_pb2_grpc.AgencyNodeServiceStub
) -> None:
    answer = _ask(registry_stub, federation.query(federation.subject(LISTED_ORG)), federation)
    serialized = answer.SerializeToString()
    for secret in (b"125000", b"12500000", b"j-1", b"LISTED001", b"CNY"):
        assert secret not in serialized


@pytest.mark.parametrize(
    ("identifier", "listed", "disputed"),
    [(CLEAR_ORG, False, False), (EXPIRED_ORG, False, False), (DISPUTED_ORG, True, True)],
)
def test_clear_expired_and_disputed(
    federation: Federation,
    registry_stub: agency_pb2_grpc.AgencyNodeServiceStub,
    identifier: str,
    listed: bool,
    disputed: bool,
) -> None:
    answer = _ask(registry_stub, federation.query(federation.subject(identifier)), federation)
    opened = unmask(answer, federation, agency=COURT, label=answer.query_id)
    assert (opened.listed, opened.disputed) == (listed, disputed)


def test_person_credit_with_consent(
    federation: Federation, registry_stub: agency_pb2_grpc.AgencyNodeServiceStub
) -> None:
    person = federation.subject(PERSON)
    grant, grant_id = federation.consent(person, identity_member="idp", requester="acme")
    answer = _ask(
        registry_stub,
        federation.query(
            person,
            purpose=common_pb2.PURPOSE_CREDIT_ASSESSMENT,
            kinds=[common_pb2.VERDICT_KIND_CREDIT],
            grant=grant,
            grant_id=grant_id,
        ),
        federation,
    )
    assert answer.layout_id.startswith(default_scorecard().version + "/")
    opened = unmask(answer, federation, agency=COURT, label=answer.query_id)
    assert opened.partial_points < 0, "an unsatisfied judgment costs points"
    assert opened.reason_codes


# -- refusals --------------------------------------------------------------------------


def _refused(
    stub: agency_pb2_grpc.AgencyNodeServiceStub,
    envelope: Envelope,
    code: grpc.StatusCode,
    match: str,
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.AnswerQuery(agency_pb2.AnswerQueryRequest(query=envelope.to_proto()), timeout=10)
    assert caught.value.code() is code, caught.value.details()
    assert match in (caught.value.details() or "")


def _assert_refusal_logged(node_dir: Path, code: grpc.StatusCode) -> None:
    row = _log_rows(node_dir)[-1]
    assert row.outcome == "refused"
    assert row.status_code == code.name
    assert row.answer_hash is None


@pytest.mark.parametrize(
    ("case", "code", "match"),
    [
        ("unsigned", grpc.StatusCode.UNAUTHENTICATED, "unsigned"),
        ("wrong_signer", grpc.StatusCode.UNAUTHENTICATED, "not trusted"),
        ("tampered", grpc.StatusCode.UNAUTHENTICATED, "does not verify"),
        ("expired", grpc.StatusCode.FAILED_PRECONDITION, "expired at"),
        ("future", grpc.StatusCode.FAILED_PRECONDITION, "in the future"),
        ("too_long", grpc.StatusCode.INVALID_ARGUMENT, "longer than"),
        ("other_audience", grpc.StatusCode.PERMISSION_DENIED, "addressed to"),
        ("person_public_register", grpc.StatusCode.PERMISSION_DENIED, "never looked up"),
        ("credit_public_register", grpc.StatusCode.PERMISSION_DENIED, "blacklist status only"),
        ("promise_mismatch", grpc.StatusCode.PERMISSION_DENIED, "commits to other content"),
        ("suspended_requester", grpc.StatusCode.PERMISSION_DENIED, "suspended"),
    ],
)
def test_refusals(
    federation: Federation,
    node_dir: Path,
    tmp_path: Path,
    case: str,
    code: grpc.StatusCode,
    match: str,
) -> None:
    org = federation.subject(LISTED_ORG)
    if case == "suspended_requester":
        federation.suspended.add("acme")
        (node_dir / "manifest.bin").write_bytes(federation.manifest_envelope().to_bytes())
    envelope = {
        "unsigned": lambda: Envelope(payloads.QUERY, federation.query(org).payload, ()),
        "wrong_signer": lambda: federation.query(org, registry_key=SigningKey.generate()),
        "tampered": lambda: Envelope(
            payloads.QUERY,
            federation.query(org).payload.replace(b"acme", b"acmf"),
            federation.query(org).signatures,
        ),
        "expired": lambda: federation.query(org, now=NOW - timedelta(minutes=10)),
        "future": lambda: federation.query(org, now=NOW + timedelta(minutes=10)),
        "too_long": lambda: federation.query(org, lifetime=timedelta(hours=2)),
        "other_audience": lambda: federation.query(org, audience=["bank-9"]),
        "person_public_register": lambda: federation.query(federation.subject(PERSON)),
        "credit_public_register": lambda: federation.query(
            org, kinds=[common_pb2.VERDICT_KIND_CREDIT]
        ),
        "promise_mismatch": lambda: federation.query(org, tamper_promise=True),
        "suspended_requester": lambda: federation.query(org),
    }[case]()
    running = start_node(node_dir, clock=lambda: NOW, listen="127.0.0.1:0")
    try:
        for stub in _stub(federation, running):
            _refused(stub, envelope, code, match)
    finally:
        running.stop(0)
    _assert_refusal_logged(node_dir, code)


def test_replayed_query_is_refused_and_logged(
    federation: Federation, registry_stub: agency_pb2_grpc.AgencyNodeServiceStub, node_dir: Path
) -> None:
    envelope = federation.query(federation.subject(LISTED_ORG))
    _ask(registry_stub, envelope, federation)
    _refused(registry_stub, envelope, grpc.StatusCode.ALREADY_EXISTS, "already received")
    rows = _log_rows(node_dir)
    assert [row.outcome for row in rows[-2:]] == ["answered", "refused"]


@pytest.mark.parametrize(
    ("case", "code", "match"),
    [
        ("other_subject", grpc.StatusCode.PERMISSION_DENIED, "is for subject"),
        ("other_requester", grpc.StatusCode.PERMISSION_DENIED, "not for 'other-co'"),
        ("other_purpose", grpc.StatusCode.PERMISSION_DENIED, "purpose"),
        ("other_kind", grpc.StatusCode.PERMISSION_DENIED, "asks for blacklist"),
        ("revoked_registry_key", grpc.StatusCode.UNAUTHENTICATED, "not trusted"),
    ],
)
def test_grant_binding_refusals(
    federation: Federation,
    node_dir: Path,
    case: str,
    code: grpc.StatusCode,
    match: str,
) -> None:
    person = federation.subject(PERSON)
    grant, grant_id = federation.consent(person, identity_member="idp", requester="acme")
    arguments: dict[str, object] = {
        "purpose": common_pb2.PURPOSE_CREDIT_ASSESSMENT,
        "kinds": [common_pb2.VERDICT_KIND_CREDIT],
        "grant": grant,
        "grant_id": grant_id,
    }
    subject = person
    if case == "other_subject":
        subject = federation.subject("nin:P7654321")
    elif case == "other_requester":
        arguments["requester"] = "other-co"
    elif case == "other_purpose":
        arguments["purpose"] = common_pb2.PURPOSE_TENANCY_SCREENING
    elif case == "other_kind":
        arguments["kinds"] = [common_pb2.VERDICT_KIND_CREDIT, common_pb2.VERDICT_KIND_BLACKLIST]
    elif case == "revoked_registry_key":
        # The registry rotated: the key that countersigned the grant is revoked.
        old = federation.registry_key
        federation.registry_key = SigningKey.generate()
        federation.revoked_kids.add(old.kid)
        (node_dir / "manifest.bin").write_bytes(federation.manifest_envelope().to_bytes())
        federation.registry_key = old
    envelope = federation.query(subject, **arguments)  # type: ignore[arg-type]
    running = start_node(node_dir, clock=lambda: NOW, listen="127.0.0.1:0")
    try:
        for stub in _stub(federation, running):
            _refused(stub, envelope, code, match)
    finally:
        running.stop(0)
    _assert_refusal_logged(node_dir, code)


def test_caller_that_is_not_the_registry(
    federation: Federation, node: RunningNode, node_dir: Path
) -> None:
    envelope = federation.query(federation.subject(LISTED_ORG))
    for stub in _stub(federation, node, member_id="acme"):
        _refused(stub, envelope, grpc.StatusCode.PERMISSION_DENIED, "only the registry")


def test_oversized_message_is_refused(
    federation: Federation, registry_stub: agency_pb2_grpc.AgencyNodeServiceStub
) -> None:
    envelope = federation.query(federation.subject(LISTED_ORG))
    huge = Envelope(
        envelope.payload_type, envelope.payload + b"\x00" * (5 * 1024 * 1024), envelope.signatures
    )
    with pytest.raises(grpc.RpcError) as caught:
        registry_stub.AnswerQuery(agency_pb2.AnswerQueryRequest(query=huge.to_proto()), timeout=10)
    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


# -- the batch path ----------------------------------------------------------------------


def test_batch_answers_equal_single_answers(
    federation: Federation, registry_stub: agency_pb2_grpc.AgencyNodeServiceStub
) -> None:
    identifiers = [LISTED_ORG, CLEAR_ORG, EXPIRED_ORG, DISPUTED_ORG] + [
        f"reg:CN:BULK{index:05d}" for index in range(200)
    ]
    lookups = [
        queries.Lookup(
            subject=federation.subject(identifier),
            grant=queries.public_register(),
            grant_id="",
            query_id=queries.new_query_id(),
        )
        for identifier in identifiers
    ]
    # A person on the public-register basis is refused inside the batch, not the batch.
    lookups.append(
        queries.Lookup(
            subject=federation.subject(PERSON),
            grant=queries.public_register(),
            grant_id="",
            query_id=queries.new_query_id(),
        )
    )
    batch = federation.batch(lookups)
    responses = list(
        registry_stub.AnswerBatch(
            iter([agency_pb2.AnswerBatchRequest(batch=batch.to_proto())]), timeout=20
        )
    )
    assert len(responses) == 1
    node_key = federation.members[COURT].signing_key.public
    reply = verify_message(
        Envelope.from_proto(responses[0].answers),
        payloads.BATCH_ANSWER,
        KeySet([node_key]),
        agency_pb2.BatchAnswer,
    )
    assert reply.batch_hash == hashlib.sha256(batch.payload).digest()
    assert [item.query_id for item in reply.items] == [lookup.query_id for lookup in lookups]
    assert reply.items[-1].WhichOneof("outcome") == "refusal"
    assert reply.items[-1].refusal.code == grpc.StatusCode.PERMISSION_DENIED.value[0]
    items = len(reply.items)
    opened = [
        unmask(item.answer, federation, agency=COURT, label=reply.batch_id, index=i, items=items)
        for i, item in enumerate(reply.items[:-1])
    ]
    for identifier, batch_item in zip(identifiers[:4], opened[:4], strict=True):
        single = _ask(registry_stub, federation.query(federation.subject(identifier)), federation)
        assert batch_item == unmask(single, federation, agency=COURT, label=single.query_id)
    assert sum(item.listed for item in opened) == 2


def test_records_are_stored_without_raw_identifiers(node_dir: Path) -> None:
    raw = (node_dir / "node.db").read_bytes()
    assert b"LISTED001" not in raw
    assert b"P1234567" not in raw
    engine = database.create_engine_for(database.sqlite_url_for(node_dir))
    with database.session_factory(engine)() as session:
        assert len(list(session.scalars(select(Record)))) == 4
    engine.dispose()


def test_health_and_reflection(federation: Federation, node: RunningNode) -> None:
    registry = federation.members[REGISTRY_ID]
    credentials = channel_credentials(
        registry.tls_key_pem, registry.cert_pem, federation.ca.certificate_pem
    )
    with grpc.secure_channel(f"127.0.0.1:{node.port}", credentials) as channel:
        # The typeshed stubs of these two services are incomplete: call them untyped.
        health_stub: Any = health_pb2_grpc.HealthStub(channel)
        status = health_stub.Check(
            health_pb2.HealthCheckRequest(service="credence.v1.AgencyNodeService"), timeout=5
        )
        assert status.status == health_pb2.HealthCheckResponse.SERVING
        reflection: Any = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = list(
            reflection.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
            )
        )
    services = {service.name for service in replies[0].list_services_response.service}
    assert "credence.v1.AgencyNodeService" in services


def test_every_rpc_of_the_proto_is_implemented() -> None:
    service = agency_pb2.DESCRIPTOR.services_by_name["AgencyNodeService"]
    for method in service.methods:
        implementation = getattr(AgencyNodeServicer, method.name)
        base = getattr(agency_pb2_grpc.AgencyNodeServiceServicer, method.name)
        assert implementation is not base, f"{method.name} is not implemented"


def test_consent_bound_by_a_revoked_identity_key_is_refused(
    federation: Federation, node_dir: Path
) -> None:
    person = federation.subject(PERSON)
    grant, grant_id = federation.consent(person, identity_member="idp", requester="acme")
    federation.revoked_kids.add(federation.members["idp"].signing_key.kid)
    (node_dir / "manifest.bin").write_bytes(federation.manifest_envelope().to_bytes())
    envelope = federation.query(
        person,
        purpose=common_pb2.PURPOSE_CREDIT_ASSESSMENT,
        kinds=[common_pb2.VERDICT_KIND_CREDIT],
        grant=grant,
        grant_id=grant_id,
    )
    running = start_node(node_dir, clock=lambda: NOW, listen="127.0.0.1:0")
    try:
        for stub in _stub(federation, running):
            _refused(stub, envelope, grpc.StatusCode.UNAUTHENTICATED, "not among the trusted keys")
    finally:
        running.stop(0)
    _assert_refusal_logged(node_dir, grpc.StatusCode.UNAUTHENTICATED)
