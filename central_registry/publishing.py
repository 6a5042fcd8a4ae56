"""Publishing the federation manifest: every membership change signs a new version.

The manifest lists the active and suspended members (pending ones are not
published), their roles, endpoints, signing keys and access rights, which
verdict kinds each agency contributes to, the published scorecard, the
fair-use limits per purpose, and revoked certificates. It is signed by the
root key, versioned, and expires, so a member holding an old copy notices.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy.orm import Session

from central_registry.config import RegistryConfig
from central_registry.keyring import RegistryKeys
from central_registry.models import Member
from central_registry.store import manifest_rows, member_rows
from credence import names
from credence.envelope import Envelope
from credence.keys import VerifyKey
from credence.manifest import sign_manifest
from credence.record_kinds import LISTING_KINDS
from credence.transparency.checkpoint import log_origin
from credence.transparency.note import ED25519_TYPE, vkey
from credence.v1 import common_pb2, manifest_pb2

_ROLES = {
    "agency": manifest_pb2.ROLE_AGENCY,
    "company": manifest_pb2.ROLE_COMPANY,
    "authority": manifest_pb2.ROLE_AUTHORITY,
}
_STATES = {
    "active": manifest_pb2.MEMBER_STATE_ACTIVE,
    "suspended": manifest_pb2.MEMBER_STATE_SUSPENDED,
}


def _split(text: str) -> list[str]:
    return [part for part in text.split(",") if part]


def _public(kid: str, raw: bytes) -> common_pb2.PublicKey:
    return common_pb2.PublicKey(kid=kid, ed25519=raw)


def contributes(
    record_kinds: Iterable[str], scorecard: manifest_pb2.Scorecard
) -> list[common_pb2.VerdictKind.ValueType]:
    """The verdict kinds an agency holding ``record_kinds`` contributes to."""
    held = set(record_kinds)
    kinds: list[common_pb2.VerdictKind.ValueType] = []
    if held & LISTING_KINDS:
        kinds.append(common_pb2.VERDICT_KIND_BLACKLIST)
    if any(held & set(item.record_kinds) for item in scorecard.characteristics):
        kinds.append(common_pb2.VERDICT_KIND_CREDIT)
    return kinds


def member_entry(member: Member, scorecard: manifest_pb2.Scorecard) -> manifest_pb2.Member:
    """A member's manifest entry."""
    entry = manifest_pb2.Member(
        member_id=member.member_id,
        display_name=member.display_name,
        role=_ROLES[member.role],
        state=_STATES[member.state],
        signing_keys=[_public(member.signing_kid, member.signing_key)],
        identity_verifier=member.identity_verifier,
        allowed_purposes=[names.purpose_value(name) for name in _split(member.allowed_purposes)],
        allowed_kinds=[names.kind_value(name) for name in _split(member.allowed_kinds)],
    )
    if member.witness_key is not None:
        witness = VerifyKey.from_raw(member.witness_key)
        entry.witness_key.CopyFrom(_public(witness.kid, member.witness_key))
    if member.agreement_key is not None:
        entry.agreement_key = member.agreement_key
    if member.role == "agency":
        entry.endpoint = member.endpoint
        entry.record_kinds.extend(_split(member.record_kinds))
        entry.contributes.extend(contributes(entry.record_kinds, scorecard))
    return entry


def build_manifest(
    *,
    config: RegistryConfig,
    keys: RegistryKeys,
    version: int,
    now: datetime,
    members: Iterable[Member],
    revoked_serials: Iterable[str],
    scorecard: manifest_pb2.Scorecard,
) -> manifest_pb2.Manifest:
    """The manifest document for the given state (pure)."""
    manifest = manifest_pb2.Manifest(
        federation_id=config.federation_id,
        version=version,
        root_keys=[_public(keys.root.kid, keys.root.public.raw())],
        root_threshold=1,
        registry=manifest_pb2.RegistryInfo(
            member_id=config.member_id,
            endpoint=config.listen,
            signing_keys=[_public(keys.signing.kid, keys.signing.public.raw())],
            ca_cert_pem=keys.ca.certificate_pem.decode(),
            log_id=keys.signing.kid,
            log_origin=log_origin(config.federation_id),
            log_vkey=vkey(
                log_origin(config.federation_id), ED25519_TYPE, keys.signing.public.raw()
            ),
        ),
        scorecard=scorecard,
        revoked_serials=sorted(revoked_serials),
        contest_deadline_days=config.contest_deadline_days,
    )
    manifest.issued_at.FromDatetime(now)
    manifest.expires_at.FromDatetime(now + config.manifest_validity)
    for member in sorted(members, key=lambda member: member.member_id):
        if member.state in _STATES:
            manifest.members.append(member_entry(member, scorecard))
    if config.witness_quorum is not None:
        # Never more than the active witnesses listed: nodes refuse such a manifest.
        witnesses = sum(
            1
            for entry in manifest.members
            if entry.HasField("witness_key") and entry.state == manifest_pb2.MEMBER_STATE_ACTIVE
        )
        manifest.witness_quorum = min(config.witness_quorum, witnesses)
    for name, rules in sorted(config.purposes.items()):
        policy = manifest.purpose_policies.add(
            purpose=names.purpose_value(name),
            max_uses=rules.max_uses,
            kinds=[names.kind_value(kind) for kind in sorted(rules.kinds)],
        )
        policy.max_validity.FromTimedelta(rules.max_validity)
    return manifest


def publish(
    session: Session,
    *,
    config: RegistryConfig,
    keys: RegistryKeys,
    scorecard: manifest_pb2.Scorecard,
    now: datetime,
) -> Envelope:
    """Sign and store the next manifest version from the database's current state."""
    latest = manifest_rows.latest_manifest(session)
    manifest = build_manifest(
        config=config,
        keys=keys,
        version=(latest.version if latest else 0) + 1,
        now=now,
        members=member_rows.list_members(session),
        revoked_serials=member_rows.revoked_serials(session),
        scorecard=scorecard,
    )
    envelope = sign_manifest(manifest, [keys.root])
    manifest_rows.store_manifest(
        session,
        version=manifest.version,
        issued_at=now,
        expires_at=now + config.manifest_validity,
        envelope=envelope.to_bytes(),
    )
    return envelope
