"""The signed federation manifest: who is in, with which keys, under which rules.

The manifest is ``credence.v1.Manifest`` carried in a DSSE envelope signed by
the federation's root keys, in the spirit of TUF root metadata and X-Road
global configuration. :func:`verify_manifest` applies TUF's update rules:

* a threshold of the root keys the verifier already trusts must sign (the keys
  pinned in its configuration at first use, afterwards the held manifest's);
* a manifest that changes the root keys or threshold must also be signed by a
  threshold of its own new root keys, so a rotation is signed by old and new;
* a manifest older than the held one is refused, and so is a different manifest
  under the held version number (a fork or freeze attack);
* an expired manifest, or one issued in the future, is refused.

A verified manifest becomes a :class:`TrustedManifest`: its content is checked
once (unique members, key ids equal to their keys' RFC 7638 thumbprints, known
enum values, a consistent root) and business logic reads it through that
wrapper, never through the generated message. Every function is pure: the
clock arrives as ``now``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Protocol, TypeAlias, TypeVar

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from google.protobuf.message import DecodeError

from credence.encoding import format_time, require_utc
from credence.envelope import Envelope, sign, verify
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
    VerificationError,
    WrongAudience,
)
from credence.keys import KeySet, SigningKey, VerifyKey
from credence.pki import validate_member_id
from credence.transparency.checkpoint import log_origin
from credence.transparency.note import ED25519_TYPE, vkey
from credence.v1 import common_pb2, manifest_pb2

MANIFEST_PAYLOAD_TYPE = "application/vnd.credence.manifest.v1+proto"
# Thousands of members with a few keys each fit in well under a megabyte.
DEFAULT_MAX_MANIFEST_BYTES = 1024 * 1024
# A registry's clock may run slightly ahead of a holder's: a manifest signed
# this far in the holder's future is still taken.
MANIFEST_CLOCK_SKEW = timedelta(minutes=5)
#: Days an agency has to resolve a contest when the manifest does not say (FCRA §611).
DEFAULT_CONTEST_DEADLINE_DAYS = 30
#: The bounds a published ``contest_deadline_days`` must keep.
MIN_CONTEST_DEADLINE_DAYS = 1
MAX_CONTEST_DEADLINE_DAYS = 365

Role: TypeAlias = manifest_pb2.Role.ValueType
MemberState: TypeAlias = manifest_pb2.MemberState.ValueType
VerdictKind: TypeAlias = common_pb2.VerdictKind.ValueType
Purpose: TypeAlias = common_pb2.Purpose.ValueType

# RFC 5280 serials are at most 20 octets; hex without prefix or sign.
_SERIAL_HEX = re.compile(r"[0-9a-fA-F]{1,40}")

_V = TypeVar("_V", bound=int)
_V_co = TypeVar("_V_co", bound=int, covariant=True)


@dataclass(frozen=True)
class RegistryView:
    """The registry's entry: where it listens and which keys sign its messages."""

    member_id: str
    endpoint: str
    signing_keys: tuple[VerifyKey, ...]
    ca_cert_pem: str
    log_id: str
    #: Origin line of the log's checkpoints (``credence/<federation id>/log``).
    log_origin: str


@dataclass(frozen=True)
class MemberView:
    """One member as the manifest publishes it; enum values are known and not unspecified."""

    member_id: str
    display_name: str
    role: Role
    state: MemberState
    endpoint: str
    # Every key listed, revoked ones too: TrustedManifest.member_keys filters.
    signing_keys: tuple[VerifyKey, ...]
    record_kinds: tuple[str, ...]
    contributes: frozenset[VerdictKind]
    identity_verifier: bool
    allowed_purposes: frozenset[Purpose]
    allowed_kinds: frozenset[VerdictKind]
    #: The raw 32-byte witness cosigning key; ``None`` when the member does not witness.
    witness_key: bytes | None = None
    #: The raw 32-byte X25519 key agreement key of an agency (blind aggregation).
    agreement_key: bytes | None = None

    @property
    def is_active(self) -> bool:
        """Whether the member may take part right now."""
        return self.state == manifest_pb2.MEMBER_STATE_ACTIVE

    @property
    def role_name(self) -> str:
        """The role as a word for messages: ``agency``, ``company`` or ``authority``."""
        return _enum_name(manifest_pb2.Role, self.role).removeprefix("ROLE_").lower()


@dataclass(frozen=True)
class PurposeLimits:
    """The fair-use limits of one purpose (nodes check them again)."""

    purpose: Purpose
    max_validity: timedelta
    max_uses: int
    kinds: frozenset[VerdictKind]


@dataclass(frozen=True, eq=False)
class TrustedManifest:
    """A manifest whose envelope verified and whose content was checked.

    Only :func:`verify_manifest` makes one: holding a ``TrustedManifest`` means
    the root keys signed it and it was fresh when it was verified.
    """

    envelope: Envelope
    signed_by: tuple[str, ...]
    federation_id: str
    version: int
    issued_at: datetime
    expires_at: datetime
    root_keys: KeySet
    root_threshold: int
    registry: RegistryView
    members: Mapping[str, MemberView]
    purpose_policies: Mapping[Purpose, PurposeLimits]
    revoked_serials: frozenset[int]
    revoked_kids: frozenset[str]
    #: How many active witnesses must cosign a checkpoint (k of :attr:`witnesses`).
    witness_quorum: int
    #: Days an agency has to resolve a contest (the manifest's, or 30 when unset).
    contest_deadline_days: int
    _scorecard: bytes
    _key_owners: Mapping[str, str]

    @property
    def payload(self) -> bytes:
        """The signed manifest bytes exactly as verified."""
        return self.envelope.payload

    @property
    def envelope_bytes(self) -> bytes:
        """The serialized envelope, for re-serving to other holders as is."""
        return self.envelope.to_bytes()

    @property
    def registry_keys(self) -> KeySet:
        """The registry's signing keys, minus revoked ones."""
        return self._unrevoked(self.registry.signing_keys)

    @property
    def contest_deadline(self) -> timedelta:
        """How long an agency has to resolve a contest before its records stop counting."""
        return timedelta(days=self.contest_deadline_days)

    @property
    def witnesses(self) -> tuple[MemberView, ...]:
        """The active members that witness the log, in member id order."""
        return tuple(
            member
            for _, member in sorted(self.members.items())
            if member.is_active and member.witness_key is not None
        )

    @property
    def scorecard(self) -> manifest_pb2.Scorecard:
        """A fresh copy of the published scorecard (the scorecard module wraps it)."""
        return manifest_pb2.Scorecard.FromString(self._scorecard)

    def member(self, member_id: str) -> MemberView:
        """The member named ``member_id``, whatever its state.

        Raises:
            NotFound: the manifest lists no such member.
        """
        try:
            return self.members[member_id]
        except KeyError:
            raise NotFound(
                f"member {member_id!r} is not in federation manifest version {self.version}"
            ) from None

    def active_member(self, member_id: str) -> MemberView:
        """The member named ``member_id``, which must be active.

        Raises:
            NotFound: the manifest lists no such member.
            PermissionDenied: the member is suspended.
        """
        member = self.member(member_id)
        if not member.is_active:
            raise PermissionDenied(
                f"member {member_id!r} is suspended in federation manifest version "
                f"{self.version}; the registry operator must reinstate it"
            )
        return member

    def member_keys(self, member_id: str, *, allow_suspended: bool = False) -> KeySet:
        """The member's signing keys, minus revoked ones.

        Args:
            member_id: whose keys.
            allow_suspended: also give a suspended member's keys, to re-check
                what it signed before (audit); never to accept something new.

        Raises:
            NotFound: the manifest lists no such member.
            PermissionDenied: the member is suspended and ``allow_suspended`` is false.
        """
        member = self.member(member_id) if allow_suspended else self.active_member(member_id)
        return self._unrevoked(member.signing_keys)

    def contributors(self, kind: VerdictKind) -> tuple[MemberView, ...]:
        """The active agencies that contribute to verdicts of ``kind``, by member id."""
        return tuple(
            self.members[member_id]
            for member_id in sorted(self.members)
            if self.members[member_id].is_active
            and self.members[member_id].role == manifest_pb2.ROLE_AGENCY
            and kind in self.members[member_id].contributes
        )

    def identity_verifier_keys(self) -> KeySet:
        """Unrevoked keys of the active members that may bind subjects' personal keys."""
        keys: list[VerifyKey] = []
        for member in self.members.values():
            if member.is_active and member.identity_verifier:
                keys.extend(self._unrevoked(member.signing_keys).values())
        return KeySet(keys)

    def key_owner(self, kid: str) -> str:
        """The member id that lists signing key ``kid`` (the registry's included).

        Raises:
            UnknownKey: no member lists the key.
        """
        try:
            return self._key_owners[kid]
        except KeyError:
            raise UnknownKey(
                f"key {kid!r} belongs to no member of federation manifest version {self.version}"
            ) from None

    def is_revoked_serial(self, serial: int) -> bool:
        """Whether the certificate with this serial number is revoked."""
        return serial in self.revoked_serials

    def purpose_policy(self, purpose: Purpose) -> PurposeLimits:
        """The fair-use limits of ``purpose``.

        Raises:
            NotFound: the manifest sets no limits for the purpose, so no
                lookup may be made for it.
        """
        try:
            return self.purpose_policies[purpose]
        except KeyError:
            name = _enum_name(common_pb2.Purpose, purpose)
            raise NotFound(
                f"purpose {name} has no policy in federation manifest version {self.version}"
            ) from None

    def _unrevoked(self, keys: Iterable[VerifyKey]) -> KeySet:
        return KeySet(key for key in keys if key.kid not in self.revoked_kids)


def sign_manifest(manifest: manifest_pb2.Manifest, root_keys: Sequence[SigningKey]) -> Envelope:
    """Sign a manifest with root keys (the registry's publishing step).

    The content is checked first, so the registry cannot publish a manifest
    its holders would refuse. For a rotation, pass the old and the new root keys.

    Raises:
        InvalidInput: the manifest's content is inconsistent (see
            :func:`verify_manifest`), or no keys are given.
    """
    payload = manifest.SerializeToString(deterministic=True)
    envelope = sign(MANIFEST_PAYLOAD_TYPE, payload, root_keys)
    _build(envelope, manifest, signed_by=())
    return envelope


def next_trusted_root(held: TrustedManifest) -> tuple[KeySet, int]:
    """The root keys and threshold that must sign the manifest after ``held``."""
    return held.root_keys, held.root_threshold


def verify_manifest(
    envelope: Envelope,
    *,
    trusted_root: KeySet,
    threshold: int,
    now: datetime,
    held: TrustedManifest | None = None,
    max_size: int = DEFAULT_MAX_MANIFEST_BYTES,
) -> TrustedManifest:
    """Verify a manifest envelope against the root the holder trusts.

    Args:
        envelope: the manifest envelope as received.
        trusted_root: the root keys pinned in the holder's configuration.
            They are the trust only while nothing is held: once a manifest is
            held, its root keys and threshold are, so an old root key cannot
            outvote a rotation and a stale pin does not break a holder.
        threshold: how many pinned keys must sign (used with ``trusted_root``).
        now: the current time, timezone-aware.
        held: the manifest the holder has now, if any.
        max_size: the largest payload accepted, checked before parsing.

    Raises:
        ValueError: ``threshold`` is not between 1 and the number of pinned keys,
            or ``now`` is naive (programming errors).
        MessageTooLarge: the payload is larger than ``max_size``.
        WrongPayloadType: the envelope does not carry a manifest.
        BadSignature: unsigned, a bad signature, fewer than a threshold of
            the trusted root keys, or a root rotation its new keys did not sign.
        UnknownKey: signed only by keys the holder does not trust.
        InvalidInput: the payload is not a valid manifest.
        WrongAudience: the manifest is for another federation than the held one.
        RolledBack: older than the held manifest, or a different manifest
            under the held version.
        Expired: ``now`` is at or past the manifest's expiry.
        NotYetValid: issued further in the future than the allowed clock skew.
    """
    now = require_utc(now, "now")
    if held is None:
        if not 1 <= threshold <= len(trusted_root):
            raise ValueError(
                f"pinned root threshold {threshold} must be between 1 and the "
                f"{len(trusted_root)} pinned root keys"
            )
        root, root_threshold = trusted_root, threshold
    else:
        root, root_threshold = next_trusted_root(held)
    if len(envelope.payload) > max_size:
        raise MessageTooLarge(f"manifest is {len(envelope.payload)} bytes; the limit is {max_size}")
    verified = verify(envelope, MANIFEST_PAYLOAD_TYPE, root, threshold=root_threshold)
    if held is not None and envelope.payload == held.payload:
        # The same manifest served again: nothing new, but it must still be fresh.
        _check_fresh(held, now)
        return held
    message = manifest_pb2.Manifest()
    try:
        message.ParseFromString(envelope.payload)
    except DecodeError as exc:
        raise InvalidInput(f"signed manifest payload is not a credence.v1.Manifest: {exc}") from exc
    manifest = _build(envelope, message, signed_by=verified.kids)
    if set(manifest.root_keys) != set(root) or manifest.root_threshold != root_threshold:
        _check_rotation(envelope, manifest)
    if held is not None:
        _check_successor(manifest, held)
    _check_fresh(manifest, now)
    return manifest


def _check_rotation(envelope: Envelope, manifest: TrustedManifest) -> None:
    try:
        verify(
            envelope, MANIFEST_PAYLOAD_TYPE, manifest.root_keys, threshold=manifest.root_threshold
        )
    except VerificationError as exc:
        raise BadSignature(
            f"manifest version {manifest.version} changes the root keys, so it must also be "
            f"signed by {manifest.root_threshold} of its new root keys "
            f"({', '.join(sorted(manifest.root_keys))}): {exc}"
        ) from exc


def _check_successor(manifest: TrustedManifest, held: TrustedManifest) -> None:
    if manifest.federation_id != held.federation_id:
        raise WrongAudience(
            f"manifest is for federation {manifest.federation_id!r}, "
            f"but the held manifest is for {held.federation_id!r}"
        )
    if manifest.version < held.version:
        raise RolledBack(
            f"manifest version {manifest.version} is older than the held version {held.version}"
        )
    if manifest.version == held.version:
        raise RolledBack(
            f"manifest version {manifest.version} differs from the held manifest of the same "
            "version (a fork or freeze attack); a changed manifest needs a higher version"
        )


def _check_fresh(manifest: TrustedManifest, now: datetime) -> None:
    if now >= manifest.expires_at:
        raise Expired(
            f"manifest version {manifest.version} expired at "
            f"{format_time(manifest.expires_at)} (now {format_time(now)})"
        )
    if manifest.issued_at > now + MANIFEST_CLOCK_SKEW:
        raise NotYetValid(
            f"manifest version {manifest.version} is issued at "
            f"{format_time(manifest.issued_at)}, in the future (now {format_time(now)}); "
            "check the clocks"
        )


# --- content checks --------------------------------------------------------


def _build(
    envelope: Envelope, message: manifest_pb2.Manifest, *, signed_by: tuple[str, ...]
) -> TrustedManifest:
    if not message.federation_id:
        raise InvalidInput("manifest has no federation_id")
    if message.version < 1:
        raise InvalidInput("manifest version must be at least 1")
    if not message.HasField("issued_at") or not message.HasField("expires_at"):
        raise InvalidInput("manifest needs both issued_at and expires_at")
    issued_at = message.issued_at.ToDatetime(tzinfo=UTC)
    expires_at = message.expires_at.ToDatetime(tzinfo=UTC)
    if expires_at <= issued_at:
        raise InvalidInput(
            f"manifest expires at {format_time(expires_at)}, "
            f"not after it is issued at {format_time(issued_at)}"
        )
    revoked_kids = frozenset(message.revoked_kids)
    root_keys = KeySet(_keys(message.root_keys, "root_keys"))
    if not 1 <= message.root_threshold <= len(root_keys):
        raise InvalidInput(
            f"manifest root_threshold {message.root_threshold} must be between 1 and the "
            f"{len(root_keys)} root keys it lists"
        )
    if revoked := sorted(revoked_kids & set(root_keys)):
        raise InvalidInput(f"manifest lists revoked keys {', '.join(revoked)} as root keys")
    if not message.HasField("registry"):
        raise InvalidInput("manifest has no registry entry")
    registry = _registry(message.registry, message.federation_id)
    owners = dict.fromkeys((key.kid for key in registry.signing_keys), registry.member_id)
    members: dict[str, MemberView] = {}
    for entry in message.members:
        member = _member(entry)
        if member.member_id in members or member.member_id == registry.member_id:
            raise InvalidInput(f"manifest lists member {member.member_id!r} twice")
        for key in member.signing_keys:
            if key.kid in owners:
                raise InvalidInput(
                    f"key {key.kid} is listed for both {owners[key.kid]!r} and "
                    f"{member.member_id!r}; every signing key belongs to one member"
                )
            owners[key.kid] = member.member_id
        members[member.member_id] = member
    return TrustedManifest(
        envelope=envelope,
        signed_by=signed_by,
        federation_id=message.federation_id,
        version=message.version,
        issued_at=issued_at,
        expires_at=expires_at,
        root_keys=root_keys,
        root_threshold=message.root_threshold,
        registry=registry,
        members=MappingProxyType(members),
        purpose_policies=MappingProxyType(_policies(message.purpose_policies)),
        revoked_serials=frozenset(_serial(text) for text in message.revoked_serials),
        revoked_kids=revoked_kids,
        witness_quorum=_witness_quorum(message, members.values()),
        contest_deadline_days=_contest_deadline_days(message),
        _scorecard=message.scorecard.SerializeToString(deterministic=True),
        _key_owners=MappingProxyType(owners),
    )


def _witness_quorum(message: manifest_pb2.Manifest, members: Iterable[MemberView]) -> int:
    witnesses = sum(1 for m in members if m.is_active and m.witness_key is not None)
    if not message.HasField("witness_quorum"):
        return witnesses // 2 + 1 if witnesses else 0
    if message.witness_quorum > witnesses:
        raise InvalidInput(
            f"manifest witness_quorum {message.witness_quorum} is more than the {witnesses} "
            "active witnesses it lists"
        )
    return message.witness_quorum


def _contest_deadline_days(message: manifest_pb2.Manifest) -> int:
    if not message.HasField("contest_deadline_days"):
        return DEFAULT_CONTEST_DEADLINE_DAYS
    days = message.contest_deadline_days
    if not MIN_CONTEST_DEADLINE_DAYS <= days <= MAX_CONTEST_DEADLINE_DAYS:
        raise InvalidInput(
            f"manifest contest_deadline_days {days} is outside "
            f"{MIN_CONTEST_DEADLINE_DAYS}..{MAX_CONTEST_DEADLINE_DAYS}"
        )
    return days


def _witness_key(entry: manifest_pb2.Member, where: str) -> bytes | None:
    if not entry.HasField("witness_key"):
        return None
    (key,) = _keys([entry.witness_key], f"{where} witness_key")
    return key.raw()


#: Length of a raw X25519 public key.
AGREEMENT_KEY_BYTES = 32


def check_agreement_key(raw: bytes) -> None:
    """Check that ``raw`` is an X25519 public key every agency can agree with.

    A point of small order makes every agreement with it all zeros (the
    exchange refuses it): such a key would stop every pairwise mask.

    Raises:
        InvalidInput: not 32 bytes, or a point of small order.
    """
    if len(raw) != AGREEMENT_KEY_BYTES:
        raise InvalidInput(
            f"a key agreement key is {AGREEMENT_KEY_BYTES} raw X25519 bytes, not {len(raw)}"
        )
    try:
        X25519PrivateKey.generate().exchange(X25519PublicKey.from_public_bytes(raw))
    except ValueError as exc:
        raise InvalidInput(
            "the key agreement key is a point of small order; generate a new X25519 key"
        ) from exc


def _agreement_key(entry: manifest_pb2.Member, where: str) -> bytes | None:
    if not entry.agreement_key:
        return None
    try:
        check_agreement_key(entry.agreement_key)
    except InvalidInput as exc:
        raise InvalidInput(f"manifest {where} agreement_key: {exc}") from exc
    return bytes(entry.agreement_key)


def _keys(entries: Iterable[common_pb2.PublicKey], where: str) -> tuple[VerifyKey, ...]:
    keys: dict[str, VerifyKey] = {}
    for index, entry in enumerate(entries):
        try:
            key = VerifyKey.from_raw(entry.ed25519)
        except InvalidInput as exc:
            raise InvalidInput(f"manifest {where}[{index}]: {exc}") from exc
        if entry.kid != key.kid:
            raise InvalidInput(
                f"manifest {where}[{index}] names kid {entry.kid!r}, but the key's "
                f"RFC 7638 thumbprint is {key.kid}"
            )
        if key.kid in keys:
            raise InvalidInput(f"manifest {where} lists key {key.kid} twice")
        keys[key.kid] = key
    return tuple(keys.values())


def _registry(entry: manifest_pb2.RegistryInfo, federation_id: str) -> RegistryView:
    member_id = _member_id(entry.member_id, "registry")
    keys = _keys(entry.signing_keys, "registry.signing_keys")
    if not keys:
        raise InvalidInput("manifest registry entry lists no signing keys")
    # The origin is fixed per federation; the fields spell it (and the note
    # verifier key) out for readers, and must agree with what they derive.
    origin = log_origin(federation_id)
    if entry.log_origin and entry.log_origin != origin:
        raise InvalidInput(
            f"manifest registry.log_origin {entry.log_origin[:80]!r} is not {origin!r}, "
            "the origin of this federation's log"
        )
    if entry.log_vkey:
        log_key = next((key for key in keys if key.kid == entry.log_id), None)
        expected = vkey(origin, ED25519_TYPE, log_key.raw()) if log_key else None
        if entry.log_vkey != expected:
            raise InvalidInput(
                f"manifest registry.log_vkey {entry.log_vkey[:120]!r} is not the note verifier "
                f"key of the log key {entry.log_id!r} under origin {origin!r}"
            )
    return RegistryView(
        member_id=member_id,
        endpoint=entry.endpoint,
        signing_keys=keys,
        ca_cert_pem=entry.ca_cert_pem,
        log_id=entry.log_id,
        log_origin=origin,
    )


def _member(entry: manifest_pb2.Member) -> MemberView:
    member_id = _member_id(entry.member_id, "member")
    where = f"member {member_id!r}"
    role = _known(manifest_pb2.Role, entry.role, f"{where} role")
    state = _known(manifest_pb2.MemberState, entry.state, f"{where} state")
    if state == manifest_pb2.MEMBER_STATE_PENDING:
        raise InvalidInput(f"{where} is pending; only active and suspended members are published")
    contributes = _known_set(common_pb2.VerdictKind, entry.contributes, f"{where} contributes")
    if role == manifest_pb2.ROLE_AGENCY:
        if not entry.endpoint:
            raise InvalidInput(f"{where} is an agency but has no endpoint")
    elif contributes or entry.record_kinds:
        raise InvalidInput(f"{where} is not an agency but lists record kinds or contributions")
    return MemberView(
        member_id=member_id,
        display_name=entry.display_name,
        role=role,
        state=state,
        endpoint=entry.endpoint,
        signing_keys=_keys(entry.signing_keys, f"{where} signing_keys"),
        record_kinds=tuple(entry.record_kinds),
        contributes=contributes,
        identity_verifier=entry.identity_verifier,
        allowed_purposes=_known_set(
            common_pb2.Purpose, entry.allowed_purposes, f"{where} allowed_purposes"
        ),
        allowed_kinds=_known_set(
            common_pb2.VerdictKind, entry.allowed_kinds, f"{where} allowed_kinds"
        ),
        witness_key=_witness_key(entry, where),
        agreement_key=_agreement_key(entry, where),
    )


def _policies(entries: Iterable[manifest_pb2.PurposePolicy]) -> dict[Purpose, PurposeLimits]:
    policies: dict[Purpose, PurposeLimits] = {}
    for entry in entries:
        purpose = _known(common_pb2.Purpose, entry.purpose, "purpose policy purpose")
        where = f"purpose policy {_enum_name(common_pb2.Purpose, purpose)}"
        if purpose in policies:
            raise InvalidInput(f"manifest lists {where} twice")
        max_validity = entry.max_validity.ToTimedelta()
        if max_validity <= timedelta(0) or entry.max_uses < 1:
            raise InvalidInput(f"{where} needs a positive max_validity and max_uses")
        policies[purpose] = PurposeLimits(
            purpose=purpose,
            max_validity=max_validity,
            max_uses=entry.max_uses,
            kinds=_known_set(common_pb2.VerdictKind, entry.kinds, f"{where} kinds"),
        )
    return policies


def _member_id(member_id: str, what: str) -> str:
    try:
        return validate_member_id(member_id)
    except InvalidInput as exc:
        raise InvalidInput(f"manifest {what}: {exc}") from exc


class _EnumType(Protocol[_V_co]):
    # The part of protobuf's enum wrapper used here, for the type checker.
    def items(self) -> Sequence[tuple[str, _V_co]]: ...


def _known(enum: _EnumType[_V], value: int, what: str) -> _V:
    for _name, known in enum.items():
        if known == value and known != 0:
            return known
    raise InvalidInput(f"manifest {what} has the unknown or unspecified value {value}")


def _known_set(enum: _EnumType[_V], values: Iterable[int], what: str) -> frozenset[_V]:
    return frozenset(_known(enum, value, what) for value in values)


def _enum_name(enum: _EnumType[int], value: int) -> str:
    return next((name for name, known in enum.items() if known == value), str(value))


def _serial(text: str) -> int:
    if not _SERIAL_HEX.fullmatch(text):
        raise InvalidInput(
            f"manifest revoked serial {text!r} is not 1-40 hex digits (no 0x prefix or sign)"
        )
    return int(text, 16)
