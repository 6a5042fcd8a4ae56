"""A member tries to make the registry's database pay for its requests.

Before issue 10 a 105 KB ``ScreenBatch`` with a long repeated ``kinds`` list
added 38.6 MiB to the registry database (x386): each row's refusal copied the
list, SQLite ignored the 256-character column, and messages up to 16 MiB were
accepted. Each test here is the attack over real gRPC with mutual TLS against
a real registry, then a look at the database.

How the database is measured: the registry's SQLite write-ahead log is
checkpointed and the in-use pages counted, ``(page_count - freelist_count) *
page_size``, before and after each input (:mod:`support.members_port`). That
is what the disk holds, indexes and Merkle nodes included, exact to a 4 KiB
page. "Bytes received" is the serialized request, a lower bound of what crossed
the wire, so the ratios are if anything too high.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from sqlalchemy import func, select
from support.members_port import MembersPort, members_port, organisation, person

from central_registry import database
from central_registry.config import RegistryConfig, parse_config, render_config
from central_registry.limits.request_shape import (
    AMPLIFICATION_LIMIT,
    MAX_REASON_CHARS,
    REFUSAL_ROW_BYTES,
    refusal_row_budget,
)
from central_registry.log.entries import append_entries
from central_registry.log.rows import OUTCOME_REFUSED, LogRow
from central_registry.models import LogEntry
from credence.errors import InvalidInput
from credence.v1 import agency_pb2, registry_pb2
from hostile.amplification_inputs import (
    BLACKLIST,
    COUNTERPARTY,
    INPUTS,
    PUBLIC,
    measure,
    request,
    screen,
)

#: What each input must get: refused before decoding, refused as malformed, or
#: answered row by row (each row refused).
EXPECTED = {
    "repeated kinds": grpc.StatusCode.INVALID_ARGUMENT,
    "long row keys": grpc.StatusCode.INVALID_ARGUMENT,
    "long grant token": grpc.StatusCode.INVALID_ARGUMENT,
    "many rows": grpc.StatusCode.INVALID_ARGUMENT,
    "oversize message": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "many refused rows": grpc.StatusCode.OK,
}


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MembersPort]:
    with members_port(tmp_path_factory.mktemp("amplification") / "registry") as running:
        # One accepted lookup first: the member's rate and quota buckets exist
        # from here on, so no input is charged for creating them.
        served = registry_pb2.RequestVerdictRequest(
            subject=organisation(0), kinds=[BLACKLIST], purpose=COUNTERPARTY, grant=PUBLIC
        )
        assert request(running, served) == grpc.StatusCode.OK
        yield running


@pytest.mark.parametrize("name", sorted(INPUTS))
def test_no_input_grows_the_database_by_more_than_twice_its_bytes(
    port: MembersPort, name: str
) -> None:
    measured = measure(port, name)
    assert measured.code == EXPECTED[name]
    assert measured.added <= AMPLIFICATION_LIMIT * measured.sent, (
        f"{name}: {measured.sent} bytes sent added {measured.added} bytes (x{measured.ratio:.2f})"
    )
    # Every refusal row holds what was refused and why, never the request's copy.
    for kinds, reason in port.refusals():
        assert kinds in ("", "1", "2", "1,2", "2,1")
        assert len(reason) <= MAX_REASON_CHARS


def test_repeated_kinds_are_refused_with_the_limit_and_logged_without_them(
    port: MembersPort,
) -> None:
    lookup = registry_pb2.RequestVerdictRequest(
        subject=person(7), kinds=[BLACKLIST] * 10_000, purpose=COUNTERPARTY, grant=PUBLIC
    )
    with pytest.raises(grpc.RpcError) as refused:
        port.stub.RequestVerdict(lookup, timeout=60)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "10000 verdict kinds asked" in str(refused.value.details())
    kinds, reason = port.refusals()[-1]
    assert kinds == ""  # not a copy of 10,000 kinds: none of them was valid
    assert reason.startswith("INVALID_ARGUMENT: 10000 verdict kinds asked")


def test_a_message_of_1000_rows_with_consent_sized_tokens_is_read(port: MembersPort) -> None:
    # ~2.3 KB is a real consent token's size; these are not valid, so every
    # row is refused on its own, which proves the message was decoded and read.
    grant = agency_pb2.Grant(consent_token="a" * 2300)
    message = registry_pb2.ScreenBatchRequest(
        items=[registry_pb2.ScreenItem(row_key=f"r{n}", subject=person(n), grant=grant)
               for n in range(1000)],
        kinds=[BLACKLIST], purpose=COUNTERPARTY,
    )  # fmt: skip
    results = [
        result
        for response in port.stub.ScreenBatch(iter([message]), timeout=120)
        for result in response.results
    ]
    assert len(results) == 1000
    assert all(result.HasField("refusal") for result in results)


def test_log_rows_per_minute_are_a_quota_and_nothing_is_logged_past_it(tmp_path: Path) -> None:
    with members_port(tmp_path / "registry", max_screen_rows=10, log_rows_per_minute=10) as port:
        message = registry_pb2.ScreenBatchRequest(
            items=[registry_pb2.ScreenItem(row_key=f"r{n}", subject=organisation(n), grant=PUBLIC)
                   for n in range(10)],
            kinds=[BLACKLIST], purpose=COUNTERPARTY,
        )  # fmt: skip
        assert screen(port, message) == grpc.StatusCode.OK
        assert port.log_rows() == 10
        size = port.database_bytes()
        # The minute's quota is spent: a second message, a single lookup and a
        # lookup that would only be refused all add nothing.
        with pytest.raises(grpc.RpcError) as over:
            list(port.stub.ScreenBatch(iter([message]), timeout=60))
        assert over.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "'acme' reached its quota of 10 logged lookups per minute" in str(
            over.value.details()
        )
        single = registry_pb2.RequestVerdictRequest(
            subject=organisation(11), kinds=[BLACKLIST], purpose=COUNTERPARTY, grant=PUBLIC
        )
        assert request(port, single) == grpc.StatusCode.RESOURCE_EXHAUSTED
        no_grant = registry_pb2.RequestVerdictRequest(
            subject=person(1), kinds=[BLACKLIST], purpose=COUNTERPARTY
        )
        assert request(port, no_grant) == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert port.log_rows() == 10
        assert port.database_bytes() == size


def test_a_flood_of_small_refused_lookups_is_logged_only_within_its_quota(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A refused lookup is logged for its subject however small the request.

    A row outweighs the tens of bytes that cause it, so a member flooding the
    registry with refused lookups gets only ``refused_rows_per_minute`` of them
    logged: past that they are still refused, and add nothing, not even a
    line a call to the server's own log.
    """
    caplog.set_level(logging.WARNING, logger="central_registry.lookup_log")
    with members_port(tmp_path / "registry", refused_rows_per_minute=5) as port:
        size = port.database_bytes()
        no_grant = [
            registry_pb2.RequestVerdictRequest(
                subject=person(n), kinds=[BLACKLIST], purpose=COUNTERPARTY
            )
            for n in range(40)
        ]
        for message in no_grant:
            assert request(port, message) == grpc.StatusCode.PERMISSION_DENIED
        assert port.log_rows() == 5
        assert [reason for _, reason in port.refusals()] == [port.refusals()[0][1]] * 5
        unlogged = [r.getMessage() for r in caplog.records if "not logged" in r.getMessage()]
        assert len(unlogged) == 1, unlogged  # 35 went unlogged: said once, not 35 times
        grown = port.database_bytes() - size
        sent = sum(message.ByteSize() for message in no_grant)
        # Five rows of a few hundred bytes each, whatever the flood's length.
        assert grown <= 5 * REFUSAL_ROW_BYTES + 4 * 4096, (grown, sent)
        # Lookups that are answered are not held back by the refusals' quota.
        answered = registry_pb2.RequestVerdictRequest(
            subject=organisation(1), kinds=[BLACKLIST], purpose=COUNTERPARTY, grant=PUBLIC
        )
        assert request(port, answered) == grpc.StatusCode.OK
        assert port.log_rows() == 6


def _row(**changes: object) -> LogRow:
    values: dict[str, object] = {
        "query_id": "q" * 32, "requester": "acme", "subject_type": 1,
        "subject_ref": b"\x01" * 32, "purpose": 1, "kinds": "1", "grant_id": "", "basis": "",
        "outcome": OUTCOME_REFUSED, "reason": "", "issued_at": datetime.now(UTC),
        "salt": b"\x02" * 16, "commitment": b"\x03" * 32,
    }  # fmt: skip
    return LogRow(**{**values, **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "value", "limit"),
    [
        ("kinds", ",".join(["1"] * 200), 256),
        ("requester", "a" * 65, 64),
        ("query_id", "q" * 65, 64),
        ("grant_id", "g" * 65, 64),
        ("basis", "mandate " + "x" * 1000, 600),
    ],
)
def test_a_value_longer_than_its_column_is_refused_on_every_backend(
    database_url: str, field: str, value: str, limit: int
) -> None:
    engine = database.create_engine_for(database_url)
    try:
        database.upgrade_schema(engine)
        refused = pytest.raises(
            InvalidInput, match=rf"log entry {field} is {len(value)} .* {limit}"
        )
        with refused, database.session_factory(engine).begin() as session:
            append_entries(session, [_row(**{field: value})])
        with database.session_factory(engine).begin() as session:
            assert session.scalar(select(func.count()).select_from(LogEntry)) == 0
    finally:
        engine.dispose()


def test_a_long_reason_is_stored_cut_to_its_bound(database_url: str) -> None:
    engine = database.create_engine_for(database_url)
    try:
        database.upgrade_schema(engine)
        with database.session_factory(engine).begin() as session:
            append_entries(session, [_row(reason="why " * 10_000)])
        with database.session_factory(engine).begin() as session:
            stored = session.scalar(select(LogEntry.reason))
        assert stored is not None
        assert len(stored) == MAX_REASON_CHARS
        assert stored.startswith("why why")
    finally:
        engine.dispose()


def test_a_quota_too_small_for_one_screening_message_is_refused_at_start(tmp_path: Path) -> None:
    text = render_config(RegistryConfig(data_dir=tmp_path))
    assert "log_rows_per_minute = 120000" in text  # what `credence registry init` writes
    text = text.replace("log_rows_per_minute = 120000", "log_rows_per_minute = 999")
    with pytest.raises(
        InvalidInput, match=r"log_rows_per_minute \(999\) .* max_screen_rows \(1000\)"
    ):
        parse_config(text, tmp_path, environ={})


@pytest.mark.parametrize("size", [0, 1, 511, 512, 40_000, 8 << 20])
def test_refusal_rows_of_a_request_cost_at_most_twice_its_bytes(size: int) -> None:
    budget = refusal_row_budget(size)
    assert budget >= 1  # a single refused lookup is always logged, for its subject
    assert budget == 1 or budget * REFUSAL_ROW_BYTES <= AMPLIFICATION_LIMIT * size
