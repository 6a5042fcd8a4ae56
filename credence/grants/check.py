"""The one grant check: may this lookup run on this basis?

The registry (before it logs and fans out a lookup) and every node (before it
answers) run this same check, as python-tuf's client and repository share one
``verify_delegate``. It dispatches on the basis a request carries:

* **public register**: an organisation's blacklist status, for
  counterparty_verification only; never a person;
* **consent**: the registry's countersignature, the subject's signature and the
  identity member's binding, within the purpose's fair-use caps;
* **mandate**: signed by an active authority member of the manifest, with an
  embargo no longer than the limit the checker knows;

then checks that the verified grant covers exactly this subject, requester,
purpose and kinds. A grant seen before (by token hash, while valid) costs no
signature work. What only one side can check stays with that side: the
registry's requester rights and use counts, the node's binding of the grant to
the signed query, its local policy and the revocation list (passed in as a
hook, run on every use, cached or not).

Pure: the manifest, the caps and ``now`` are passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import MappingProxyType

from credence import jws, names
from credence.errors import InvalidInput, PermissionDenied
from credence.grants import tokens
from credence.grants.cache import GrantCache
from credence.manifest import TrustedManifest
from credence.subjects import SubjectRef, SubjectType
from credence.v1 import agency_pb2, common_pb2, manifest_pb2

#: Wire subject types a lookup may name, and the type each stands for.
SUBJECT_TYPES: Mapping[int, SubjectType] = MappingProxyType(
    {
        common_pb2.SUBJECT_TYPE_PERSON: SubjectType.PERSON,
        common_pb2.SUBJECT_TYPE_ORGANISATION: SubjectType.ORGANISATION,
    }
)

#: Refuses a grant its issuer revoked; raises if it was (the node's status list).
RevocationCheck = Callable[[tokens.Grant, datetime], None]

_BLACKLIST_ONLY = frozenset({common_pb2.VERDICT_KIND_BLACKLIST})


@dataclass(frozen=True)
class GrantRules:
    """What a grant is checked against besides its token.

    Attributes:
        manifest: whose keys sign consents, bindings and mandates.
        fair_use: the caps per purpose name a consent must stay within.
        registry_id: the issuer every consent must name.
        max_embargo: the longest a mandate may hide its lookups from the subject.
    """

    manifest: TrustedManifest
    fair_use: Mapping[str, tokens.PurposePolicy]
    registry_id: str
    max_embargo: timedelta = tokens.DEFAULT_MAX_EMBARGO

    @classmethod
    def from_manifest(cls, manifest: TrustedManifest) -> GrantRules:
        """The rules a node knows: all from the signed manifest.

        The manifest publishes the fair-use caps but not the registry's
        embargo limit, so a node holds mandates to the federation-wide bound
        (:data:`~credence.grants.tokens.DEFAULT_MAX_EMBARGO`, 90 days).
        """
        fair_use = {
            names.purpose_name(purpose): tokens.PurposePolicy(
                max_validity=limits.max_validity, max_uses=limits.max_uses
            )
            for purpose, limits in manifest.purpose_policies.items()
        }
        return cls(manifest, MappingProxyType(fair_use), manifest.registry.member_id)


@dataclass(frozen=True, slots=True)
class Asked:
    """What a lookup asks for, with the names the grant's claims use (built once)."""

    requester: str
    purpose: int
    purpose_name: str
    kinds: tuple[int, ...]
    kind_names: tuple[str, ...]

    @classmethod
    def of(cls, requester: str, purpose: int, kinds: Sequence[int]) -> Asked:
        """Name the purpose and kinds.

        Raises:
            InvalidInput: an unspecified or unknown purpose or kind.
        """
        kind_names = tuple(names.kind_name(kind) for kind in kinds)
        return cls(requester, purpose, names.purpose_name(purpose), tuple(kinds), kind_names)


@dataclass(frozen=True, slots=True)
class CheckedGrant:
    """The basis a lookup runs on, once checked."""

    kind: str  # "public register", "consent" or "mandate"
    grant: tokens.Grant | None = None

    @property
    def grant_id(self) -> str:
        """The grant's id; empty on the public-register basis."""
        return "" if self.grant is None else self.grant.grant_id


PUBLIC_REGISTER = CheckedGrant("public register")


def check_public_register(
    subject_type: SubjectType, kinds: Sequence[int], purpose: int
) -> CheckedGrant:
    """The public-register basis: an organisation's blacklist status in counterparty checks.

    Raises:
        PermissionDenied: a person, another kind, or another purpose.
    """
    if subject_type is not SubjectType.ORGANISATION:
        raise PermissionDenied(
            "a person is never looked up on the public-register basis: "
            "present the person's consent or a mandate"
        )
    if set(kinds) != _BLACKLIST_ONLY or purpose != common_pb2.PURPOSE_COUNTERPARTY_VERIFICATION:
        raise PermissionDenied(
            "the public-register basis covers an organisation's blacklist status only, "
            "for counterparty_verification only"
        )
    return PUBLIC_REGISTER


def verify_authority_mandate(
    token: str,
    *,
    manifest: TrustedManifest,
    requester: str,
    now: datetime,
    max_embargo: timedelta = tokens.DEFAULT_MAX_EMBARGO,
) -> tokens.VerifiedMandate:
    """Verify a mandate against the keys of the active authority that signed it.

    Raises:
        InvalidInput: the token's header names no key.
        UnknownKey: no member of the manifest holds the signing key.
        PermissionDenied: the signer is suspended or not an authority.
        VerificationError: the mandate does not verify, is not for
            ``requester``, or embargoes longer than ``max_embargo``.
    """
    kid = jws.peek_header(token, max_size=tokens.MANDATE_MAX_SIZE).get("kid")
    if not isinstance(kid, str):
        raise InvalidInput("mandate header has no kid")
    issuer = manifest.key_owner(kid)
    if manifest.active_member(issuer).role != manifest_pb2.ROLE_AUTHORITY:
        raise PermissionDenied(f"mandate is signed by {issuer!r}, which is not an authority")
    return tokens.verify_mandate(
        token,
        authority_keys=manifest.member_keys(issuer),
        expected_audience=requester,
        now=now,
        max_embargo=max_embargo,
        expected_issuer=issuer,
    )


def check_grant(
    grant: agency_pb2.Grant,
    subject: SubjectRef,
    asked: Asked,
    *,
    rules: GrantRules,
    cache: GrantCache,
    now: datetime,
    revocations: RevocationCheck | None = None,
) -> CheckedGrant:
    """The legal basis of one lookup, checked against ``rules`` at ``now``.

    Raises:
        PermissionDenied: no basis; the public register for a person or for
            more than an organisation's blacklist status in counterparty
            checks; a mandate not signed by an active authority; a consent
            beyond the purpose's fair-use caps; a revoked grant.
        VerificationError: the consent or mandate does not verify or does not
            cover this subject, requester, purpose and kinds.
    """
    basis = grant.WhichOneof("basis")
    if basis == "public_register":
        return check_public_register(subject.subject_type, asked.kinds, asked.purpose)
    verified: tokens.Grant | None
    if basis == "consent_token":
        token = grant.consent_token
        verified = cache.get(token, now) or tokens.verify_consent(
            token,
            registry_keys=rules.manifest.registry_keys,
            identity_keys=rules.manifest.identity_verifier_keys(),
            expected_audience=asked.requester,
            now=now,
            policy=rules.fair_use,
            expected_issuer=rules.registry_id,
        )
    elif basis == "mandate_token":
        token = grant.mandate_token
        verified = cache.get(token, now) or verify_authority_mandate(
            token,
            manifest=rules.manifest,
            requester=asked.requester,
            now=now,
            max_embargo=rules.max_embargo,
        )
    else:
        raise PermissionDenied(
            "no grant: a lookup needs the subject's consent, a mandate, or (for an "
            "organisation's blacklist status) the public-register basis"
        )
    cache.put(token, verified)
    # After the cache: a revocation must reach grants verified before it.
    if revocations is not None:
        revocations(verified, now)
    tokens.check_grant_for_query(
        verified,
        subject_ref_hex=subject.hex(),
        requester=asked.requester,
        purpose=asked.purpose_name,
        kinds=asked.kind_names,
    )
    kind = "mandate" if isinstance(verified, tokens.VerifiedMandate) else "consent"
    return CheckedGrant(kind, verified)
