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

from central_registry.grants import GrantPolicy
from credence.errors import InvalidInput, NotFound, PermissionDenied
from credence.grants import check
from credence.grants.cache import GrantCache
from credence.grants.check import Asked
from credence.grants.tokens import VerifiedMandate
from credence.subjects import SubjectRef
from credence.v1 import agency_pb2, common_pb2


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
    asked = Asked.of(requester, purpose, kinds)
    if purpose not in member.allowed_purposes:
        raise PermissionDenied(
            f"{requester!r} may not request lookups for {asked.purpose_name}; "
            f"ask the registry operator to extend its access rights"
        )
    if denied := [name for kind, name in zip(kinds, asked.kind_names, strict=True)
                  if kind not in member.allowed_kinds]:  # fmt: skip
        raise PermissionDenied(f"{requester!r} may not request {', '.join(denied)} verdicts")
    rules = policy.config.purposes.get(asked.purpose_name)
    if rules is None:
        raise PermissionDenied(f"purpose {asked.purpose_name} is not open in this federation")
    if extra := sorted(set(asked.kind_names) - rules.kinds):
        raise PermissionDenied(
            f"purpose {asked.purpose_name} does not allow {', '.join(extra)} verdicts"
        )
    return asked


def subject_from_proto(subject: common_pb2.SubjectRef) -> SubjectRef:
    """A wire subject reference, checked.

    Raises:
        InvalidInput: unspecified type or a reference that is not 32 bytes.
    """
    subject_type = check.SUBJECT_TYPES.get(subject.type)
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
    checked = check.check_grant(
        grant, subject, asked, rules=policy.grant_rules, cache=cache, now=now
    )
    verified = checked.grant
    if verified is None:
        return Allowed(subject, "", checked.kind, checked.kind, None)
    if isinstance(verified, VerifiedMandate):
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
