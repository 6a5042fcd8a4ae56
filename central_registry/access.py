"""May this requester look this subject up, for this purpose and these kinds?

Pure checks over the manifest and the request; the grant's use is counted in
the database by the caller. The order: the requester is an active member, the
request is well formed, the member's access rights cover the purpose and
kinds, the purpose's rules allow the kinds, and the grant (public register,
consent or mandate) covers exactly this subject, requester, purpose and kinds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from central_registry.grants import GrantPolicy, verify_mandate_token
from credence import names
from credence.errors import InvalidInput, NotFound, PermissionDenied
from credence.grants import tokens
from credence.grants.cache import GrantCache
from credence.subjects import SubjectRef, SubjectType
from credence.v1 import agency_pb2, common_pb2

_SUBJECT_TYPES = {
    common_pb2.SUBJECT_TYPE_PERSON: SubjectType.PERSON,
    common_pb2.SUBJECT_TYPE_ORGANISATION: SubjectType.ORGANISATION,
}


@dataclass(frozen=True, slots=True)
class Asked:
    """What a requester asks, checked once per request (shared by a screening message)."""

    requester: str
    purpose: int
    purpose_name: str
    kinds: tuple[int, ...]
    kind_names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Allowed:
    """One lookup that passed every check."""

    subject: SubjectRef
    grant_id: str
    grant_kind: str  # "public register", "consent" or "mandate"
    basis: str
    embargo_until: datetime | None
    data_life: timedelta | None = None


def check_asked(policy: GrantPolicy, requester: str, purpose: int, kinds: Sequence[int]) -> Asked:
    """The requester's right to ask for this purpose and these kinds.

    Raises:
        PermissionDenied: not an active member, or not allowed this purpose or kind.
        InvalidInput: unknown or missing purpose or kinds.
    """
    try:
        member = policy.manifest.active_member(requester)
    except NotFound:
        raise PermissionDenied(f"{requester!r} is not a member of this federation") from None
    if not kinds:
        raise InvalidInput("ask for at least one verdict kind (blacklist, credit)")
    if len(set(kinds)) != len(kinds):
        raise InvalidInput("each verdict kind may be asked once")
    kind_names = tuple(names.kind_name(kind) for kind in kinds)
    purpose_name = names.purpose_name(purpose)
    if purpose not in member.allowed_purposes:
        raise PermissionDenied(
            f"{requester!r} may not request lookups for {purpose_name}; "
            f"ask the registry operator to extend its access rights"
        )
    if denied := [name for kind, name in zip(kinds, kind_names, strict=True)
                  if kind not in member.allowed_kinds]:  # fmt: skip
        raise PermissionDenied(f"{requester!r} may not request {', '.join(denied)} verdicts")
    rules = policy.config.purposes.get(purpose_name)
    if rules is None:
        raise PermissionDenied(f"purpose {purpose_name} is not open in this federation")
    if extra := sorted(set(kind_names) - rules.kinds):
        raise PermissionDenied(f"purpose {purpose_name} does not allow {', '.join(extra)} verdicts")
    return Asked(requester, purpose, purpose_name, tuple(kinds), kind_names)


def subject_from_proto(subject: common_pb2.SubjectRef) -> SubjectRef:
    """A wire subject reference, checked.

    Raises:
        InvalidInput: unspecified type or a reference that is not 32 bytes.
    """
    subject_type = _SUBJECT_TYPES.get(subject.type)
    if subject_type is None:
        raise InvalidInput("subject type must be person or organisation")
    if len(subject.ref) != 32:
        raise InvalidInput(
            f"subject reference must be 32 bytes (an HMAC-SHA256), got {len(subject.ref)}"
        )
    return SubjectRef(subject_type, bytes(subject.ref))


def check_grant(
    policy: GrantPolicy,
    asked: Asked,
    subject: SubjectRef,
    grant: agency_pb2.Grant,
    *,
    cache: GrantCache,
    now: datetime,
) -> Allowed:
    """The legal basis of one lookup.

    Raises:
        PermissionDenied: no basis, or the public register for a person or for
            more than an organisation's blacklist status in counterparty checks.
        VerificationError: the consent or mandate does not verify or does not
            cover this subject, requester, purpose and kinds.
    """
    basis = grant.WhichOneof("basis")
    if basis == "public_register":
        if subject.subject_type is not SubjectType.ORGANISATION:
            raise PermissionDenied(
                "a person is never looked up on the public-register basis: "
                "present the person's consent or a mandate"
            )
        if asked.kinds != (common_pb2.VERDICT_KIND_BLACKLIST,) or (
            asked.purpose != common_pb2.PURPOSE_COUNTERPARTY_VERIFICATION
        ):
            raise PermissionDenied(
                "the public-register basis covers an organisation's blacklist status "
                "for counterparty_verification only"
            )
        return Allowed(subject, "", "public register", "public register", None)
    if basis == "consent_token":
        token = grant.consent_token
        verified = cache.get(token, now) or tokens.verify_consent(
            token,
            registry_keys=policy.manifest.registry_keys,
            identity_keys=policy.manifest.identity_verifier_keys(),
            expected_audience=asked.requester,
            now=now,
            policy=policy.purpose_policies(),
            expected_issuer=policy.config.member_id,
        )
    elif basis == "mandate_token":
        token = grant.mandate_token
        verified = cache.get(token, now) or verify_mandate_token(
            token, requester=asked.requester, policy=policy, now=now
        )
    else:
        raise PermissionDenied(
            "no grant: a lookup needs the subject's consent, a mandate, or (for an "
            "organisation's blacklist status) the public-register basis"
        )
    cache.put(token, verified)
    tokens.check_grant_for_query(
        verified,
        subject_ref_hex=subject.hex(),
        requester=asked.requester,
        purpose=asked.purpose_name,
        kinds=asked.kind_names,
    )
    if isinstance(verified, tokens.VerifiedMandate):
        basis_text = f"mandate {verified.legal_basis.statute} / {verified.legal_basis.case}"
        return Allowed(subject, verified.grant_id, "mandate", basis_text, verified.embargo_until)
    return Allowed(
        subject,
        verified.grant_id,
        "consent",
        f"consent {verified.grant_id}",
        None,
        data_life=verified.data_life,
    )
