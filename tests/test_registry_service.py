"""The registry's servicers from the outside: real sockets, real TLS, in-process.

Each registry here runs in a :class:`central_registry.server.RegistryThread`
after ``credence registry init``; no agency node is started, so a lookup that
passes every check yields an INCOMPLETE verdict. The tests take the attacker's
side: rate limits, the HTTP side, the members' port without (or with a foreign
or revoked) certificate, malformed enrolments, and subjects acting on what is
not theirs.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import io
import json
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy.orm import Session
from support.registry import init_registry, running_registry

from central_registry import config as registry_config
from central_registry import database, transparency
from central_registry.keyring import RegistryKeys, load_keys
from central_registry.log.entries import entries_for_subject
from central_registry.publishing import publish
from central_registry.server import RegistryThread
from central_registry.service_members import RegistryServicer
from central_registry.service_public import (
    EnrolmentServicer,
    SubjectAccessServicer,
    TransparencyLogServicer,
)
from central_registry.store import grant_rows, member_rows
from credence.cli import main
from credence.client.enrol import collect_enrolment, enrol
from credence.client.errors import rpc_errors
from credence.client.pinned import fetch_verified_jwks
from credence.client.requester import MemberCredentials, Requester
from credence.client.subject import SubjectClient
from credence.encoding import from_epoch, to_epoch
from credence.enrolment import enrol_proof, status_proof
from credence.envelope import Envelope
from credence.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidInput,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    UnknownKey,
)
from credence.grants import tokens
from credence.grants.subject_proofs import sign_subject_proof
from credence.keys import KeySet, SigningKey, jwk_thumbprint, private_key_pem
from credence.manifest import verify_manifest
from credence.pki import (
    create_ca,
    generate_tls_key,
    issue_member_certificate,
    load_certificate_pem,
    make_csr,
)
from credence.rpc.tls import channel_credentials
from credence.scorecard import default_scorecard
from credence.storage import session_factory
from credence.subjects import PseudonymisationKey, SubjectRef, ref_for
from credence.v1 import agency_pb2, common_pb2, manifest_pb2, registry_pb2, registry_pb2_grpc

# --- a registry under test -----------------------------------------------------------


@dataclass(frozen=True)
class Member:
    """An approved member: what it connects and signs with."""

    member_id: str
    signing_key: SigningKey
    credentials: MemberCredentials


@dataclass
class Registry:
    """A started registry and what a test needs to reach it."""

    data_dir: Path
    thread: RegistryThread
    keys: RegistryKeys

    @property
    def public_address(self) -> str:
        return f"127.0.0.1:{self.thread.public_port}"

    @property
    def members_address(self) -> str:
        return f"127.0.0.1:{self.thread.port}"

    @property
    def ca_pem(self) -> bytes:
        return self.keys.ca.certificate_pem

    @property
    def root(self) -> KeySet:
        return KeySet([self.keys.root.public])

    @property
    def pseudonymisation(self) -> PseudonymisationKey:
        return self.keys.pseudonymisation

    def organisation(self, number: int) -> SubjectRef:
        return ref_for(self.pseudonymisation, f"reg:CN:ORG{number:07d}")

    def cli(self, *argv: str) -> int:
        return main(["registry", *argv[:2], "--dir", str(self.data_dir), *argv[2:]])

    def enrol_member(self, member_id: str, *approve: str, role: str = "company") -> Member:
        """Enrol over the public port, approve with the CLI, collect the certificate."""
        tls_key = generate_tls_key()
        signing_key = SigningKey.generate()
        enrol(
            self.public_address,
            self.ca_pem,
            member_id=member_id,
            display_name=member_id.title(),
            role=role,
            csr_pem=make_csr(tls_key, member_id),
            signing_key=signing_key,
        )
        assert self.cli("members", "approve", member_id, *approve) == 0
        active = collect_enrolment(
            self.public_address, self.ca_pem, member_id=member_id, signing_key=signing_key
        )
        credentials = MemberCredentials(
            member_id, private_key_pem(tls_key), active.certificate_pem, active.ca_pem, signing_key
        )
        return Member(member_id, signing_key, credentials)

    def requester(self, member: Member) -> Requester:
        return Requester(self.members_address, member.credentials, root_keys=self.root)

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction on the registry's own database, as the CLI opens one."""
        config = registry_config.load_config(self.data_dir)
        engine = database.create_engine_for(config.effective_database_url)
        try:
            with session_factory(engine).begin() as session:
                yield session
        finally:
            engine.dispose()

    def member_rows(self) -> list[dict[str, Any]]:
        """``credence registry members list --json``, parsed."""
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert self.cli("members", "list", "--json") == 0
        return [json.loads(line) for line in out.getvalue().splitlines()]


@contextlib.contextmanager
def _registry(data_dir: Path, **limits: float) -> Iterator[Registry]:
    init_registry(data_dir, limits)
    keys = load_keys(registry_config.load_config(data_dir))
    with running_registry(data_dir) as thread:
        yield Registry(data_dir, thread, keys)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A registry with the default (generous) limits, shared by the module."""
    with _registry(tmp_path_factory.mktemp("registry")) as running:
        yield running


@pytest.fixture(scope="module")
def acme(registry: Registry) -> Member:
    return registry.enrol_member("acme")


def _log(registry: Registry, subject: SubjectRef) -> list[tuple[str, str]]:
    with registry.session() as session:
        return [
            (entry.outcome, entry.reason)
            for entry in entries_for_subject(session, subject.ref, datetime.now(UTC))
        ]


def _log_size(registry: Registry) -> int:
    with registry.session() as session:
        return transparency.log_size(session)


# --- 1. rate limits --------------------------------------------------------------------


def test_request_rate_is_refused_with_when_to_retry(tmp_path: Path) -> None:
    with _registry(tmp_path / "registry", requests_per_second=2, burst=2) as registry:
        member = registry.enrol_member("acme")
        subject = registry.organisation(1)
        with registry.requester(member) as requester:
            served, refusal = 0, None
            # The burst of 2 is spent at once; refilling 2/s cannot keep up
            # unless a lookup took half a second.
            while refusal is None and served < 20:
                try:
                    requester.verify_organisation(subject)
                    served += 1
                except ResourceExhausted as exc:
                    refusal = exc
            assert refusal is not None, "20 lookups in a row were served"
            assert "rate limit of 2 lookups/s for 'acme' reached" in str(refusal)
            assert served >= 2
            retry_after = refusal.retry_after
            assert retry_after is not None
            assert 0 < retry_after <= 0.5
            # Honouring the advice is enough to be served again.
            time.sleep(retry_after + 0.05)
            assert requester.verify_organisation(subject).status == "incomplete"
        outcomes = _log(registry, subject)
        refused = [reason for outcome, reason in outcomes if outcome == "refused"]
        assert len(refused) == 1
        assert refused[0].startswith("RESOURCE_EXHAUSTED: rate limit of 2 lookups/s")
        assert [outcome for outcome, _ in outcomes].count("dispatched") == served + 1


def test_distinct_subjects_per_day_are_capped_per_requester(tmp_path: Path) -> None:
    with _registry(tmp_path / "registry", distinct_subjects_per_day=3) as registry:
        acme, beta = registry.enrol_member("acme"), registry.enrol_member("beta")
        first, fourth = registry.organisation(1), registry.organisation(4)
        with registry.requester(acme) as requester:
            for number in (1, 2, 3):
                requester.verify_organisation(registry.organisation(number))
            # A subject already looked up today does not count again.
            assert requester.verify_organisation(first).status == "incomplete"
            size = _log_size(registry)
            for _ in range(2):  # refused, and not counted: a retry is refused too
                with pytest.raises(
                    ResourceExhausted,
                    match="'acme' looked up 4 distinct subjects today, over the limit of 3",
                ) as caught:
                    requester.verify_organisation(fourth)
                retry_after = caught.value.retry_after
                assert retry_after is not None
                assert 0 < retry_after <= 86400  # at the next UTC midnight
            assert _log_size(registry) == size + 2
        assert [outcome for outcome, _ in _log(registry, fourth)] == ["refused", "refused"]
        assert all(
            reason.startswith("RESOURCE_EXHAUSTED: 'acme' looked up 4 distinct subjects")
            for _, reason in _log(registry, fourth)
        )
        # The cap is per requester: another member may still look the subject up.
        with registry.requester(beta) as requester:
            assert requester.verify_organisation(fourth).status == "incomplete"
        assert [outcome for outcome, _ in _log(registry, fourth)][-1] == "dispatched"


# --- 2. the HTTP side --------------------------------------------------------------------


def _http(registry: Registry, method: str, path: str) -> tuple[int, str, bytes]:
    context = ssl.create_default_context(cadata=registry.ca_pem.decode())
    connection = http.client.HTTPSConnection(
        "127.0.0.1", registry.thread.http_port, timeout=10, context=context
    )
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read()
    finally:
        connection.close()


def test_http_manifest_is_the_signed_manifest(registry: Registry, acme: Member) -> None:
    with registry.requester(acme) as requester:
        # The first call of a newly approved member makes the registry look for
        # the manifest that lists it; the HTTP side serves the same one.
        version = requester.refresh_manifest().version
    status, content_type, body = _http(registry, "GET", "/manifest")
    assert (status, content_type) == (200, "application/json")
    manifest = verify_manifest(
        Envelope.from_json(body), trusted_root=registry.root, threshold=1, now=datetime.now(UTC)
    )
    assert manifest.registry.member_id == "registry"
    assert "acme" in manifest.members  # published by the approval
    assert manifest.version == version


def test_http_manifest_signed_by_another_root_is_refused(registry: Registry) -> None:
    body = _http(registry, "GET", "/manifest")[2]
    with pytest.raises(UnknownKey, match="signed only by keys that are not trusted"):
        verify_manifest(
            Envelope.from_json(body),
            trusted_root=KeySet([SigningKey.generate().public]),
            threshold=1,
            now=datetime.now(UTC),
        )


def test_http_jwks_holds_the_registry_signing_key(registry: Registry) -> None:
    status, content_type, body = _http(registry, "GET", "/.well-known/jwks.json")
    assert (status, content_type) == (200, "application/jwk-set+json")
    document = json.loads(body)
    [jwk] = document["keys"]
    assert jwk["kid"] == jwk_thumbprint(jwk) == registry.keys.signing.kid
    assert (jwk["kty"], jwk["crv"]) == ("OKP", "Ed25519")
    assert "d" not in jwk  # the public half only
    assert KeySet.from_jwks(document).resolve(registry.keys.signing.kid) == (
        registry.keys.signing.public
    )


def test_http_side_speaks_no_plain_http(registry: Registry) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", registry.thread.http_port, timeout=10)
    try:
        connection.request("GET", "/.well-known/jwks.json")
        with pytest.raises((http.client.HTTPException, ConnectionError)):
            connection.getresponse()
    finally:
        connection.close()


def test_the_pinned_path_yields_the_manifests_registry_keys(
    registry: Registry, acme: Member
) -> None:
    url = f"https://127.0.0.1:{registry.thread.http_port}"
    now = datetime.now(UTC)
    jwks = fetch_verified_jwks(url, ca_pem=registry.ca_pem, root_keys=registry.root, now=now)
    assert list(jwks) == [registry.keys.signing.kid]
    with pytest.raises(UnknownKey, match="signed only by keys that are not trusted"):
        fetch_verified_jwks(
            url, ca_pem=registry.ca_pem, root_keys=KeySet([SigningKey.generate().public]), now=now
        )


@pytest.mark.parametrize("path", ["/", "/manifest.json", "/.well-known/other", "/../registry.db"])
def test_http_unknown_path_is_not_found(registry: Registry, path: str) -> None:
    status, _, body = _http(registry, "GET", path)
    assert status == 404
    assert b"BEGIN" not in body
    assert b"registry.db" not in body


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_http_side_has_no_write_methods(registry: Registry, method: str) -> None:
    for path in ("/manifest", "/.well-known/jwks.json"):
        assert _http(registry, method, path)[0] == 501


# --- 3. the members' port -----------------------------------------------------------------


def _get_manifest(registry: Registry, credentials: grpc.ChannelCredentials) -> None:
    with grpc.secure_channel(registry.members_address, credentials) as channel, rpc_errors():
        registry_pb2_grpc.RegistryServiceStub(channel).GetManifest(
            registry_pb2.GetManifestRequest(), timeout=10
        )


def test_members_port_refuses_a_client_without_certificate(registry: Registry) -> None:
    with pytest.raises(Unavailable):
        _get_manifest(registry, grpc.ssl_channel_credentials(root_certificates=registry.ca_pem))


def test_members_port_refuses_a_certificate_of_a_foreign_ca(
    registry: Registry, acme: Member
) -> None:
    now = datetime.now(UTC)
    foreign = create_ca("Mallory CA", now - timedelta(minutes=1), timedelta(days=1))
    tls_key = generate_tls_key()
    # Claims to be an approved member, under a CA the federation does not trust.
    certificate = issue_member_certificate(
        foreign, make_csr(tls_key, "acme"), "acme", now, valid_for=timedelta(hours=1)
    )
    credentials = channel_credentials(private_key_pem(tls_key), certificate, registry.ca_pem)
    with pytest.raises(Unavailable):
        _get_manifest(registry, credentials)
    with registry.requester(acme) as requester:  # the genuine member is still served
        assert requester.manifest().member("acme").is_active


def test_members_port_refuses_a_revoked_certificate(registry: Registry) -> None:
    member = registry.enrol_member("revoked-co")
    serial = load_certificate_pem(member.credentials.cert_pem).serial_number
    with registry.requester(member) as requester:
        requester.refresh_manifest()
        config = registry_config.load_config(registry.data_dir)
        now = datetime.now(UTC)
        with registry.session() as session:
            member_rows.revoke_serial(session, f"{serial:x}", "revoked-co", now)
            publish(
                session, config=config, keys=registry.keys, scorecard=default_scorecard(), now=now
            )
        # The registry checks the database for a new manifest every 0.5 s.
        deadline = time.monotonic() + 10
        while True:
            try:
                requester.verify_organisation(registry.organisation(9))
            except Unauthenticated as exc:
                refusal = exc
                break
            assert time.monotonic() < deadline, "the revoked certificate was still accepted"
            time.sleep(0.1)
        assert f"certificate of member 'revoked-co' is revoked (serial {serial:#x})" in str(refusal)
        with pytest.raises(Unauthenticated, match="is revoked"):
            requester.refresh_manifest()


# --- 4. enrolment refusals (public port) --------------------------------------------------


def _enrol_request(member_id: str = "mallory", **changes: Any) -> registry_pb2.EnrolRequest:
    """A well-formed enrolment of a company, with some fields replaced."""
    signing_key: SigningKey = changes.pop("signing_key", SigningKey.generate())
    csr = changes.pop("csr_pem", make_csr(generate_tls_key(), member_id))
    request = registry_pb2.EnrolRequest(
        member_id=member_id,
        display_name="Mallory",
        role=manifest_pb2.ROLE_COMPANY,
        csr_pem=csr.decode(),
        signing_key=common_pb2.PublicKey(kid=signing_key.kid, ed25519=signing_key.public.raw()),
        signing_key_proof=enrol_proof(signing_key, csr),
    )
    for name, value in changes.items():
        if name == "signing_key_message":
            request.signing_key.CopyFrom(value)
        elif name == "record_kinds":
            request.record_kinds[:] = value
        else:
            setattr(request, name, value)
    return request


def _send_enrol(registry: Registry, request: registry_pb2.EnrolRequest) -> None:
    with (
        grpc.secure_channel(
            registry.public_address, grpc.ssl_channel_credentials(root_certificates=registry.ca_pem)
        ) as channel,
        rpc_errors(),
    ):
        registry_pb2_grpc.EnrolmentServiceStub(channel).Enrol(request, timeout=10)


def _agency(**changes: Any) -> registry_pb2.EnrolRequest:
    base: dict[str, Any] = {
        "role": manifest_pb2.ROLE_AGENCY,
        "endpoint": "127.0.0.1:7801",
        "record_kinds": ["court_judgment"],
    }
    return _enrol_request("mallory-agency", **{**base, **changes})


_OTHER_KEY = SigningKey.generate()

Refusal = tuple[Callable[[], registry_pb2.EnrolRequest], type[Exception], str]
ENROLMENT_REFUSALS: dict[str, Refusal] = {
    "csr naming another member": (
        lambda: _enrol_request("mallory", csr_pem=make_csr(generate_tls_key(), "acme")),
        InvalidInput,
        "CSR names credence://member/acme, but the enrolling member is credence://member/mallory",
    ),
    "proof by another key": (
        lambda: _enrol_request(
            signing_key_proof=enrol_proof(_OTHER_KEY, make_csr(generate_tls_key(), "mallory"))
        ),
        Unauthenticated,
        "signature does not verify under key",
    ),
    "key id not its thumbprint": (
        lambda: _enrol_request(
            signing_key_message=common_pb2.PublicKey(
                kid=_OTHER_KEY.kid, ed25519=SigningKey.generate().public.raw()
            )
        ),
        InvalidInput,
        "is not its thumbprint",
    ),
    "short signing key": (
        lambda: _enrol_request(signing_key_message=common_pb2.PublicKey(ed25519=b"\x01" * 31)),
        InvalidInput,
        "an Ed25519 public key is 32 bytes, got 31",
    ),
    "unspecified role": (
        lambda: _enrol_request(role=manifest_pb2.ROLE_UNSPECIFIED),
        InvalidInput,
        "role must be agency, company or authority",
    ),
    "unknown role number": (
        lambda: _enrol_request(role=99),
        InvalidInput,
        "role must be agency, company or authority",
    ),
    "invalid member id": (
        lambda: _enrol_request("../registry", csr_pem=make_csr(generate_tls_key(), "mallory")),
        InvalidInput,
        "member id '../registry' is not valid",
    ),
    "agency without endpoint": (
        lambda: _agency(endpoint=""),
        InvalidInput,
        "an agency enrols with the host:port of its node",
    ),
    "agency without kinds": (
        lambda: _agency(record_kinds=[]),
        InvalidInput,
        "an agency names the record kinds it holds",
    ),
    "unknown record kind": (
        lambda: _agency(record_kinds=["court_judgment", "horoscope"]),
        InvalidInput,
        r"unknown record kinds \['horoscope'\]",
    ),
    "company holding records": (
        lambda: _enrol_request(record_kinds=["court_judgment"]),
        InvalidInput,
        "only agencies hold records",
    ),
}


@pytest.mark.parametrize("case", sorted(ENROLMENT_REFUSALS))
def test_malformed_enrolment_is_refused_and_not_stored(registry: Registry, case: str) -> None:
    make, error, message = ENROLMENT_REFUSALS[case]
    before = registry.member_rows()
    with pytest.raises(error, match=message):
        _send_enrol(registry, make())
    assert registry.member_rows() == before
    assert not {"mallory", "mallory-agency"} & {row["member_id"] for row in before}


def test_duplicate_enrolment_is_refused_and_changes_nothing(
    registry: Registry, acme: Member
) -> None:
    before = registry.member_rows()
    # Mallory asks for acme's id with her own CSR and key: nothing of acme's may change.
    with pytest.raises(AlreadyExists, match="member id 'acme' is already enrolled"):
        _send_enrol(registry, _enrol_request("acme"))
    assert registry.member_rows() == before
    with registry.requester(acme) as requester:
        member = requester.refresh_manifest().member("acme")
    assert [key.kid for key in member.signing_keys] == [acme.signing_key.kid]


def _get_enrolment(
    registry: Registry, member_id: str, key: SigningKey, at: datetime
) -> registry_pb2.GetEnrolmentResponse:
    at = from_epoch(to_epoch(at))
    request = registry_pb2.GetEnrolmentRequest(
        member_id=member_id, proof=status_proof(key, member_id, at)
    )
    request.at.FromDatetime(at)
    with (
        grpc.secure_channel(
            registry.public_address, grpc.ssl_channel_credentials(root_certificates=registry.ca_pem)
        ) as channel,
        rpc_errors(),
    ):
        return registry_pb2_grpc.EnrolmentServiceStub(channel).GetEnrolment(request, timeout=10)


def test_get_enrolment_refusals(registry: Registry, acme: Member) -> None:
    now = datetime.now(UTC)
    assert _get_enrolment(registry, "acme", acme.signing_key, now).certificate_pem
    with pytest.raises(Unauthenticated):  # someone else asking for acme's certificate
        _get_enrolment(registry, "acme", SigningKey.generate(), now)
    with pytest.raises(FailedPrecondition, match=r"enrolment status proof made at .* is stale"):
        _get_enrolment(registry, "acme", acme.signing_key, now - timedelta(minutes=6))
    with pytest.raises(FailedPrecondition, match="in the future"):
        _get_enrolment(registry, "acme", acme.signing_key, now + timedelta(minutes=6))
    with pytest.raises(NotFound, match="no member 'nobody'"):
        _get_enrolment(registry, "nobody", acme.signing_key, now)


def test_a_status_proof_is_bound_to_its_member_id(registry: Registry, acme: Member) -> None:
    beta = registry.enrol_member("beta")
    at = from_epoch(to_epoch(datetime.now(UTC)))
    # beta's genuine proof, sent as a request for acme's certificate.
    request = registry_pb2.GetEnrolmentRequest(
        member_id="acme", proof=status_proof(beta.signing_key, "beta", at)
    )
    request.at.FromDatetime(at)
    with (
        grpc.secure_channel(
            registry.public_address, grpc.ssl_channel_credentials(root_certificates=registry.ca_pem)
        ) as channel,
        pytest.raises(Unauthenticated),
        rpc_errors(),
    ):
        registry_pb2_grpc.EnrolmentServiceStub(channel).GetEnrolment(request, timeout=10)


# --- 5. subject access --------------------------------------------------------------------


@dataclass(frozen=True)
class Subjects:
    """Two persons with bound personal keys and one consent each for acme."""

    ref_a: str
    key_a: SigningKey
    grant_a: str
    ref_b: str
    key_b: SigningKey
    grant_b: str


@pytest.fixture(scope="module")
def subjects(registry: Registry, acme: Member) -> Subjects:
    idv = registry.enrol_member("idv", "--identity-verifier")
    now = datetime.now(UTC)
    made: list[tuple[str, SigningKey, str]] = []
    for name in ("a", "b"):
        ref = hashlib.sha256(f"person {name}".encode()).hexdigest()
        personal = SigningKey.generate()
        binding = tokens.issue_binding(
            subject_ref_hex=ref,
            subject_key=personal.public,
            member_id="idv",
            member_key=idv.signing_key,
            now=now,
            validity=timedelta(days=365),
        )
        with registry.requester(idv) as requester:
            assert requester.register_binding(binding) == personal.kid
        request = tokens.sign_consent_request(
            tokens.ConsentTerms(
                subject_ref=ref,
                requester="acme",
                purpose="credit_assessment",
                scope=("blacklist", "credit"),
                not_before=now,
                expires_at=now + timedelta(days=7),
                max_uses=2,
                data_life=timedelta(days=1),
            ),
            personal,
            now,
        )
        with registry.requester(acme) as requester:
            _, grant_id = requester.issue_consent(request, binding)
        made.append((ref, personal, grant_id))
    (ref_a, key_a, grant_a), (ref_b, key_b, grant_b) = made
    return Subjects(ref_a, key_a, grant_a, ref_b, key_b, grant_b)


def _subject_client(registry: Registry, ref: str, key: SigningKey) -> SubjectClient:
    return SubjectClient(
        registry.public_address,
        registry.ca_pem,
        subject_key=key,
        subject_ref_hex=ref,
        registry_id="registry",
    )


@contextlib.contextmanager
def _subject_stub(registry: Registry) -> Iterator[registry_pb2_grpc.SubjectAccessServiceStub]:
    with grpc.secure_channel(
        registry.public_address, grpc.ssl_channel_credentials(root_certificates=registry.ca_pem)
    ) as channel:
        yield registry_pb2_grpc.SubjectAccessServiceStub(channel)


def test_subject_sees_its_grants(registry: Registry, subjects: Subjects) -> None:
    with _subject_client(registry, subjects.ref_a, subjects.key_a) as client:
        grants = client.grants()
    assert [(grant.grant_id, grant.requester) for grant in grants] == [(subjects.grant_a, "acme")]


def test_unbound_key_is_refused(registry: Registry, subjects: Subjects) -> None:
    # A stranger's key, claiming subject a: no binding holds it.
    with _subject_client(registry, subjects.ref_a, SigningKey.generate()) as client:
        for call in (client.lookups, client.grants):
            with pytest.raises(Unauthenticated):
                call()
        with pytest.raises(Unauthenticated):
            client.revoke(subjects.grant_a)
    # Subject b's genuine key, claiming to be subject a.
    with (
        _subject_client(registry, subjects.ref_a, subjects.key_b) as client,
        pytest.raises(Unauthenticated),
    ):
        client.grants()
    with _subject_client(registry, subjects.ref_a, subjects.key_a) as client:
        assert not client.grants()[0].HasField("revoked_at")


def test_proof_for_another_action_is_refused(registry: Registry, subjects: Subjects) -> None:
    now = datetime.now(UTC)
    proof = sign_subject_proof(
        subject_key=subjects.key_a,
        subject_ref_hex=subjects.ref_a,
        registry_id="registry",
        action="list-grants",
        now=now,
    )
    with _subject_stub(registry) as stub:
        with (
            pytest.raises(
                PermissionDenied,
                match="subject proof is for action 'list-grants', not 'list-lookups'",
            ),
            rpc_errors(),
        ):
            stub.ListMyLookups(registry_pb2.ListMyLookupsRequest(subject_proof=proof), timeout=10)
        with pytest.raises(PermissionDenied, match="not 'revoke-grant'"), rpc_errors():
            stub.RevokeGrant(
                registry_pb2.RevokeGrantRequest(subject_proof=proof, grant_id=subjects.grant_a),
                timeout=10,
            )


def test_proof_for_another_registry_is_refused(registry: Registry, subjects: Subjects) -> None:
    proof = sign_subject_proof(
        subject_key=subjects.key_a,
        subject_ref_hex=subjects.ref_a,
        registry_id="another-registry",
        action="list-grants",
        now=datetime.now(UTC),
    )
    with (
        _subject_stub(registry) as stub,
        pytest.raises(PermissionDenied, match="another-registry"),
        rpc_errors(),
    ):
        stub.ListMyGrants(registry_pb2.ListMyGrantsRequest(subject_proof=proof), timeout=10)


def test_a_subject_proof_is_refused_the_second_time(registry: Registry, subjects: Subjects) -> None:
    # credence.grants.subject_proofs: the registry "refuses one it has seen before".
    proof = sign_subject_proof(
        subject_key=subjects.key_a,
        subject_ref_hex=subjects.ref_a,
        registry_id="registry",
        action="list-lookups",
        now=datetime.now(UTC),
    )
    request = registry_pb2.ListMyLookupsRequest(subject_proof=proof)
    with _subject_stub(registry) as stub:
        with rpc_errors():
            stub.ListMyLookups(request, timeout=10)
        with pytest.raises(AlreadyExists), rpc_errors():
            stub.ListMyLookups(request, timeout=10)


def test_revoke_with_a_proof_naming_another_grant_is_refused(
    registry: Registry, subjects: Subjects
) -> None:
    proof = sign_subject_proof(
        subject_key=subjects.key_a,
        subject_ref_hex=subjects.ref_a,
        registry_id="registry",
        action="revoke-grant",
        now=datetime.now(UTC),
        target="some-other-grant",
    )
    with (
        _subject_stub(registry) as stub,
        pytest.raises(PermissionDenied, match="names another grant"),
        rpc_errors(),
    ):
        stub.RevokeGrant(
            registry_pb2.RevokeGrantRequest(subject_proof=proof, grant_id=subjects.grant_a),
            timeout=10,
        )
    with _subject_client(registry, subjects.ref_a, subjects.key_a) as client:
        assert not client.grants()[0].HasField("revoked_at")


def test_revoking_a_grant_of_another_subject_is_not_found(
    registry: Registry, subjects: Subjects
) -> None:
    with _subject_client(registry, subjects.ref_b, subjects.key_b) as client:
        with pytest.raises(NotFound, match=f"no grant '{subjects.grant_a}' for this subject"):
            client.revoke(subjects.grant_a)
        with pytest.raises(NotFound, match="no grant 'no-such-grant' for this subject"):
            client.revoke("no-such-grant")
    with _subject_client(registry, subjects.ref_a, subjects.key_a) as client:
        assert not client.grants()[0].HasField("revoked_at")
    with registry.session() as session:
        assert grant_rows.get_grant(session, subjects.grant_a).revoked_at is None


def test_subject_revokes_its_own_grant_once(registry: Registry, subjects: Subjects) -> None:
    with _subject_client(registry, subjects.ref_b, subjects.key_b) as client:
        first = client.revoke(subjects.grant_b)
        assert client.revoke(subjects.grant_b) == first  # revoking twice keeps the first time
        [grant] = client.grants()
    assert grant.revoked_at.ToDatetime(tzinfo=UTC) == first
    with registry.session() as session:
        assert grant_rows.get_grant(session, subjects.grant_a).revoked_at is None


# --- 6. every RPC of the proto is implemented --------------------------------------------


def _missing(service_name: str, servicer: type, base: type) -> set[str]:
    service = registry_pb2.DESCRIPTOR.services_by_name[service_name]
    return {
        method.name
        for method in service.methods
        if getattr(servicer, method.name) is getattr(base, method.name)
    }


@pytest.mark.parametrize(
    ("service", "servicer", "base"),
    [
        ("RegistryService", RegistryServicer, registry_pb2_grpc.RegistryServiceServicer),
        ("EnrolmentService", EnrolmentServicer, registry_pb2_grpc.EnrolmentServiceServicer),
        (
            "SubjectAccessService",
            SubjectAccessServicer,
            registry_pb2_grpc.SubjectAccessServiceServicer,
        ),
        (
            "TransparencyLogService",
            TransparencyLogServicer,
            registry_pb2_grpc.TransparencyLogServiceServicer,
        ),
    ],
)
def test_every_rpc_of_the_proto_is_implemented(service: str, servicer: type, base: type) -> None:
    assert _missing(service, servicer, base) == set()


def test_every_service_of_the_proto_is_covered_above() -> None:
    assert set(registry_pb2.DESCRIPTOR.services_by_name) == {
        "RegistryService",
        "EnrolmentService",
        "SubjectAccessService",
        "TransparencyLogService",
    }


def test_public_port_does_not_serve_the_members_service(registry: Registry) -> None:
    with grpc.secure_channel(
        registry.public_address, grpc.ssl_channel_credentials(root_certificates=registry.ca_pem)
    ) as channel:
        stub = registry_pb2_grpc.RegistryServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.RequestVerdict(
                registry_pb2.RequestVerdictRequest(
                    grant=agency_pb2.Grant(public_register=agency_pb2.PublicRegisterBasis())
                ),
                timeout=10,
            )
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
