"""Grants at the registry: bindings, consents, mandates, revocation, and their use.

Every function takes the caller's session (the caller owns the transaction),
the current manifest and ``now``; none reads the clock or the network.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cached_property

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from central_registry.config import RegistryConfig
from central_registry.models import UsedSubjectProof
from central_registry.store import binding_rows, grant_rows
from credence import jws, names
from credence.errors import (
    AlreadyExists,
    InvalidInput,
    PermissionDenied,
    Replayed,
    Unavailable,
)
from credence.grants import consent as tokens_consent
from credence.grants import tokens
from credence.grants._claims import new_jti
from credence.grants.check import GrantRules, verify_authority_mandate
from credence.grants.subject_proofs import SubjectProof, verify_subject_proof
from credence.keys import KeySet, SigningKey, VerifyKey
from credence.manifest import TrustedManifest


@dataclass(frozen=True)
class GrantPolicy:
    """What grant checks need besides the token: the manifest and the fair-use rules."""

    manifest: TrustedManifest
    config: RegistryConfig

    def purpose_policies(self) -> dict[str, tokens.PurposePolicy]:
        """The fair-use caps in the form the token module checks."""
        return {
            name: tokens.PurposePolicy(max_validity=rules.max_validity, max_uses=rules.max_uses)
            for name, rules in self.config.purposes.items()
        }

    @cached_property
    def grant_rules(self) -> GrantRules:
        """The shared grant check's rules: the registry's own caps, id and embargo limit."""
        return GrantRules(
            manifest=self.manifest,
            fair_use=self.purpose_policies(),
            registry_id=self.config.member_id,
            max_embargo=self.config.max_embargo,
        )


def register_binding(
    session: Session, token: str, *, caller: str, policy: GrantPolicy, now: datetime
) -> tokens.VerifiedBinding:
    """Keep a binding of a subject's personal key, made by the calling identity member.

    Raises:
        PermissionDenied: the caller is not an active identity verifier, or the
            binding names another issuer than the caller.
        VerificationError: the binding does not verify under the caller's keys.
    """
    member = policy.manifest.active_member(caller)
    if not member.identity_verifier:
        raise PermissionDenied(f"{caller!r} is not an identity-verifying member")
    binding = tokens.verify_binding(
        token, identity_keys=policy.manifest.member_keys(caller), now=now
    )
    if binding.issuer != caller:
        raise PermissionDenied(f"binding is issued by {binding.issuer!r}, not by the caller")
    binding_rows.add_binding(
        session,
        subject_ref_hex=binding.subject_ref,
        subject_kid=binding.subject_key.kid,
        identity_member=caller,
        token=token,
        now=now,
        expires_at=binding.expires_at,
    )
    return binding


def issue_consent(
    session: Session,
    request_token: str,
    binding_token: str,
    *,
    caller: str,
    registry_key: SigningKey,
    policy: GrantPolicy,
    now: datetime,
) -> tuple[str, str]:
    """Countersign a subject's consent request once; returns (consent token, grant id).

    A request is countersigned at most once: submitting it again returns the
    grant already issued (same id, token, uses and revocation), so re-issuing
    never adds lookups nor undoes a revocation. Only the requester the subject
    named may have it countersigned.

    Raises:
        VerificationError: the request or binding does not verify.
        PermissionDenied: the caller is not the requester the subject named,
            the request goes beyond the purpose's fair-use caps, or asks for
            kinds the purpose does not allow.
        AlreadyExists: the subject signed another request with the same ``jti``.
        Unavailable: every attempt lost a race for a revocation-list index.
    """
    checked = tokens_consent.check_consent_request(
        request_token,
        binding_token,
        identity_keys=policy.manifest.identity_verifier_keys(),
        now=now,
        policy=policy.purpose_policies(),
    )
    terms, request_jti = checked.request.terms, checked.request.jti
    if terms.requester != caller:
        raise PermissionDenied(
            f"the subject's consent request names requester {terms.requester!r}; only that "
            f"member may have it countersigned, not {caller!r}"
        )
    _check_purpose_kinds(terms.purpose, terms.scope, policy)
    for _ in range(_INDEX_ATTEMPTS):
        if (issued := _issued_for(session, checked)) is not None:
            return issued
        grant_id = new_jti()
        status_index = grant_rows.next_status_index(session)
        token = tokens_consent.sign_consent(
            checked,
            registry_key=registry_key,
            registry_id=policy.config.member_id,
            now=now,
            jti=grant_id,
            status_index=status_index,
        )
        consent = tokens.verify_consent(
            token,
            registry_keys=KeySet([registry_key.public]),
            identity_keys=policy.manifest.identity_verifier_keys(),
            expected_audience=None,
            now=now,
            policy=policy.purpose_policies(),
        )
        try:
            grant_rows.add_grant(
                session,
                grant_id=grant_id,
                kind="consent",
                subject_ref_hex=consent.subject_ref,
                requester=consent.requester,
                purpose=consent.purpose,
                scope=consent.scope,
                issued_at=consent.issued_at,
                not_before=consent.not_before,
                expires_at=consent.expires_at,
                max_uses=consent.max_uses,
                data_life_seconds=int(consent.data_life.total_seconds()),
                token=token,
                request_jti=request_jti,
                status_index=status_index,
            )
        except AlreadyExists:
            # Another process countersigned this request (returned above on the
            # next pass) or took the index (try the next one).
            continue
        return token, grant_id
    raise Unavailable("consent issuing lost every race for a revocation-list index: retry")


# A lost race means another issue committed; a handful of attempts is plenty.
_INDEX_ATTEMPTS = 5


def _issued_for(
    session: Session, checked: tokens_consent.CheckedConsentRequest
) -> tuple[str, str] | None:
    terms = checked.request.terms
    grant = grant_rows.grant_for_request(session, terms.subject_ref, checked.request.jti)
    if grant is None:
        return None
    issued_request = _unverified_claims(grant.token, tokens.CONSENT_MAX_SIZE).get("req")
    if issued_request != checked.request_token:
        raise AlreadyExists(
            f"consent request {checked.request.jti!r} of this subject was countersigned "
            "before with other terms: the subject must sign a new request with a fresh jti"
        )
    return grant.token, grant.grant_id


def register_mandate(
    session: Session, token: str, *, caller: str, policy: GrantPolicy, now: datetime
) -> str:
    """Keep an authority's mandate so that lookups under it are logged and counted.

    Raises:
        PermissionDenied: the caller is not the authority that signed it.
        VerificationError: the mandate does not verify.
    """
    kid = jws.peek_header(token, max_size=tokens.MANDATE_MAX_SIZE).get("kid")
    if not isinstance(kid, str) or policy.manifest.key_owner(kid) != caller:
        raise PermissionDenied("only the authority that signed a mandate may register it")
    claims_aud = _unverified_claims(token, tokens.MANDATE_MAX_SIZE).get("aud")
    mandate = verify_authority_mandate(
        token,
        manifest=policy.manifest,
        requester=str(claims_aud),
        now=now,
        max_embargo=policy.config.max_embargo,
    )
    _check_purpose_kinds(mandate.purpose, mandate.scope, policy)
    grant_rows.add_grant(
        session,
        grant_id=mandate.grant_id,
        kind="mandate",
        subject_ref_hex=mandate.subject_ref,
        requester=mandate.requester,
        purpose=mandate.purpose,
        scope=mandate.scope,
        issued_at=mandate.issued_at,
        not_before=mandate.not_before,
        expires_at=mandate.expires_at,
        max_uses=None,
        data_life_seconds=None,
        token=token,
        legal_basis=f"{mandate.legal_basis.statute} / {mandate.legal_basis.case}",
        embargo_until=mandate.embargo_until,
    )
    return mandate.grant_id


def _unverified_claims(token: str, max_size: int) -> dict[str, object]:
    """Claims read before verification, only to find which keys verify the token."""
    return jws.parse_json_object(jws.parse_compact(token, max_size=max_size).payload, "token")


def _check_purpose_kinds(purpose: str, scope: tuple[str, ...], policy: GrantPolicy) -> None:
    rules = policy.config.purposes.get(purpose)
    if rules is None or purpose not in names.PURPOSE_NAMES:
        raise PermissionDenied(f"purpose {purpose!r} is not one this federation allows")
    if extra := sorted(set(scope) - rules.kinds):
        raise PermissionDenied(
            f"purpose {purpose} allows {', '.join(sorted(rules.kinds))}, not {', '.join(extra)}"
        )


def subject_keys(session: Session, subject_ref_hex: str, now: datetime) -> KeySet:
    """The personal keys currently bound to a subject."""
    keys = [
        _bound_key(binding.binding_token)
        for binding in binding_rows.bindings_for(session, subject_ref_hex, now)
    ]
    return KeySet(keys)


def _bound_key(binding_token: str) -> VerifyKey:
    # The binding verified when it was registered; only its subject key is read here.
    claims = _unverified_claims(binding_token, tokens.BINDING_MAX_SIZE)
    sjwk = claims.get("sjwk")
    if not isinstance(sjwk, dict):
        raise InvalidInput("stored binding lacks the subject key 'sjwk'")
    return VerifyKey.from_jwk(sjwk)


def check_subject_proof(
    session: Session, token: str, *, action: str, registry_id: str, now: datetime
) -> SubjectProof:
    """Verify a subject's proof against the keys bound to the subject it names.

    Raises:
        VerificationError: no bound key signed it, or it is stale, for another
            action, or for another registry.
        Replayed: the same proof was presented before.
    """
    claims = _unverified_claims(token, 4096)
    subject = claims.get("sub")
    if not isinstance(subject, str):
        raise InvalidInput("subject proof lacks 'sub'")
    proof = verify_subject_proof(
        token,
        subject_keys=subject_keys(session, subject, now),
        registry_id=registry_id,
        action=action,
        now=now,
    )
    # Accepted once: a captured proof cannot be replayed while it lives.
    try:
        with session.begin_nested():
            session.add(UsedSubjectProof(jti=proof.jti, expires_at=proof.expires_at))
            session.flush()
    except IntegrityError:
        raise Replayed(
            f"subject proof {proof.jti} was used before: sign a fresh one for each request"
        ) from None
    return proof
