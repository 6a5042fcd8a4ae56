"""What the portal asks of the federation, as the subject, with the subject's own key.

:class:`SubjectDesk` is the portal's view of those calls (tests hand in their
own); :class:`ClientDesk` makes them with the same key and binding files as
``credence me lookups``: the key is read here and only signs proofs here.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from credence.client.subject import ReviewView, SubjectClient
from credence.client.subject_records import AgencyAnswer, fetch_records
from credence.manifest import TrustedManifest
from credence.v1 import registry_pb2

__all__ = ["ClientDesk", "SubjectDesk"]


class SubjectDesk(Protocol):
    """The subject's calls the portal makes (each may raise a CredenceError)."""

    def lookups(self) -> list[registry_pb2.LookupRecord]: ...  # noqa: D102
    def grants(self) -> list[registry_pb2.GrantRecord]: ...  # noqa: D102
    def revoke(self, grant_id: str) -> datetime: ...  # noqa: D102
    def contest(self, agency: str, statement: str, record_kind: str) -> tuple[str, int]: ...  # noqa: D102
    def contests(self) -> list[registry_pb2.ContestRecord]: ...  # noqa: D102
    def records(self) -> list[AgencyAnswer]: ...  # noqa: D102
    def agencies(self) -> dict[str, tuple[str, ...]]: ...  # noqa: D102
    def explanations(self) -> list[registry_pb2.Explanation]: ...  # noqa: D102
    def request_review(self, verdict_id: str, statement: str) -> registry_pb2.ReviewRecord: ...  # noqa: D102
    def reviews(self) -> list[ReviewView]: ...  # noqa: D102


class ClientDesk:
    """:class:`SubjectDesk` over a :class:`SubjectClient` (one channel for the portal's life).

    Args:
        client: the subject's client (closed by :meth:`close`).
        binding: the binding token of the subject's key (the agencies check it).
        manifest: the federation's current verified manifest, fetched when called.
    """

    def __init__(
        self, client: SubjectClient, *, binding: str, manifest: Callable[[], TrustedManifest]
    ) -> None:
        self._client = client
        self._binding = binding
        self._manifest = manifest

    def lookups(self) -> list[registry_pb2.LookupRecord]:
        """See :meth:`SubjectClient.lookups`.

        Raises:
            CredenceError: refused, or the registry could not be reached.
        """
        return self._client.lookups()

    def grants(self) -> list[registry_pb2.GrantRecord]:
        """See :meth:`SubjectClient.grants`.

        Raises:
            CredenceError: refused, or the registry could not be reached.
        """
        return self._client.grants()

    def revoke(self, grant_id: str) -> datetime:
        """See :meth:`SubjectClient.revoke`.

        Raises:
            NotFound: no such grant of this subject.
            CredenceError: refused, or the registry could not be reached.
        """
        return self._client.revoke(grant_id)

    def contest(self, agency: str, statement: str, record_kind: str) -> tuple[str, int]:
        """See :meth:`SubjectClient.contest`.

        Raises:
            InvalidInput: an empty statement, or a kind the agency does not hold.
            CredenceError: refused, or the registry or agency could not be reached.
        """
        return self._client.contest(agency, statement, record_kind)

    def contests(self) -> list[registry_pb2.ContestRecord]:
        """See :meth:`SubjectClient.contests`.

        Raises:
            CredenceError: refused, or the registry could not be reached.
        """
        return self._client.contests()

    def records(self) -> list[AgencyAnswer]:
        """Every agency's records, sealed to a fresh key and opened here.

        Raises:
            CredenceError: refused, or the registry could not be reached.
        """
        return fetch_records(self._client, binding=self._binding, manifest=self._manifest())

    def agencies(self) -> dict[str, tuple[str, ...]]:
        """The federation's active agencies and the record kinds each holds (the manifest's).

        Raises:
            CredenceError: the manifest could not be fetched or did not verify.
        """
        return {
            member.member_id: member.record_kinds
            for member in sorted(self._manifest().members.values(), key=lambda m: m.member_id)
            if member.is_active and member.role_name == "agency"
        }

    def explanations(self) -> list[registry_pb2.Explanation]:
        """See :meth:`SubjectClient.explanations`.

        Raises:
            VerificationError: an explanation is not the registry's, or its figures do not
                follow from the scorecard.
            CredenceError: refused, or the registry could not be reached.
        """
        return self._client.explanations()

    def request_review(self, verdict_id: str, statement: str) -> registry_pb2.ReviewRecord:
        """See :meth:`SubjectClient.request_review`.

        Raises:
            NotFound: no such verdict about the subject.
            FailedPrecondition: a review of that verdict is open already.
            CredenceError: refused, or the registry could not be reached.
        """
        return self._client.request_review(verdict_id, statement)

    def reviews(self) -> list[ReviewView]:
        """See :meth:`SubjectClient.reviews`.

        Raises:
            VerificationError: a decision is not signed by the registry, or not this review's.
            CredenceError: refused, or the registry could not be reached.
        """
        return self._client.reviews()

    def close(self) -> None:
        """Close the channel to the registry."""
        self._client.close()
