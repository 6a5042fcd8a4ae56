"""Keys, parties and token factories shared by the grant token tests."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from credence.encoding import b64url_decode
from credence.grants.tokens import (
    CONSENT_TYP,
    ConsentTerms,
    LegalBasis,
    MandateTerms,
    PurposePolicy,
    VerifiedConsent,
    countersign_consent,
    issue_binding,
    issue_mandate,
    sign_consent_request,
    verify_consent,
)
from credence.jws import sign_compact
from credence.keys import KeySet, SigningKey

NOW = datetime(2026, 11, 28, 10, 0, 0, tzinfo=UTC)
SUBJECT = hashlib.sha256(b"subject one").hexdigest()
OTHER_SUBJECT = hashlib.sha256(b"subject two").hexdigest()
REGISTRY_ID = "registry"
IDENTITY_ID = "bank-id"
REQUESTER = "acme-leasing"
AUTHORITY_ID = "tax-office"
PURPOSE = "counterparty-check"


def key(name: str) -> SigningKey:
    """A deterministic key per name, so failures reproduce."""
    return SigningKey.from_seed(hashlib.sha256(name.encode()).digest())


def claims_of(token: str) -> dict[str, Any]:
    """The payload of a compact JWS, unverified (tests only)."""
    value = json.loads(b64url_decode(token.split(".")[1]))
    assert isinstance(value, dict)
    return value


@dataclass(frozen=True)
class World:
    """A registry, an identity member, a subject and an authority with fixed keys."""

    registry: SigningKey = field(default_factory=lambda: key("registry"))
    identity: SigningKey = field(default_factory=lambda: key("identity"))
    subject: SigningKey = field(default_factory=lambda: key("subject one personal"))
    other_subject: SigningKey = field(default_factory=lambda: key("subject two personal"))
    authority: SigningKey = field(default_factory=lambda: key("authority"))
    policy: dict[str, PurposePolicy] = field(
        default_factory=lambda: {PURPOSE: PurposePolicy(timedelta(days=30), max_uses=5)}
    )

    @property
    def registry_keys(self) -> KeySet:
        return KeySet([self.registry.public])

    @property
    def identity_keys(self) -> KeySet:
        return KeySet([self.identity.public])

    @property
    def authority_keys(self) -> KeySet:
        return KeySet([self.authority.public])

    def binding(
        self,
        subject_ref: str = SUBJECT,
        personal: SigningKey | None = None,
        issuer_key: SigningKey | None = None,
        validity: timedelta = timedelta(days=365),
        now: datetime = NOW,
    ) -> str:
        return issue_binding(
            subject_ref_hex=subject_ref,
            subject_key=(personal or self.subject).public,
            member_id=IDENTITY_ID,
            member_key=issuer_key or self.identity,
            now=now,
            validity=validity,
        )

    def terms(self, now: datetime = NOW, **changes: Any) -> ConsentTerms:
        base = ConsentTerms(
            subject_ref=SUBJECT,
            requester=REQUESTER,
            purpose=PURPOSE,
            scope=("blacklist", "credit"),
            not_before=now,
            expires_at=now + timedelta(days=7),
            max_uses=3,
            data_life=timedelta(days=30),
        )
        return replace(base, **changes)

    def request(
        self,
        terms: ConsentTerms | None = None,
        personal: SigningKey | None = None,
        now: datetime = NOW,
    ) -> str:
        return sign_consent_request(terms or self.terms(), personal or self.subject, now)

    def consent(
        self,
        request: str | None = None,
        binding: str | None = None,
        now: datetime = NOW,
    ) -> str:
        return countersign_consent(
            request or self.request(),
            binding or self.binding(),
            registry_key=self.registry,
            registry_id=REGISTRY_ID,
            identity_keys=self.identity_keys,
            now=now,
            policy=self.policy,
        )

    def forge_consent(self, **overrides: Any) -> str:
        """A genuine consent re-signed by the registry with changed claims."""
        claims = {**claims_of(self.consent()), **overrides}
        return sign_compact(claims, self.registry, CONSENT_TYP)

    def verify(self, token: str, now: datetime = NOW, **options: Any) -> VerifiedConsent:
        kwargs: dict[str, Any] = {
            "registry_keys": self.registry_keys,
            "identity_keys": self.identity_keys,
            "expected_audience": REQUESTER,
            "now": now,
            "policy": self.policy,
            **options,
        }
        return verify_consent(token, **kwargs)

    def mandate_terms(self, now: datetime = NOW, **changes: Any) -> MandateTerms:
        base = MandateTerms(
            subject_ref=SUBJECT,
            requester=AUTHORITY_ID,
            purpose="tax-enforcement",
            scope=("credit",),
            legal_basis=LegalBasis(statute="Tax Procedure Act s. 93", case="TX-2026-0042"),
            not_before=now,
            expires_at=now + timedelta(days=14),
            embargo_until=now + timedelta(days=60),
        )
        return replace(base, **changes)

    def mandate(self, terms: MandateTerms | None = None, now: datetime = NOW) -> str:
        return issue_mandate(
            terms or self.mandate_terms(),
            authority_id=AUTHORITY_ID,
            authority_key=self.authority,
            now=now,
        )
