"""The one grant check the registry and the nodes share, from the attacker's side."""

from __future__ import annotations

from datetime import timedelta

import pytest

from credence import queries
from credence.dev.offline_federation import NOW, REGISTRY_ID, Federation
from credence.errors import ClaimMismatch, CredenceError, PermissionDenied
from credence.grants import check, tokens
from credence.grants.cache import GrantCache
from credence.keys import KeySet
from credence.manifest import TrustedManifest, verify_manifest
from credence.subjects import SubjectRef, SubjectType
from credence.v1 import agency_pb2, common_pb2

BLACKLIST, CREDIT = common_pb2.VERDICT_KIND_BLACKLIST, common_pb2.VERDICT_KIND_CREDIT
COUNTERPARTY = common_pb2.PURPOSE_COUNTERPARTY_VERIFICATION
CREDIT_ASSESSMENT = common_pb2.PURPOSE_CREDIT_ASSESSMENT
ORG = SubjectRef(SubjectType.ORGANISATION, bytes(range(32)))
PERSON = SubjectRef(SubjectType.PERSON, bytes(range(1, 33)))


@pytest.fixture(scope="module")
def federation() -> Federation:
    federation = Federation.create()
    federation.identity_verifiers.add("idp")
    federation.enrol("idp")
    federation.enrol("acme")
    federation.authorities.add("tax-office")
    federation.enrol("tax-office")
    return federation


@pytest.fixture(scope="module")
def manifest(federation: Federation) -> TrustedManifest:
    return verify_manifest(
        federation.manifest_envelope(),
        trusted_root=KeySet([federation.root_key.public]),
        threshold=1,
        now=NOW,
    )


def _mandate(federation: Federation, subject: SubjectRef, embargo: timedelta) -> agency_pb2.Grant:
    terms = tokens.MandateTerms(
        subject_ref=subject.hex(),
        requester="tax-office",
        purpose="credit_assessment",
        scope=("credit",),
        legal_basis=tokens.LegalBasis("Tax Code s. 12", "2026-0042"),
        not_before=NOW - timedelta(minutes=1),
        expires_at=NOW + timedelta(days=30),
        embargo_until=NOW + embargo,
    )
    token = tokens.issue_mandate(
        terms,
        authority_id="tax-office",
        authority_key=federation.members["tax-office"].signing_key,
        now=NOW,
        max_embargo=timedelta(days=3650),
    )
    return agency_pb2.Grant(mandate_token=token)


@pytest.mark.parametrize(
    ("subject", "kinds", "purpose", "match"),
    [
        (PERSON, (BLACKLIST,), COUNTERPARTY, "a person is never looked up"),
        (ORG, (CREDIT,), COUNTERPARTY, "blacklist status only"),
        (ORG, (BLACKLIST, CREDIT), COUNTERPARTY, "blacklist status only"),
        (ORG, (BLACKLIST,), CREDIT_ASSESSMENT, "counterparty_verification only"),
    ],
)
def test_public_register_covers_an_organisations_blacklist_status_only(
    manifest: TrustedManifest,
    subject: SubjectRef,
    kinds: tuple[int, ...],
    purpose: int,
    match: str,
) -> None:
    asked = check.Asked.of("acme", purpose, kinds)
    grant = queries.public_register()
    rules = check.GrantRules.from_manifest(manifest)
    with pytest.raises(PermissionDenied, match=match):
        check.check_grant(grant, subject, asked, rules=rules, cache=GrantCache(), now=NOW)
    allowed = check.check_grant(
        grant, ORG, check.Asked.of("acme", COUNTERPARTY, (BLACKLIST,)), rules=rules,
        cache=GrantCache(), now=NOW,
    )  # fmt: skip
    assert (allowed.kind, allowed.grant_id) == ("public register", "")


def test_no_basis_is_refused(manifest: TrustedManifest) -> None:
    rules = check.GrantRules.from_manifest(manifest)
    with pytest.raises(PermissionDenied, match="no grant: a lookup needs the subject's consent"):
        check.check_grant(
            agency_pb2.Grant(),
            ORG,
            check.Asked.of("acme", COUNTERPARTY, (BLACKLIST,)),
            rules=rules,
            cache=GrantCache(),
            now=NOW,
        )


def test_a_node_refuses_a_mandate_embargoed_beyond_the_federation_bound(
    federation: Federation, manifest: TrustedManifest
) -> None:
    """The node checks the embargo too, with the bound it knows (90 days)."""
    rules = check.GrantRules.from_manifest(manifest)
    assert rules.max_embargo == tokens.DEFAULT_MAX_EMBARGO
    asked = check.Asked.of("tax-office", CREDIT_ASSESSMENT, (CREDIT,))
    cache = GrantCache()
    with pytest.raises(ClaimMismatch, match=r"embargo until .* is more than 90 days"):
        check.check_grant(
            _mandate(federation, PERSON, timedelta(days=91)),
            PERSON, asked, rules=rules, cache=cache, now=NOW,
        )  # fmt: skip
    allowed = check.check_grant(
        _mandate(federation, PERSON, timedelta(days=60)),
        PERSON, asked, rules=rules, cache=cache, now=NOW,
    )  # fmt: skip
    assert allowed.kind == "mandate"
    assert isinstance(allowed.grant, tokens.VerifiedMandate)


def test_the_registry_holds_mandates_to_its_own_tighter_limit(
    federation: Federation, manifest: TrustedManifest
) -> None:
    rules = check.GrantRules(
        manifest, check.GrantRules.from_manifest(manifest).fair_use, REGISTRY_ID,
        max_embargo=timedelta(days=30),
    )  # fmt: skip
    with pytest.raises(ClaimMismatch, match="more than 30 days"):
        check.check_grant(
            _mandate(federation, PERSON, timedelta(days=60)),
            PERSON,
            check.Asked.of("tax-office", CREDIT_ASSESSMENT, (CREDIT,)),
            rules=rules,
            cache=GrantCache(),
            now=NOW,
        )


def test_a_cached_grant_is_still_bound_to_the_query_and_still_revocable(
    federation: Federation, manifest: TrustedManifest
) -> None:
    grant, grant_id = federation.consent(PERSON, identity_member="idp", requester="acme")
    rules = check.GrantRules.from_manifest(manifest)
    asked = check.Asked.of("acme", CREDIT_ASSESSMENT, (CREDIT,))
    cache = GrantCache()
    first = check.check_grant(grant, PERSON, asked, rules=rules, cache=cache, now=NOW)
    assert (first.kind, first.grant_id) == ("consent", grant_id)
    assert cache.get(grant.consent_token, NOW) is not None

    other = SubjectRef(SubjectType.PERSON, bytes(range(2, 34)))
    with pytest.raises(ClaimMismatch, match="is for subject"):
        check.check_grant(grant, other, asked, rules=rules, cache=cache, now=NOW)

    revoked: list[str] = []

    def revoke(verified: tokens.Grant, _now: object) -> None:
        revoked.append(verified.grant_id)
        raise PermissionDenied(f"grant {verified.grant_id} was revoked")

    with pytest.raises(CredenceError, match=f"grant {grant_id} was revoked"):
        check.check_grant(
            grant, PERSON, asked, rules=rules, cache=cache, now=NOW, revocations=revoke
        )
    assert revoked == [grant_id]
