"""The requester SDK: verdicts, screening, enrolment and the subject's own access.

``requester`` holds :class:`Requester` (``RequestVerdict``, ``ScreenBatch``,
grants), ``results`` the verified outcomes it returns, ``screening`` resumable
file screening, ``enrol`` a member's enrolment, ``subject`` a subject's access
to their own lookups, grants and contests, ``errors`` gRPC statuses back to
domain errors, ``channel`` the channel handling both clients share.
"""

from credence.client.requester import MemberCredentials, Requester
from credence.client.results import ScreenOutcome, ScreenRow, VerifiedVerdict

__all__ = ["MemberCredentials", "Requester", "ScreenOutcome", "ScreenRow", "VerifiedVerdict"]
