"""Relaying a subject's sealed-records request to every agency, and their sealed answers back.

``credence me records``: the subject sends a subject proof (action
``list-records``) naming the hash of a fresh HPKE public key, the binding of
its personal key, and the key. The registry checks the proof like every other
subject access call (bound key, audience, once only) and that it names the key
sent, spends one call of the subject's own rate bucket (the request asks every
agency), and only then relays the request unchanged to each active agency's
node, in parallel, each under a deadline. Each node seals its answer to the
subject's key and signs it; the registry checks the signature and the labels
(agency, request id, key hash) and relays the ciphertext, which it cannot
open. Nothing of an answer is stored or logged here: one log line per request
says how many agencies answered.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import grpc
import grpc.aio
from sqlalchemy import Engine

from central_registry import grants
from central_registry.keyring import RegistryKeys
from central_registry.limits.buckets import TokenBucket
from central_registry.limits.public import bucket_key, check_text
from central_registry.limits.rate_store import take_rate_tokens
from central_registry.manifest_cache import ManifestCache
from credence import sealed_records
from credence.clock import Clock
from credence.envelope import Envelope
from credence.errors import ClaimMismatch, CredenceError, InvalidInput, ResourceExhausted
from credence.grants.binding import BINDING_MAX_SIZE
from credence.grants.subject_proofs import MAX_PROOF_SIZE, SubjectProof
from credence.manifest import TrustedManifest
from credence.rpc.tls import channel_credentials
from credence.storage import immediate_writer, session_factory
from credence.v1 import agency_pb2_grpc, manifest_pb2, subject_records_pb2

_log = logging.getLogger(__name__)

#: The rate bucket's action name (its key also holds a hash of the subject reference).
_BUCKET = "subject-records"


@dataclass(frozen=True)
class RecordAccessLimits:
    """How often one subject may ask every agency, and how long each agency has."""

    #: Requests per second per subject (default: one a minute) ...
    per_second: float = 1 / 60
    #: ... with this many at once.
    burst: float = 5
    #: Each agency's deadline, in seconds (under the subject client's own 10 s).
    agency_timeout: float = 8.0


def check_request(request: subject_records_pb2.ListMyRecordsRequest) -> None:
    """Bound the request's fields before anything is verified.

    Raises:
        InvalidInput: a field is too long, holds control characters, or the
            recipient key is not the size of the suite's public key.
    """
    check_text("subject_proof", request.subject_proof, MAX_PROOF_SIZE, required=True)
    check_text("binding", request.binding, BINDING_MAX_SIZE, required=True)
    if len(request.recipient_key) != sealed_records.RECIPIENT_KEY_SIZE:
        raise InvalidInput(
            f"recipient_key is {len(request.recipient_key)} bytes; an "
            f"{sealed_records.SUITE_NAME} public key is {sealed_records.RECIPIENT_KEY_SIZE}"
        )


class RecordAccess:
    """The relay of ``SubjectAccessService.ListMyRecords``."""

    def __init__(
        self,
        *,
        engine: Engine,
        registry_id: str,
        manifests: ManifestCache,
        keys: RegistryKeys,
        clock: Clock,
        limits: RecordAccessLimits = RecordAccessLimits(),
    ) -> None:
        # The proof's jti and the subject's bucket are read then written: lock up front.
        self._sessions = session_factory(immediate_writer(engine))
        self._registry_id = registry_id
        self._manifests = manifests
        self._keys = keys
        self._clock = clock
        self._limits = limits
        self._bucket = TokenBucket(limits.per_second, limits.burst)

    def _admit(self, request: subject_records_pb2.ListMyRecordsRequest) -> SubjectProof:
        """Check the proof (once only), that it names the key sent, and spend the subject's rate.

        Raises:
            VerificationError: the proof is not the subject's, not for this
                action, or names another key.
            Replayed: the proof was used before.
            ResourceExhausted: the subject asked too often.
        """
        now = self._clock()
        with self._sessions.begin() as session:
            proof = grants.check_subject_proof(
                session,
                request.subject_proof,
                action=sealed_records.ACTION,
                registry_id=self._registry_id,
                now=now,
            )
            if proof.target != sealed_records.key_target(bytes(request.recipient_key)):
                raise ClaimMismatch(
                    "the subject proof names another recipient key: sign the proof over "
                    "the key you send"
                )
            try:
                take_rate_tokens(session, bucket_key(_BUCKET, proof.subject_ref), self._bucket, now)
            except ResourceExhausted as exc:
                raise ResourceExhausted(
                    "you asked every agency for your records too often: the limit is "
                    f"{self._limits.burst:g} requests, then one every "
                    f"{1 / self._limits.per_second:g} s",
                    retry_after=exc.retry_after,
                ) from None
        return proof

    async def records(
        self, request: subject_records_pb2.ListMyRecordsRequest
    ) -> subject_records_pb2.ListMyRecordsResponse:
        """Relay the request to every active agency and their sealed answers back.

        Raises:
            InvalidInput: a field is too long or the recipient key malformed.
            VerificationError: the proof does not check out; nothing is relayed.
            Replayed: the proof was used before; nothing is relayed.
            ResourceExhausted: the subject asked too often; nothing is relayed.
        """
        check_request(request)
        proof = await asyncio.to_thread(self._admit, request)
        manifest = self._manifests.current()
        agencies = sorted(
            member.member_id
            for member in manifest.members.values()
            if member.is_active and member.role == manifest_pb2.ROLE_AGENCY
        )
        relayed = subject_records_pb2.ListSubjectRecordsRequest(
            subject_proof=request.subject_proof,
            binding=request.binding,
            recipient_key=request.recipient_key,
        )
        answers = await asyncio.gather(
            *(self._ask(agency, relayed, proof.jti, manifest) for agency in agencies)
        )
        answered = sum(answer.HasField("sealed") for answer in answers)
        _log.info(
            "subject access request %s: sealed records from %d of %d agencies relayed",
            proof.jti,
            answered,
            len(agencies),
        )
        return subject_records_pb2.ListMyRecordsResponse(agencies=answers)

    async def _ask(
        self,
        agency: str,
        request: subject_records_pb2.ListSubjectRecordsRequest,
        request_id: str,
        manifest: TrustedManifest,
    ) -> subject_records_pb2.AgencyRecords:
        """One agency's sealed answer, checked; or why there is none."""
        keys = self._keys
        credentials = channel_credentials(
            keys.tls_key_pem, keys.tls_cert_pem, keys.ca.certificate_pem
        )
        try:
            async with grpc.aio.secure_channel(
                manifest.member(agency).endpoint, credentials
            ) as channel:
                stub = agency_pb2_grpc.AgencyNodeServiceStub(channel)
                response = await stub.ListSubjectRecords(
                    request, timeout=self._limits.agency_timeout
                )
        except grpc.aio.AioRpcError as exc:
            reason = f"{agency} did not answer ({exc.code().name}): {exc.details() or 'no detail'}"
            return subject_records_pb2.AgencyRecords(agency=agency, unavailable=reason[:300])
        try:
            envelope = Envelope.from_proto(response.sealed)
            sealed_records.check_sealed(
                envelope,
                agency_keys=manifest.member_keys(agency),
                agency=agency,
                request_id=request_id,
                recipient_key=bytes(request.recipient_key),
            )
        except CredenceError as exc:
            _log.warning(
                "subject access request %s: %s sent a bad sealed answer", request_id, agency
            )
            return subject_records_pb2.AgencyRecords(
                agency=agency, unavailable=f"{agency} sent an answer that does not check: {exc}"
            )
        return subject_records_pb2.AgencyRecords(agency=agency, sealed=response.sealed)
