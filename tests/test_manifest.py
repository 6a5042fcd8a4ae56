"""Tests for credence.manifest: the signed federation manifest and TUF's update rules."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.protobuf import duration_pb2, timestamp_pb2

from credence.envelope import Envelope, sign
from credence.errors import (
    BadSignature,
    Expired,
    InvalidInput,
    MessageTooLarge,
    NotFound,
    NotYetValid,
    PermissionDenied,
    RolledBack,
    UnknownKey,
    WrongAudience,
    WrongPayloadType,
)
from credence.keys import KeySet, SigningKey
from credence.manifest import (
    MANIFEST_CLOCK_SKEW,
    MANIFEST_PAYLOAD_TYPE,
    TrustedManifest,
    next_trusted_root,
    sign_manifest,
    verify_manifest,
)
from credence.transparency.checkpoint import log_origin
from credence.transparency.log_audit import LogIdentity
from credence.transparency.note import ED25519_TYPE, vkey
from credence.v1 import common_pb2, manifest_pb2

NOW = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
FEDERATION = "credence-test"


def _key(n: int) -> SigningKey:
    return SigningKey.from_seed(bytes([n]) * 32)


# Root keys A, B, C; the registry's signing key; members' keys.
KEYS = {name: _key(n) for n, name in enumerate("ABC", start=1)}
OUTSIDER = _key(9)
REGISTRY_KEY = _key(10)
AGENCY_A_KEY = _key(11)
AGENCY_A_OLD_KEY = _key(12)
AGENCY_B_KEY = _key(13)
BANK_KEY = _key(14)
AUTHORITY_KEY = _key(15)

Build = Callable[..., manifest_pb2.Manifest]


def public(key: SigningKey) -> common_pb2.PublicKey:
    return common_pb2.PublicKey(kid=key.kid, ed25519=key.public.raw())


def timestamp(when: datetime) -> timestamp_pb2.Timestamp:
    value = timestamp_pb2.Timestamp()
    value.FromDatetime(when)
    return value


def roots(*names: str) -> KeySet:
    return KeySet(KEYS[name].public for name in names)


def make_manifest(
    *,
    version: int = 1,
    root_names: tuple[str, ...] = ("A",),
    threshold: int = 1,
    issued_at: datetime = NOW - timedelta(hours=1),
    expires_at: datetime = NOW + timedelta(days=7),
    federation_id: str = FEDERATION,
    revoked_kids: tuple[str, ...] = (),
    revoked_serials: tuple[str, ...] = (),
    suspended: tuple[str, ...] = (),
) -> manifest_pb2.Manifest:
    """A realistic manifest: registry, two agencies, a bank, an authority, scorecard, policies."""
    active = manifest_pb2.MEMBER_STATE_ACTIVE
    members = [
        manifest_pb2.Member(
            member_id="agency-a",
            display_name="Agency A",
            role=manifest_pb2.ROLE_AGENCY,
            state=active,
            endpoint="agency-a.example:7443",
            signing_keys=[public(AGENCY_A_KEY), public(AGENCY_A_OLD_KEY)],
            record_kinds=["court_judgment", "loan_default", "late_payment"],
            contributes=[common_pb2.VERDICT_KIND_BLACKLIST, common_pb2.VERDICT_KIND_CREDIT],
        ),
        manifest_pb2.Member(
            member_id="agency-b",
            display_name="Agency B",
            role=manifest_pb2.ROLE_AGENCY,
            state=active,
            endpoint="agency-b.example:7443",
            signing_keys=[public(AGENCY_B_KEY)],
            record_kinds=["payment_history"],
            contributes=[common_pb2.VERDICT_KIND_CREDIT],
        ),
        manifest_pb2.Member(
            member_id="acme-bank",
            display_name="Acme Bank",
            role=manifest_pb2.ROLE_COMPANY,
            state=active,
            signing_keys=[public(BANK_KEY)],
            identity_verifier=True,
            allowed_purposes=[common_pb2.PURPOSE_CREDIT_ASSESSMENT],
            allowed_kinds=[common_pb2.VERDICT_KIND_BLACKLIST, common_pb2.VERDICT_KIND_CREDIT],
        ),
        manifest_pb2.Member(
            member_id="tax-authority",
            display_name="Tax Authority",
            role=manifest_pb2.ROLE_AUTHORITY,
            state=active,
            signing_keys=[public(AUTHORITY_KEY)],
            allowed_purposes=[common_pb2.PURPOSE_LEGAL_MANDATE],
            allowed_kinds=[common_pb2.VERDICT_KIND_BLACKLIST],
        ),
    ]
    for member in members:
        if member.member_id in suspended:
            member.state = manifest_pb2.MEMBER_STATE_SUSPENDED
    scorecard = manifest_pb2.Scorecard(
        version="2026.1",
        base_points=650,
        min_score=350,
        max_score=950,
        required_agencies=2,
        characteristics=[
            manifest_pb2.ScoreCharacteristic(
                name="loan_defaults_5y",
                measure="count",
                record_kinds=["loan_default"],
                lookback_days=1825,
                bins=[
                    manifest_pb2.ScoreBin(lower=0, upper=1, points=0),
                    manifest_pb2.ScoreBin(lower=1, points=-150, reason_code="D01"),
                ],
            ),
            manifest_pb2.ScoreCharacteristic(
                name="on_time_payments_2y",
                measure="count",
                record_kinds=["payment_history"],
                lookback_days=730,
                bins=[
                    manifest_pb2.ScoreBin(lower=0, upper=12, points=0, reason_code="P01"),
                    manifest_pb2.ScoreBin(lower=12, points=60),
                ],
            ),
        ],
        bands=[manifest_pb2.ScoreBand(lower=350, upper=949, name="any")],
        reason_texts={"D01": "a loan default", "P01": "short payment history"},
    )
    return manifest_pb2.Manifest(
        federation_id=federation_id,
        version=version,
        issued_at=timestamp(issued_at),
        expires_at=timestamp(expires_at),
        root_keys=[public(KEYS[name]) for name in root_names],
        root_threshold=threshold,
        registry=manifest_pb2.RegistryInfo(
            member_id="registry",
            endpoint="registry.example:7443",
            signing_keys=[public(REGISTRY_KEY)],
            ca_cert_pem="-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----\n",
            log_id="log-1",
        ),
        members=members,
        scorecard=scorecard,
        purpose_policies=[
            manifest_pb2.PurposePolicy(
                purpose=common_pb2.PURPOSE_CREDIT_ASSESSMENT,
                max_validity=duration_pb2.Duration(seconds=30 * 86400),
                max_uses=3,
                kinds=[common_pb2.VERDICT_KIND_BLACKLIST, common_pb2.VERDICT_KIND_CREDIT],
            ),
            manifest_pb2.PurposePolicy(
                purpose=common_pb2.PURPOSE_COUNTERPARTY_VERIFICATION,
                max_validity=duration_pb2.Duration(seconds=86400),
                max_uses=1,
                kinds=[common_pb2.VERDICT_KIND_BLACKLIST],
            ),
        ],
        revoked_serials=list(revoked_serials),
        revoked_kids=list(revoked_kids),
    )


@pytest.fixture
def build() -> Build:
    return make_manifest


def raw_sign(manifest: manifest_pb2.Manifest, *names: str) -> Envelope:
    """Sign without sign_manifest's checks: what an attacker or a buggy registry sends."""
    payload = manifest.SerializeToString(deterministic=True)
    if not names:
        return Envelope(MANIFEST_PAYLOAD_TYPE, payload, ())
    return sign(MANIFEST_PAYLOAD_TYPE, payload, [KEYS[name] for name in names])


def first_use(envelope: Envelope, now: datetime = NOW, **kwargs: Any) -> TrustedManifest:
    """Verify the way a node does with only the root key from its configuration."""
    return verify_manifest(envelope, trusted_root=roots("A"), threshold=1, now=now, **kwargs)


def after(held: TrustedManifest, envelope: Envelope, now: datetime = NOW) -> TrustedManifest:
    """Verify the next manifest; the config pin (A) is passed as a node always does."""
    return verify_manifest(envelope, trusted_root=roots("A"), threshold=1, now=now, held=held)


# --- happy path -------------------------------------------------------------


def test_verified_manifest_exposes_its_content(build: Build) -> None:
    envelope = sign_manifest(
        build(revoked_serials=("1F2e",), revoked_kids=(AGENCY_A_OLD_KEY.kid,)), [KEYS["A"]]
    )

    manifest = first_use(envelope)

    assert manifest.federation_id == FEDERATION
    assert manifest.version == 1
    assert manifest.issued_at == NOW - timedelta(hours=1)
    assert manifest.expires_at == NOW + timedelta(days=7)
    assert set(manifest.root_keys) == {KEYS["A"].kid}
    assert manifest.signed_by == (KEYS["A"].kid,)
    assert set(manifest.registry_keys) == {REGISTRY_KEY.kid}
    assert manifest.registry.endpoint == "registry.example:7443"
    assert manifest.member("acme-bank").role_name == "company"
    assert [m.member_id for m in manifest.contributors(common_pb2.VERDICT_KIND_CREDIT)] == [
        "agency-a",
        "agency-b",
    ]
    assert [m.member_id for m in manifest.contributors(common_pb2.VERDICT_KIND_BLACKLIST)] == [
        "agency-a"
    ]
    assert set(manifest.identity_verifier_keys()) == {BANK_KEY.kid}
    assert manifest.key_owner(AGENCY_B_KEY.kid) == "agency-b"
    assert manifest.key_owner(REGISTRY_KEY.kid) == "registry"
    policy = manifest.purpose_policy(common_pb2.PURPOSE_CREDIT_ASSESSMENT)
    assert (policy.max_validity, policy.max_uses) == (timedelta(days=30), 3)
    assert policy.kinds == {common_pb2.VERDICT_KIND_BLACKLIST, common_pb2.VERDICT_KIND_CREDIT}
    assert [c.name for c in manifest.scorecard.characteristics] == [
        "loan_defaults_5y",
        "on_time_payments_2y",
    ]
    assert manifest.is_revoked_serial(0x1F2E)
    assert not manifest.is_revoked_serial(0x1F2F)
    assert manifest.revoked_serials == {0x1F2E}


def test_reserved_bytes_verify_again_to_the_same_manifest(build: Build) -> None:
    held = first_use(sign_manifest(build(), [KEYS["A"]]))

    again = first_use(Envelope.from_bytes(held.envelope_bytes))

    assert again.payload == held.payload
    assert again.envelope == held.envelope


def test_scorecard_copy_cannot_change_the_held_manifest(build: Build) -> None:
    manifest = first_use(sign_manifest(build(), [KEYS["A"]]))

    manifest.scorecard.base_points = 0

    assert manifest.scorecard.base_points == 650


def test_newer_version_replaces_held(build: Build) -> None:
    held = first_use(sign_manifest(build(version=1), [KEYS["A"]]))

    newer = after(held, sign_manifest(build(version=2), [KEYS["A"]]))

    assert newer.version == 2


def test_same_bytes_again_returns_held(build: Build) -> None:
    envelope = sign_manifest(build(version=4), [KEYS["A"]])
    held = first_use(envelope)

    assert after(held, Envelope.from_bytes(envelope.to_bytes())) is held


# --- signatures -------------------------------------------------------------


def test_unsigned_refused(build: Build) -> None:
    with pytest.raises(BadSignature, match="unsigned"):
        first_use(raw_sign(build()))


def test_signed_by_non_root_key_refused(build: Build) -> None:
    envelope = sign(
        MANIFEST_PAYLOAD_TYPE, build().SerializeToString(deterministic=True), [OUTSIDER]
    )

    with pytest.raises(UnknownKey, match=f"not trusted: {OUTSIDER.kid}"):
        first_use(envelope)


def test_signed_by_registry_signing_key_refused(build: Build) -> None:
    # The registry's everyday key signs queries and verdicts, never the manifest.
    envelope = sign(
        MANIFEST_PAYLOAD_TYPE, build().SerializeToString(deterministic=True), [REGISTRY_KEY]
    )

    with pytest.raises(UnknownKey, match="not trusted"):
        first_use(envelope)


def test_tampered_payload_refused(build: Build) -> None:
    envelope = sign_manifest(build(), [KEYS["A"]])
    tampered = build(suspended=("agency-b",)).SerializeToString(deterministic=True)

    with pytest.raises(BadSignature, match=f"does not verify under key {KEYS['A'].kid}"):
        first_use(dataclasses.replace(envelope, payload=tampered))


def test_other_payload_type_refused(build: Build) -> None:
    payload = build().SerializeToString(deterministic=True)
    envelope = sign("application/vnd.credence.query.v1+proto", payload, [KEYS["A"]])

    with pytest.raises(WrongPayloadType, match=r"expected 'application/vnd\.credence\.manifest"):
        first_use(envelope)


def test_threshold_two_of_three_needs_two_signatures(build: Build) -> None:
    manifest = build(root_names=("A", "B", "C"), threshold=2)
    pinned = roots("A", "B", "C")

    with pytest.raises(BadSignature, match="1 of 2 required signatures"):
        verify_manifest(raw_sign(manifest, "A"), trusted_root=pinned, threshold=2, now=NOW)
    trusted = verify_manifest(
        raw_sign(manifest, "A", "C"), trusted_root=pinned, threshold=2, now=NOW
    )
    assert set(trusted.signed_by) == {KEYS["A"].kid, KEYS["C"].kid}


def test_held_threshold_governs_the_next_manifest(build: Build) -> None:
    pinned = roots("A", "B", "C")
    held = verify_manifest(
        raw_sign(build(root_names=("A", "B", "C"), threshold=2), "A", "B"),
        trusted_root=pinned,
        threshold=2,
        now=NOW,
    )
    next_manifest = build(version=2, root_names=("A", "B", "C"), threshold=2)

    assert next_trusted_root(held) == (held.root_keys, 2)
    with pytest.raises(BadSignature, match="1 of 2 required signatures"):
        verify_manifest(
            raw_sign(next_manifest, "C"), trusted_root=pinned, threshold=1, now=NOW, held=held
        )


def test_oversized_payload_refused_before_parsing(build: Build) -> None:
    envelope = sign_manifest(build(), [KEYS["A"]])

    with pytest.raises(MessageTooLarge, match="the limit is 100"):
        first_use(envelope, max_size=100)


def test_pinned_threshold_must_fit_the_pinned_keys(build: Build) -> None:
    envelope = sign_manifest(build(), [KEYS["A"]])

    with pytest.raises(ValueError, match="between 1 and the 1 pinned root keys"):
        verify_manifest(envelope, trusted_root=roots("A"), threshold=2, now=NOW)


# --- time and versions ------------------------------------------------------


def test_expired_refused(build: Build) -> None:
    envelope = sign_manifest(build(expires_at=NOW), [KEYS["A"]])

    with pytest.raises(
        Expired,
        match=r"manifest version 1 expired at 2026-11-28T10:00:00Z \(now 2026-11-28T10:00:00Z\)",
    ):
        first_use(envelope)


def test_held_manifest_served_again_after_expiry_refused(build: Build) -> None:
    # A freeze attack: the mirror keeps serving the last manifest past its expiry.
    envelope = sign_manifest(build(expires_at=NOW + timedelta(hours=1)), [KEYS["A"]])
    held = first_use(envelope)

    with pytest.raises(Expired, match="expired at 2026-11-28T11:00:00Z"):
        after(held, envelope, now=NOW + timedelta(hours=2))


def test_issued_in_the_future_refused(build: Build) -> None:
    issued = NOW + MANIFEST_CLOCK_SKEW + timedelta(seconds=1)
    envelope = sign_manifest(build(issued_at=issued), [KEYS["A"]])

    with pytest.raises(NotYetValid, match=r"issued at 2026-11-28T10:05:01Z, in the future"):
        first_use(envelope)


def test_issued_within_clock_skew_accepted(build: Build) -> None:
    envelope = sign_manifest(build(issued_at=NOW + MANIFEST_CLOCK_SKEW), [KEYS["A"]])

    assert first_use(envelope).issued_at == NOW + MANIFEST_CLOCK_SKEW


def test_rollback_to_older_version_refused(build: Build) -> None:
    held = first_use(sign_manifest(build(version=5), [KEYS["A"]]))

    with pytest.raises(RolledBack, match="manifest version 3 is older than the held version 5"):
        after(held, sign_manifest(build(version=3), [KEYS["A"]]))


def test_same_version_different_content_refused(build: Build) -> None:
    held = first_use(sign_manifest(build(version=5), [KEYS["A"]]))
    fork = sign_manifest(build(version=5, suspended=("agency-a",)), [KEYS["A"]])

    with pytest.raises(RolledBack, match="version 5 differs from the held manifest"):
        after(held, fork)


def test_other_federation_refused(build: Build) -> None:
    held = first_use(sign_manifest(build(version=1), [KEYS["A"]]))
    other = sign_manifest(build(version=2, federation_id="elsewhere"), [KEYS["A"]])

    with pytest.raises(WrongAudience, match=r"federation 'elsewhere'.*'credence-test'"):
        after(held, other)


# --- root rotation ----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    new_roots: tuple[str, ...]
    threshold: int
    signed_by: tuple[str, ...]
    expect: type[Exception] | None
    match: str = ""
    version: int = 6
    expired: bool = False


ROTATIONS = [
    Case("same root", ("A",), 1, ("A",), None),
    Case("old and new sign", ("B",), 1, ("A", "B"), None),
    Case("new and old sign, other order", ("B",), 1, ("B", "A"), None),
    Case("new keys did not sign", ("B",), 1, ("A",), BadSignature, "new root keys"),
    Case("old keys did not sign", ("B",), 1, ("B",), UnknownKey, "not trusted"),
    Case("nobody signed", ("B",), 1, (), BadSignature, "unsigned"),
    Case("outsider co-signs", ("B",), 1, ("A", "C"), BadSignature, "new root keys"),
    Case("add a key, raise threshold", ("A", "B"), 2, ("A", "B"), None),
    Case("add a key, one signs", ("A", "B"), 2, ("A",), BadSignature, "2 of its new root"),
    Case("two new, one signs", ("B", "C"), 2, ("A", "B"), BadSignature, "1 of 2 required"),
    Case("two new, both sign", ("B", "C"), 2, ("A", "B", "C"), None),
    Case("rotation expired", ("B",), 1, ("A", "B"), Expired, "expired at", expired=True),
    Case("rotation rolled back", ("B",), 1, ("A", "B"), RolledBack, "older than", version=4),
]


@pytest.mark.parametrize("case", ROTATIONS, ids=[case.name for case in ROTATIONS])
def test_root_rotation(build: Build, case: Case) -> None:
    held = first_use(sign_manifest(build(version=5), [KEYS["A"]]))
    expires = NOW - timedelta(minutes=1) if case.expired else NOW + timedelta(days=7)
    manifest = build(
        version=case.version,
        root_names=case.new_roots,
        threshold=case.threshold,
        issued_at=NOW - timedelta(hours=2),
        expires_at=expires,
    )
    envelope = raw_sign(manifest, *case.signed_by)

    if case.expect is None:
        rotated = after(held, envelope)
        assert set(rotated.root_keys) == {KEYS[name].kid for name in case.new_roots}
        assert rotated.root_threshold == case.threshold
    else:
        with pytest.raises(case.expect, match=case.match):
            after(held, envelope)


def test_old_root_alone_refused_after_rotation(build: Build) -> None:
    held = first_use(sign_manifest(build(version=1), [KEYS["A"]]))
    rotated = after(
        held, sign_manifest(build(version=2, root_names=("B",)), [KEYS["A"], KEYS["B"]])
    )

    # The node's configuration still pins A; the held manifest's root B governs.
    with pytest.raises(UnknownKey, match=f"not trusted: {KEYS['A'].kid}"):
        after(rotated, sign_manifest(build(version=3, root_names=("B",)), [KEYS["A"]]))
    assert (
        after(rotated, sign_manifest(build(version=3, root_names=("B",)), [KEYS["B"]])).version == 3
    )


def test_rotation_at_first_use_needs_the_new_keys_too(build: Build) -> None:
    manifest = build(root_names=("B",))

    with pytest.raises(BadSignature, match="new root keys"):
        first_use(raw_sign(manifest, "A"))
    assert set(first_use(raw_sign(manifest, "A", "B")).root_keys) == {KEYS["B"].kid}


# --- content checks ---------------------------------------------------------


def _refused(manifest: manifest_pb2.Manifest, match: str) -> None:
    """Both the signer and the verifier refuse the manifest, with the same reason."""
    with pytest.raises(InvalidInput, match=match):
        sign_manifest(manifest, [KEYS["A"]])
    with pytest.raises(InvalidInput, match=match):
        first_use(raw_sign(manifest, "A"))


def test_member_kid_mismatch_refused(build: Build) -> None:
    manifest = build()
    manifest.members[1].signing_keys[0].kid = AGENCY_A_KEY.kid

    _refused(manifest, f"names kid '{AGENCY_A_KEY.kid}', but the key's RFC 7638 thumbprint is")


def test_member_key_of_wrong_length_refused(build: Build) -> None:
    manifest = build()
    manifest.members[0].signing_keys[0].ed25519 = b"\x01" * 31

    _refused(manifest, "agency-a' signing_keys\\[0\\]: an Ed25519 public key is 32 bytes")


def test_duplicate_member_ids_refused(build: Build) -> None:
    manifest = build()
    manifest.members[1].member_id = "agency-a"

    _refused(manifest, "lists member 'agency-a' twice")


def test_key_shared_by_two_members_refused(build: Build) -> None:
    manifest = build()
    manifest.members[1].signing_keys.append(public(BANK_KEY))

    _refused(manifest, "listed for both 'agency-b' and 'acme-bank'")


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda m: setattr(m.members[0], "role", 99), "member 'agency-a' role has the unknown"),
        (lambda m: setattr(m.members[0], "state", 0), "state has the unknown or unspecified"),
        (
            lambda m: setattr(m.members[0], "state", manifest_pb2.MEMBER_STATE_PENDING),
            "is pending",
        ),
        (lambda m: m.members[0].contributes.append(0), "contributes has the unknown"),
        (lambda m: m.members[2].allowed_purposes.append(42), "allowed_purposes has the unknown"),
        (lambda m: m.members[2].contributes.append(1), "not an agency but lists"),
        (lambda m: setattr(m.members[0], "endpoint", ""), "agency but has no endpoint"),
        (lambda m: setattr(m.members[0], "member_id", "Agency A"), "member id 'Agency A'"),
        (lambda m: m.purpose_policies[0].kinds.append(7), "kinds has the unknown"),
        (lambda m: setattr(m.purpose_policies[1], "purpose", 2), "CREDIT_ASSESSMENT twice"),
        (lambda m: setattr(m.purpose_policies[0], "max_uses", 0), "positive max_validity"),
        (lambda m: m.revoked_serials.append("0x1f"), "'0x1f' is not 1-40 hex digits"),
        (lambda m: setattr(m, "federation_id", ""), "no federation_id"),
        (lambda m: setattr(m, "version", 0), "version must be at least 1"),
        (lambda m: m.ClearField("expires_at"), "needs both issued_at and expires_at"),
        (lambda m: m.ClearField("registry"), "no registry entry"),
        (lambda m: m.registry.ClearField("signing_keys"), "registry entry lists no signing keys"),
    ],
)
def test_malformed_content_refused(
    build: Build, mutate: Callable[[manifest_pb2.Manifest], object], match: str
) -> None:
    manifest = build()
    mutate(manifest)

    _refused(manifest, match)


def test_expiry_not_after_issue_refused(build: Build) -> None:
    _refused(
        build(issued_at=NOW, expires_at=NOW),
        "expires at 2026-11-28T10:00:00Z, not after it is issued at 2026-11-28T10:00:00Z",
    )


@pytest.mark.parametrize(
    ("root_names", "threshold", "match"),
    [
        (("A",), 0, "root_threshold 0 must be between 1 and the 1 root keys"),
        (("A",), 2, "root_threshold 2 must be between 1 and the 1 root keys"),
        ((), 1, "root_threshold 1 must be between 1 and the 0 root keys"),
    ],
)
def test_inconsistent_root_refused(
    build: Build, root_names: tuple[str, ...], threshold: int, match: str
) -> None:
    with pytest.raises(InvalidInput, match=match):
        sign_manifest(build(root_names=root_names, threshold=threshold), [KEYS["A"]])


def test_root_kid_mismatch_refused(build: Build) -> None:
    manifest = build()
    manifest.root_keys[0].kid = KEYS["B"].kid

    with pytest.raises(InvalidInput, match=r"root_keys\[0\] names kid"):
        sign_manifest(manifest, [KEYS["A"]])


def test_revoked_root_key_refused(build: Build) -> None:
    with pytest.raises(InvalidInput, match=r"lists revoked keys .* as root keys"):
        sign_manifest(build(revoked_kids=(KEYS["A"].kid,)), [KEYS["A"]])


def test_garbage_payload_signed_by_root_refused() -> None:
    envelope = sign(MANIFEST_PAYLOAD_TYPE, b"\xff\xff\xff", [KEYS["A"]])

    with pytest.raises(InvalidInput, match=r"not a credence\.v1\.Manifest"):
        first_use(envelope)


# --- members, keys, revocation ----------------------------------------------


def test_unknown_member_not_found(build: Build) -> None:
    manifest = first_use(sign_manifest(build(), [KEYS["A"]]))

    with pytest.raises(NotFound, match="member 'nobody' is not in federation manifest version 1"):
        manifest.member("nobody")
    with pytest.raises(UnknownKey, match="belongs to no member"):
        manifest.key_owner(OUTSIDER.kid)


def test_suspended_member_refused_by_active_member(build: Build) -> None:
    manifest = first_use(sign_manifest(build(suspended=("agency-b", "acme-bank")), [KEYS["A"]]))

    with pytest.raises(PermissionDenied, match="member 'agency-b' is suspended"):
        manifest.active_member("agency-b")
    with pytest.raises(PermissionDenied, match="member 'agency-b' is suspended"):
        manifest.member_keys("agency-b")
    assert manifest.member("agency-b").state == manifest_pb2.MEMBER_STATE_SUSPENDED
    assert set(manifest.member_keys("agency-b", allow_suspended=True)) == {AGENCY_B_KEY.kid}
    assert [m.member_id for m in manifest.contributors(common_pb2.VERDICT_KIND_CREDIT)] == [
        "agency-a"
    ]
    assert len(manifest.identity_verifier_keys()) == 0
    assert manifest.active_member("agency-a").member_id == "agency-a"


def test_revoked_kid_excluded_from_member_keys(build: Build) -> None:
    manifest = first_use(
        sign_manifest(build(revoked_kids=(AGENCY_A_OLD_KEY.kid, REGISTRY_KEY.kid)), [KEYS["A"]])
    )

    keys = manifest.member_keys("agency-a")

    assert set(keys) == {AGENCY_A_KEY.kid}
    with pytest.raises(UnknownKey, match=AGENCY_A_OLD_KEY.kid):
        keys.resolve(AGENCY_A_OLD_KEY.kid)
    assert len(manifest.registry_keys) == 0
    assert len(manifest.member("agency-a").signing_keys) == 2


def test_unknown_purpose_policy_not_found(build: Build) -> None:
    manifest = first_use(sign_manifest(build(), [KEYS["A"]]))

    with pytest.raises(NotFound, match="purpose PURPOSE_TENANCY_SCREENING has no policy"):
        manifest.purpose_policy(common_pb2.PURPOSE_TENANCY_SCREENING)


def test_trusted_manifest_is_frozen(build: Build) -> None:
    manifest = first_use(sign_manifest(build(), [KEYS["A"]]))

    with pytest.raises(dataclasses.FrozenInstanceError):
        manifest.version = 9  # type: ignore[misc]
    with pytest.raises(TypeError):
        manifest.members["x"] = manifest.member("agency-a")  # type: ignore[index]


# --- the log's origin and note verifier key -----------------------------------


def test_the_manifest_names_the_logs_origin_and_vkey(build: Build) -> None:
    manifest = build()
    manifest.registry.log_id = REGISTRY_KEY.kid
    origin = log_origin(FEDERATION)
    manifest.registry.log_origin = origin
    manifest.registry.log_vkey = vkey(origin, ED25519_TYPE, REGISTRY_KEY.public.raw())
    held = first_use(raw_sign(manifest, "A"))
    assert held.registry.log_origin == "credence/credence-test/log"
    log = LogIdentity.from_manifest(held)
    assert (log.origin, log.public_key) == (origin, REGISTRY_KEY.public.raw())
    assert log.vkey == manifest.registry.log_vkey
    # Left unset, the origin is still the federation's.
    assert first_use(raw_sign(build(), "A")).registry.log_origin == origin


def test_a_log_origin_or_vkey_that_disagrees_is_refused(build: Build) -> None:
    # A registry hoping nodes accept checkpoints of another log, or under another key.
    other_origin = build()
    other_origin.registry.log_origin = "credence/elsewhere/log"
    with pytest.raises(InvalidInput, match=r"registry\.log_origin 'credence/elsewhere/log' is not"):
        first_use(raw_sign(other_origin, "A"))
    other_key = build()
    other_key.registry.log_id = REGISTRY_KEY.kid
    other_key.registry.log_vkey = vkey(log_origin(FEDERATION), ED25519_TYPE, OUTSIDER.public.raw())
    with pytest.raises(InvalidInput, match="is not the note verifier key of the log key"):
        first_use(raw_sign(other_key, "A"))


def test_a_log_key_missing_from_the_registry_keys_names_no_log(build: Build) -> None:
    held = first_use(raw_sign(build(), "A"))  # log_id "log-1" is no registry key
    with pytest.raises(UnknownKey, match="log key 'log-1' is not among"):
        LogIdentity.from_manifest(held)
