"""The central registry's database: migrations and the repositories of central_registry.store."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect
from sqlalchemy.orm import Session, sessionmaker
from support.fixtures import Schema

from central_registry import database, transparency
from central_registry.limits.subject_usage import (
    note_subject_use,
    note_subject_uses,
    prune_subject_usage,
)
from central_registry.log.entries import (
    append_entries,
    entries_for_subject,
    erase_expired,
    log_entry,
)
from central_registry.log.rows import LogRow
from central_registry.models import Base
from central_registry.store import binding_rows, grant_rows, manifest_rows, member_rows
from credence.errors import (
    AlreadyExists,
    Expired,
    FailedPrecondition,
    InvalidInput,
    NotFound,
    NotYetValid,
    ResourceExhausted,
    Revoked,
)
from credence.keys import SigningKey
from credence.transparency import merkle
from credence.transparency.checkpoint import open_checkpoint

NOW = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
TABLES = {
    "members",
    "revoked_serials",
    "manifests",
    "bindings",
    "grants",
    "log_entries",
    "subject_usage",
    "subject_day_counts",
    "merkle_nodes",
    "tree_heads",
    "contests",
    "used_subject_proofs",
    "rate_buckets",
    "admin_tokens",
    "admin_actions",
    "alarms",
    "verdict_records",
    "reviews",
}
REF_A = "aa" * 32
REF_B = "bb" * 32


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return database.sqlite_url_for(tmp_path)


@pytest.fixture
def schema() -> Schema:
    """The registry's database (``make_engine`` and ``engine`` are in support.fixtures)."""
    return database


def _enrol(session: Session, member_id: str = "agency-a", role: str = "agency") -> None:
    member_rows.add_enrolment(
        session,
        member_id=member_id,
        display_name=member_id.title(),
        role=role,
        endpoint="127.0.0.1:7001",
        signing_key_raw=SigningKey.generate().public.raw(),
        record_kinds=["court_judgment", "default"] if role == "agency" else [],
        csr_pem="-----BEGIN CERTIFICATE REQUEST-----\n...",
        now=NOW,
    )


def _approve(session: Session, member_id: str = "agency-a") -> None:
    member_rows.approve_member(
        session,
        member_id,
        certificate_pem="-----BEGIN CERTIFICATE-----\n...",
        serial_hex="0x00AB12",
        allowed_purposes=["counterparty_verification", "credit_assessment"],
        allowed_kinds=["blacklist", "credit"],
        identity_verifier=True,
        now=NOW + timedelta(minutes=1),
    )


def _grant(
    session: Session,
    grant_id: str = "g1",
    *,
    max_uses: int | None = 2,
    kind: str = "consent",
    subject: str = REF_A,
) -> None:
    grant_rows.add_grant(
        session,
        grant_id=grant_id,
        kind=kind,
        subject_ref_hex=subject,
        requester="company-x",
        purpose="credit_assessment",
        scope=["credit"],
        issued_at=NOW,
        not_before=NOW,
        expires_at=NOW + timedelta(days=30),
        max_uses=max_uses,
        data_life_seconds=3600,
        token="header.payload.signature",
        legal_basis="Act 12 s.4 / case 2026-77" if kind == "mandate" else None,
    )


def _append(
    session: Session,
    query_id: str,
    *,
    subject_ref: bytes = b"\x01" * 32,
    embargo_until: datetime | None = None,
) -> int:
    return append_entries(
        session,
        [
            LogRow(
                query_id=query_id,
                requester="company-x",
                subject_type=1,
                subject_ref=subject_ref,
                purpose=2,
                kinds="1,2",
                grant_id="g1",
                basis="consent g1",
                outcome="dispatched",
                reason="",
                issued_at=NOW,
                salt=hashlib.sha256(query_id.encode()).digest()[:16],
                commitment=hashlib.sha256(b"commitment " + query_id.encode()).digest(),
                embargo_until=embargo_until,
            )
        ],
    )


# --- schema -----------------------------------------------------------------


def test_sqlite_url_is_registry_db_in_the_data_directory(tmp_path: Path) -> None:
    assert database.sqlite_url_for(tmp_path) == f"sqlite:///{tmp_path.resolve() / 'registry.db'}"


def test_migrations_create_the_schema_from_empty(make_engine: Callable[[bool], Engine]) -> None:
    engine = make_engine(False)
    assert set(inspect(engine).get_table_names()) == set()
    database.upgrade_schema(engine)
    assert set(inspect(engine).get_table_names()) == TABLES | {"alembic_version"}
    assert database.schema_revision(engine) == database.schema_head() == "0009"
    database.require_current_schema(engine)
    database.upgrade_schema(engine)  # idempotent
    assert database.schema_is_current(engine)


def test_migrations_match_the_models(make_engine: Callable[[bool], Engine]) -> None:
    with make_engine(True).connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_unmigrated_database_is_refused_with_the_fix(
    make_engine: Callable[[bool], Engine], tmp_path: Path, backend: str
) -> None:
    engine = make_engine(False)
    assert not database.schema_is_current(engine)
    # Only a SQLite file names its data directory; a server URL does not.
    data_dir = tmp_path.resolve() if backend == "sqlite" else "<data dir>"
    expected = (
        "database schema is at revision none (never migrated), the code needs 0009: "
        f"run `credence registry migrate --dir {data_dir}`"
    )
    with pytest.raises(FailedPrecondition) as caught:
        database.require_current_schema(engine)
    assert str(caught.value) == expected


# --- members ----------------------------------------------------------------


def test_enrolment_is_pending_with_the_key_and_kinds(sessions: sessionmaker[Session]) -> None:
    key = SigningKey.generate()
    with sessions.begin() as session:
        member = member_rows.add_enrolment(
            session,
            member_id="agency-a",
            display_name="Agency A",
            role="agency",
            endpoint="127.0.0.1:7001",
            signing_key_raw=key.public.raw(),
            record_kinds=["court_judgment", "default"],
            csr_pem="csr",
            now=NOW,
        )
    with sessions() as session:
        member = member_rows.get_member(session, "agency-a")
    assert member.state == "pending"
    assert member.signing_key == key.public.raw()
    assert member.signing_kid == key.kid
    assert member.record_kind_names == ("court_judgment", "default")
    assert member.allowed_purpose_names == ()
    assert member.certificate_pem is None
    assert member.created_at == NOW


def test_duplicate_enrolment_is_refused_and_the_first_kept(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as session:
        _enrol(session)
    with sessions.begin() as session:
        with pytest.raises(AlreadyExists, match="member id 'agency-a' is already enrolled"):
            _enrol(session, role="company")
        # The refusal left the transaction usable.
        _enrol(session, "company-x", role="company")
    with sessions() as session:
        assert [m.member_id for m in member_rows.list_members(session)] == ["agency-a", "company-x"]
        assert member_rows.get_member(session, "agency-a").role == "agency"


def test_enrolment_input_is_checked(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        with pytest.raises(InvalidInput, match="role must be one of agency, company, authority"):
            _enrol(session, role="bank")
        with pytest.raises(InvalidInput, match="public key is 32 bytes, got 31"):
            member_rows.add_enrolment(
                session,
                member_id="x",
                display_name="X",
                role="company",
                endpoint="",
                signing_key_raw=bytes(31),
                record_kinds=[],
                csr_pem="csr",
                now=NOW,
            )


def test_unknown_member_is_not_found(sessions: sessionmaker[Session]) -> None:
    with sessions() as session, pytest.raises(NotFound, match="no member 'nobody'"):
        member_rows.get_member(session, "nobody")


def test_approve_suspend_reinstate(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        _enrol(session)
        _enrol(session, "company-x", role="company")
        _approve(session)
    with sessions() as session:
        member = member_rows.get_member(session, "agency-a")
        assert member.state == "active"
        assert member.certificate_serial == "ab12"
        assert member.allowed_purpose_names == ("counterparty_verification", "credit_assessment")
        assert member.allowed_kind_names == ("blacklist", "credit")
        assert member.identity_verifier
        assert member.updated_at == NOW + timedelta(minutes=1)
        assert [m.member_id for m in member_rows.list_members(session, "pending")] == ["company-x"]
        assert [m.member_id for m in member_rows.list_members(session, "active")] == ["agency-a"]

    later = NOW + timedelta(hours=1)
    with sessions.begin() as session:
        assert (
            member_rows.set_member_state(session, "agency-a", "suspended", later).state
            == "suspended"
        )
    with sessions.begin() as session:
        assert member_rows.set_member_state(session, "agency-a", "active", later).state == "active"
    with sessions() as session:
        assert member_rows.get_member(session, "agency-a").updated_at == later


def test_impossible_member_transitions_are_refused(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        _enrol(session)
        _enrol(session, "company-x", role="company")
        _approve(session)
    with sessions.begin() as session:
        with pytest.raises(FailedPrecondition, match="'agency-a' is active, not pending"):
            _approve(session)
        with pytest.raises(
            FailedPrecondition,
            match="'agency-a' is active, not suspended: only a member that is suspended can be",
        ):
            member_rows.set_member_state(session, "agency-a", "active", NOW)
        with pytest.raises(
            FailedPrecondition, match="'company-x' is pending, not active: approve it first"
        ):
            member_rows.set_member_state(session, "company-x", "suspended", NOW)
        with pytest.raises(InvalidInput, match="not 'pending'"):
            member_rows.set_member_state(session, "agency-a", "pending", NOW)
        member_rows.set_member_state(session, "agency-a", "suspended", NOW)
        with pytest.raises(
            FailedPrecondition,
            match="is suspended, not active: only a member that is active can be suspended",
        ):
            member_rows.set_member_state(session, "agency-a", "suspended", NOW)
        with pytest.raises(NotFound, match="no member 'nobody'"):
            member_rows.set_member_state(session, "nobody", "suspended", NOW)
    with sessions() as session:
        assert member_rows.get_member(session, "company-x").state == "pending"
        assert member_rows.get_member(session, "agency-a").state == "suspended"


def test_revoked_serials_are_normalised_and_kept_once(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        member_rows.revoke_serial(session, "0x0ABC", "agency-a", NOW)
        member_rows.revoke_serial(session, "abc", "agency-a", NOW + timedelta(hours=1))
        member_rows.revoke_serial(session, "1f", "company-x", NOW)
        with pytest.raises(InvalidInput, match="certificate serial must be 1 to 40 hex digits"):
            member_rows.revoke_serial(session, "xyz", "company-x", NOW)
    with sessions() as session:
        assert member_rows.revoked_serials(session) == ["1f", "abc"]


# --- manifests --------------------------------------------------------------


def test_manifest_versions(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        assert manifest_rows.latest_manifest(session) is None
    with sessions.begin() as session:
        for version in (1, 2):
            manifest_rows.store_manifest(
                session,
                version=version,
                issued_at=NOW,
                expires_at=NOW + timedelta(days=1),
                envelope=b"envelope %d" % version,
            )
    with (
        sessions.begin() as session,
        pytest.raises(AlreadyExists, match="manifest version 2 exists already"),
    ):
        manifest_rows.store_manifest(
            session, version=2, issued_at=NOW, expires_at=NOW, envelope=b"forged"
        )
    with sessions() as session:
        latest = manifest_rows.latest_manifest(session)
        assert latest is not None
        assert (latest.version, latest.envelope) == (2, b"envelope 2")
        assert manifest_rows.get_manifest(session, 1).envelope == b"envelope 1"
        with pytest.raises(NotFound, match="manifest version 3 was never published"):
            manifest_rows.get_manifest(session, 3)


# --- bindings ---------------------------------------------------------------


def test_bindings_are_idempotent_and_expire(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        for token in ("t1", "t2"):
            binding_rows.add_binding(
                session,
                subject_ref_hex=REF_A.upper(),
                subject_kid="kid-1",
                identity_member="bank-id",
                token=token,
                now=NOW,
                expires_at=NOW + timedelta(days=365),
            )
        binding_rows.add_binding(
            session,
            subject_ref_hex=REF_A,
            subject_kid="kid-old",
            identity_member="bank-id",
            token="t0",
            now=NOW - timedelta(days=400),
            expires_at=NOW - timedelta(days=35),
        )
    with sessions() as session:
        bindings = binding_rows.bindings_for(session, REF_A, NOW)
        assert [(b.subject_kid, b.binding_token) for b in bindings] == [("kid-1", "t2")]
        assert binding_rows.bindings_for(session, REF_B, NOW) == []
        with pytest.raises(InvalidInput, match="subject reference must be 64 hex digits"):
            binding_rows.bindings_for(session, "abc", NOW)


# --- grants -----------------------------------------------------------------


def test_use_grant_counts_to_max_then_refuses(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        _grant(session, max_uses=2)
    for _ in range(2):
        with sessions.begin() as session:
            grant_rows.use_grant(session, "g1", NOW)
    with sessions.begin() as session:
        with pytest.raises(ResourceExhausted, match="grant g1 allowed 2 uses, all used") as caught:
            grant_rows.use_grant(session, "g1", NOW)
        assert caught.value.retry_after is None
    with sessions() as session:
        assert grant_rows.get_grant(session, "g1").uses == 2


def test_concurrent_uses_never_exceed_max_uses(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        _grant(session, max_uses=10)

    def use_once(_: int) -> bool:
        try:
            with sessions.begin() as session:
                grant_rows.use_grant(session, "g1", NOW)
        except ResourceExhausted:
            return False
        return True

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(use_once, range(40)))
    assert outcomes.count(True) == 10
    with sessions() as session:
        assert grant_rows.get_grant(session, "g1").uses == 10


def test_use_grant_refuses_revoked_expired_early_and_unknown(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as session:
        _grant(session, "g1")
        _grant(session, "g2")
        grant_rows.revoke_grant(session, "g1", subject_ref_hex=REF_A, now=NOW + timedelta(hours=1))
    with sessions.begin() as session:
        with pytest.raises(Revoked, match="grant g1 was revoked at 2026-11-28T11:00:00Z"):
            grant_rows.use_grant(session, "g1", NOW + timedelta(hours=2))
        with pytest.raises(
            Expired,
            match=r"grant g2 expired at 2026-12-28T10:00:00Z \(now 2026-12-28T10:00:00Z\)",
        ):
            grant_rows.use_grant(session, "g2", NOW + timedelta(days=30))
        with pytest.raises(NotYetValid, match="grant g2 is valid from 2026-11-28T10:00:00Z"):
            grant_rows.use_grant(session, "g2", NOW - timedelta(seconds=1))
        with pytest.raises(NotFound, match="no grant 'g9'"):
            grant_rows.use_grant(session, "g9", NOW)
    with sessions() as session:
        assert [g.uses for g in grant_rows.grants_for_subject(session, REF_A)] == [0, 0]


def test_mandate_without_max_uses_is_unlimited_within_validity(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as session:
        _grant(session, "m1", kind="mandate", max_uses=None)
        for _ in range(50):
            grant_rows.use_grant(session, "m1", NOW + timedelta(days=1))
        with pytest.raises(Expired, match="grant m1 expired"):
            grant_rows.use_grant(session, "m1", NOW + timedelta(days=31))
    with sessions() as session:
        mandate = grant_rows.get_grant(session, "m1")
        assert (mandate.uses, mandate.max_uses) == (50, None)
        assert mandate.legal_basis == "Act 12 s.4 / case 2026-77"


def test_add_grant_refuses_duplicates_and_bad_input(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        _grant(session, "g1")
        with pytest.raises(AlreadyExists, match="grant 'g1' exists already"):
            _grant(session, "g1")
        with pytest.raises(InvalidInput, match="grant kind must be one of consent, mandate"):
            _grant(session, "g2", kind="gift")
        with pytest.raises(InvalidInput, match="at least 1 use, got max_uses=0"):
            _grant(session, "g2", max_uses=0)
    with sessions() as session:
        grant = grant_rows.get_grant(session, "g1")
        assert grant.scope_names == ("credit",)
        with pytest.raises(NotFound, match="no grant 'g2'"):
            grant_rows.get_grant(session, "g2")


def test_revoke_grant_of_another_subject_is_not_found_and_changes_nothing(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as session:
        _grant(session, "g1", subject=REF_A)
    with sessions.begin() as session:
        with pytest.raises(NotFound, match="no grant 'g1' for this subject"):
            grant_rows.revoke_grant(session, "g1", subject_ref_hex=REF_B, now=NOW)
        with pytest.raises(NotFound, match="no grant 'g9' for this subject"):
            grant_rows.revoke_grant(session, "g9", subject_ref_hex=REF_A, now=NOW)
    with sessions.begin() as session:
        assert grant_rows.get_grant(session, "g1").revoked_at is None
        grant_rows.use_grant(session, "g1", NOW)
        assert grant_rows.grants_for_subject(session, REF_B) == []


def test_a_subject_cannot_revoke_a_mandate_nor_learn_of_it(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as session:
        _grant(session, "m1", kind="mandate", max_uses=None)
    with sessions.begin() as session, pytest.raises(NotFound, match="no grant 'm1' for this"):
        grant_rows.revoke_grant(session, "m1", subject_ref_hex=REF_A, now=NOW)
    with sessions.begin() as session:
        assert grant_rows.get_grant(session, "m1").revoked_at is None
        grant_rows.use_grant(session, "m1", NOW + timedelta(hours=1))


def test_revoking_twice_keeps_the_first_time(sessions: sessionmaker[Session]) -> None:
    first, second = NOW + timedelta(hours=1), NOW + timedelta(hours=2)
    with sessions.begin() as session:
        _grant(session, "g1")
    with sessions.begin() as session:
        assert grant_rows.revoke_grant(session, "g1", subject_ref_hex=REF_A, now=first) == first
    with sessions.begin() as session:
        assert grant_rows.revoke_grant(session, "g1", subject_ref_hex=REF_A, now=second) == first
    with sessions() as session:
        assert grant_rows.get_grant(session, "g1").revoked_at == first


# --- transparency log -------------------------------------------------------


def test_log_indexes_are_dense_from_zero(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        assert transparency.log_size(session) == 0
    with sessions.begin() as session:
        assert [_append(session, f"q{i}") for i in range(3)] == [0, 1, 2]
    with sessions.begin() as session:
        assert _append(session, "q3") == 3
    with sessions() as session:
        assert transparency.log_size(session) == 4
        entry = log_entry(session, 2)
        assert (entry.query_id, entry.kind_values, entry.outcome) == ("q2", (1, 2), "dispatched")
        with pytest.raises(NotFound, match="no log entry at index 4: the log has 4 entries"):
            log_entry(session, 4)


def test_concurrent_appends_get_distinct_dense_indexes(sessions: sessionmaker[Session]) -> None:
    def append_batch(worker: int) -> list[int]:
        indexes = []
        for i in range(25):
            with sessions.begin() as session:
                indexes.append(_append(session, f"w{worker}-q{i}"))
        return indexes

    with ThreadPoolExecutor(max_workers=4) as pool:
        batches = list(pool.map(append_batch, range(4)))
    assert sorted(idx for batch in batches for idx in batch) == list(range(100))
    assert all(batch == sorted(batch) for batch in batches)


def test_log_refuses_a_second_entry_for_a_query_or_commitment(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as session:
        _append(session, "q0")
        with pytest.raises(AlreadyExists, match="log entry 0 already holds query q0"):
            _append(session, "q0")
        with pytest.raises(InvalidInput, match="subject reference must be 32 bytes, got 3"):
            _append(session, "q1", subject_ref=b"abc")
        # Nothing was taken by the refusals: the next index is still 1.
        assert _append(session, "q1") == 1


def test_rolled_back_append_frees_its_index(sessions: sessionmaker[Session]) -> None:
    with sessions() as session, session.begin():
        _append(session, "q0")
        session.rollback()
    with sessions.begin() as session:
        assert _append(session, "q1") == 0


def test_embargoed_entries_are_hidden_until_the_embargo_ends(
    sessions: sessionmaker[Session],
) -> None:
    ref, other = b"\x07" * 32, b"\x08" * 32
    embargo = NOW + timedelta(days=10)
    with sessions.begin() as session:
        _append(session, "q0", subject_ref=ref)
        _append(session, "q1", subject_ref=ref, embargo_until=embargo)
        _append(session, "q2", subject_ref=other)
        _append(session, "q3", subject_ref=ref)
    with sessions() as session:
        seen = entries_for_subject(session, ref, NOW)
        assert [e.idx for e in seen] == [0, 3]
        assert [e.idx for e in entries_for_subject(session, ref, embargo)] == [0, 1, 3]


# --- distinct subjects per day ------------------------------------------------


def test_distinct_subjects_per_day(sessions: sessionmaker[Session]) -> None:
    a, b, c = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32
    with sessions.begin() as session:
        assert note_subject_use(session, "company-x", "2026-11-28", a) == 1
        assert note_subject_use(session, "company-x", "2026-11-28", a) == 1
        assert note_subject_use(session, "company-x", "2026-11-28", b) == 2
        # Another requester and another day count on their own.
        assert note_subject_use(session, "company-y", "2026-11-28", a) == 1
        assert note_subject_use(session, "company-x", "2026-11-29", a) == 1
        assert note_subject_uses(session, "company-x", "2026-11-28", [a, c, c]) == 3
    with sessions.begin() as session:
        assert prune_subject_usage(session, "2026-11-29") == 4
        assert note_subject_uses(session, "company-x", "2026-11-29", []) == 1
        assert note_subject_uses(session, "company-x", "2026-11-28", []) == 0, "pruned too"
        with pytest.raises(ValueError, match="day must be YYYY-MM-DD"):
            note_subject_use(session, "company-x", "28/11/2026", a)


def test_expired_entries_lose_their_content_but_not_their_leaves(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as session:
        for index in range(5):
            _append(session, f"old-{index}")
        log_key = SigningKey.generate()
        head_before = transparency.tree_head(
            session, log_key=log_key, origin="credence/test/log", now=NOW
        )
    commitment = hashlib.sha256(b"commitment old-2").digest()
    with sessions.begin() as session:
        assert erase_expired(session, NOW + timedelta(seconds=1)) == 5
        assert erase_expired(session, NOW + timedelta(seconds=1)) == 0
    with sessions() as session:
        entry = log_entry(session, 2)
        assert (entry.requester, entry.basis, entry.grant_id) == ("", "", "")
        assert entry.subject_ref == bytes(32)
        assert entry.salt == bytes(16)
        assert entry.commitment == commitment, "the leaf stays"
        assert entries_for_subject(session, b"\x01" * 32, NOW) == []
        index, path = transparency.inclusion_proof(session, commitment, 5)
        root = merkle.root(transparency.SqlSubtrees(session), 5)
    merkle.verify_inclusion(merkle.leaf_hash(commitment), index, 5, path, root)
    checkpoint, _ = open_checkpoint(head_before, "credence/test/log", log_key.public.raw())
    assert (checkpoint.size, checkpoint.root_hash) == (5, root), "the head from before stays valid"
