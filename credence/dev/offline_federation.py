"""A federation without a registry: root and registry keys, CA, signed manifests.

Plays the registry's part offline: it enrols members (keys and certificates),
signs manifests, and signs queries, batches and consents exactly as
:mod:`credence.queries` and :mod:`credence.grants.tokens` build them. Tests and
benchmarks drive a node against real bytes with it, and a node operator can try
a node without running a registry; :func:`agency_node.offline_node.write_node_dir`
writes the node's data directory from it, as ``credence node init`` and
``credence node install`` would leave it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from credence import queries
from credence.blind.masks import agreement_key, public_bytes
from credence.encoding import b64url_decode
from credence.envelope import Envelope
from credence.grants import tokens
from credence.keys import KeySet, SigningKey, private_key_pem
from credence.manifest import sign_manifest
from credence.pki import (
    CertificateAuthority,
    create_ca,
    generate_tls_key,
    issue_member_certificate,
    make_csr,
)
from credence.queries import Lookup
from credence.scorecard import default_scorecard
from credence.subjects import PseudonymisationKey, SubjectRef, ref_for
from credence.transparency import log_promise
from credence.v1 import agency_pb2, common_pb2, manifest_pb2

REGISTRY_ID = "registry"
NOW = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)


@dataclass
class Member:
    """A member's keys and certificate."""

    member_id: str
    signing_key: SigningKey
    tls_key_pem: bytes
    cert_pem: bytes
    #: The X25519 key agreement key an agency's manifest entry publishes (blind aggregation).
    agreement_key: X25519PrivateKey = field(default_factory=agreement_key)


@dataclass
class Federation:
    """Keys and documents of one test federation."""

    root_key: SigningKey
    registry_key: SigningKey
    ca: CertificateAuthority
    pseudonymisation_key: PseudonymisationKey
    members: dict[str, Member] = field(default_factory=dict)
    agencies: dict[str, tuple[str, ...]] = field(default_factory=dict)
    identity_verifiers: set[str] = field(default_factory=set)
    authorities: set[str] = field(default_factory=set)
    suspended: set[str] = field(default_factory=set)
    revoked_kids: set[str] = field(default_factory=set)
    version: int = 0

    @classmethod
    def create(cls) -> Federation:
        """A federation with fresh root and registry keys, a CA, and the registry enrolled."""
        root = SigningKey.generate()
        federation = cls(
            root_key=root,
            registry_key=SigningKey.generate(),
            ca=create_ca("Credence test CA", NOW - timedelta(days=1), timedelta(days=3650)),
            pseudonymisation_key=PseudonymisationKey.generate(),
        )
        federation.enrol(REGISTRY_ID, hosts=("127.0.0.1",))
        return federation

    def enrol(self, member_id: str, *, hosts: Sequence[str] = ()) -> Member:
        """Admit ``member_id``: a signing key, a TLS key and a certificate for ``hosts``."""
        tls_key = generate_tls_key()
        cert = issue_member_certificate(
            self.ca,
            make_csr(tls_key, member_id),
            member_id,
            NOW - timedelta(days=1),
            valid_for=timedelta(days=3000),
            hosts=hosts,
        )
        member = Member(member_id, SigningKey.generate(), private_key_pem(tls_key), cert)
        self.members[member_id] = member
        return member

    def add_agency(self, member_id: str, kinds: Sequence[str]) -> Member:
        """Admit ``member_id`` as an agency holding ``kinds``, serving on loopback."""
        self.agencies[member_id] = tuple(kinds)
        return self.enrol(member_id, hosts=("127.0.0.1",))

    def manifest_envelope(self, *, now: datetime = NOW) -> Envelope:
        """The next manifest version listing every member, signed by the root key."""
        self.version += 1
        manifest = manifest_pb2.Manifest(
            federation_id="test-federation",
            version=self.version,
            root_keys=[_public(self.root_key)],
            root_threshold=1,
            registry=manifest_pb2.RegistryInfo(
                member_id=REGISTRY_ID,
                endpoint="127.0.0.1:1",
                signing_keys=[_public(self.registry_key)],
                ca_cert_pem=self.ca.certificate_pem.decode(),
                log_id=self.registry_key.kid,
            ),
            scorecard=default_scorecard(),
            revoked_kids=sorted(self.revoked_kids),
        )
        manifest.issued_at.FromDatetime(now - timedelta(hours=1))
        manifest.expires_at.FromDatetime(now + timedelta(days=3650))
        for purpose in (1, 2, 3, 4, 5):
            policy = manifest.purpose_policies.add(purpose=purpose, max_uses=10)
            policy.max_validity.FromTimedelta(timedelta(days=90))
            policy.kinds.extend([common_pb2.VERDICT_KIND_BLACKLIST, common_pb2.VERDICT_KIND_CREDIT])
        for member_id, member in sorted(self.members.items()):
            if member_id == REGISTRY_ID:
                continue
            entry = manifest.members.add(
                member_id=member_id,
                display_name=member_id,
                state=manifest_pb2.MEMBER_STATE_SUSPENDED
                if member_id in self.suspended
                else manifest_pb2.MEMBER_STATE_ACTIVE,
                signing_keys=[_public(member.signing_key)],
                identity_verifier=member_id in self.identity_verifiers,
            )
            if member_id in self.agencies:
                entry.role = manifest_pb2.ROLE_AGENCY
                entry.endpoint = "127.0.0.1:1"
                entry.record_kinds.extend(self.agencies[member_id])
                entry.agreement_key = public_bytes(member.agreement_key)
                entry.contributes.extend(
                    [common_pb2.VERDICT_KIND_BLACKLIST, common_pb2.VERDICT_KIND_CREDIT]
                )
            elif member_id in self.authorities:
                entry.role = manifest_pb2.ROLE_AUTHORITY
            else:
                entry.role = manifest_pb2.ROLE_COMPANY
        return sign_manifest(manifest, [self.root_key])

    # -- the registry's side of a lookup --------------------------------------------

    def subject(self, identifier: str) -> SubjectRef:
        """The federation's reference of ``identifier``."""
        return ref_for(self.pseudonymisation_key, identifier)

    def query(
        self,
        subject: SubjectRef,
        *,
        requester: str = "acme",
        purpose: int = common_pb2.PURPOSE_COUNTERPARTY_VERIFICATION,
        kinds: Sequence[int] = (common_pb2.VERDICT_KIND_BLACKLIST,),
        grant: agency_pb2.Grant | None = None,
        grant_id: str = "",
        now: datetime = NOW,
        audience: Sequence[str] = (),
        registry_key: SigningKey | None = None,
        query_id: str | None = None,
        lifetime: timedelta = timedelta(seconds=60),
        tamper_promise: bool = False,
    ) -> Envelope:
        """A query for ``subject`` as the registry signs it, with its log promise."""
        lookup = Lookup(
            subject=subject,
            grant=grant or queries.public_register(),
            grant_id=grant_id,
            query_id=query_id or queries.new_query_id(),
        )
        entry = lookup.log_entry(requester=requester, purpose=purpose, kinds=kinds, issued_at=now)
        if tamper_promise:
            entry = dataclasses.replace(entry, requester="someone-else")
        promise = log_promise.make_promise(
            entry,
            log_promise.new_salt(),
            log_id=self.registry_key.kid,
            promised_at=now,
            max_merge_delay=timedelta(minutes=5),
        )
        return queries.sign_query(
            lookup,
            requester=requester,
            purpose=purpose,
            kinds=kinds,
            audience=audience or sorted(self.agencies),
            scorecard_version="v1",
            now=now,
            promise=log_promise.sign_promise(promise, self.registry_key),
            registry_key=registry_key or self.registry_key,
            lifetime=lifetime,
        )

    def batch(
        self,
        lookups: Sequence[Lookup],
        *,
        requester: str = "acme",
        purpose: int = common_pb2.PURPOSE_COUNTERPARTY_VERIFICATION,
        kinds: Sequence[int] = (common_pb2.VERDICT_KIND_BLACKLIST,),
        now: datetime = NOW,
    ) -> Envelope:
        """A batch of ``lookups`` as the registry signs it, one promise per lookup."""
        signed = []
        for lookup in lookups:
            entry = lookup.log_entry(
                requester=requester, purpose=purpose, kinds=kinds, issued_at=now
            )
            signed.append(
                (
                    lookup,
                    log_promise.make_promise(
                        entry,
                        log_promise.new_salt(),
                        log_id=self.registry_key.kid,
                        promised_at=now,
                        max_merge_delay=timedelta(minutes=5),
                    ),
                )
            )
        return queries.sign_batch(
            signed,
            requester=requester,
            purpose=purpose,
            kinds=kinds,
            audience=sorted(self.agencies),
            scorecard_version="v1",
            now=now,
            registry_key=self.registry_key,
        )

    def consent(
        self,
        subject: SubjectRef,
        *,
        identity_member: str,
        requester: str,
        purpose: str = "credit_assessment",
        scope: Sequence[str] = ("credit",),
        now: datetime = NOW,
        subject_key: SigningKey | None = None,
    ) -> tuple[agency_pb2.Grant, str]:
        """A consent token for ``subject``, bound by ``identity_member``, and its ``jti``."""
        subject_key = subject_key or SigningKey.generate()
        binding = tokens.issue_binding(
            subject_ref_hex=subject.hex(),
            subject_key=subject_key.public,
            member_id=identity_member,
            member_key=self.members[identity_member].signing_key,
            now=now,
            validity=timedelta(days=365),
        )
        request = tokens.sign_consent_request(
            tokens.ConsentTerms(
                subject_ref=subject.hex(),
                requester=requester,
                purpose=purpose,
                scope=tuple(scope),
                not_before=now - timedelta(minutes=1),
                expires_at=now + timedelta(days=30),
                max_uses=3,
                data_life=timedelta(days=7),
            ),
            subject_key,
            now,
        )
        consent = tokens.countersign_consent(
            request,
            binding,
            registry_key=self.registry_key,
            registry_id=REGISTRY_ID,
            identity_keys=KeySet([self.members[identity_member].signing_key.public]),
            now=now,
            policy={purpose: tokens.PurposePolicy(timedelta(days=90), 10)},
        )
        claims = json.loads(b64url_decode(consent.split(".")[1]))
        return agency_pb2.Grant(consent_token=consent), str(claims["jti"])


def _public(key: SigningKey) -> common_pb2.PublicKey:
    return common_pb2.PublicKey(kid=key.kid, ed25519=key.public.raw())
