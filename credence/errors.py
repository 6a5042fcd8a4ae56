"""The one hierarchy of domain errors that Credence raises.

Every error a caller can act on is a subclass of :class:`CredenceError`, and
its message says what to fix (``grant expired at 2026-11-28T10:00:00Z (now
10:05:12Z)``, not ``invalid token``). Verification functions raise one of these
and never return a bool, so a caller cannot forget to check.

Which gRPC status each class becomes is decided in one place,
:mod:`credence.rpc.status`; a test proves every class here has a mapping.
"""

from __future__ import annotations


class CredenceError(Exception):
    """Base of every domain error; the message is safe to show the caller."""


# --- bad input -------------------------------------------------------------


class InvalidInput(CredenceError):
    """The caller sent something malformed: fix the input and try again."""


class InvalidIdentifier(InvalidInput):
    """A national identifier or registration number broke a normalisation rule."""


class MessageTooLarge(InvalidInput):
    """A message, token or document is larger than the limit for its kind."""


# --- verification ----------------------------------------------------------


class VerificationError(CredenceError):
    """A signature, token or signed document did not verify."""


class UnknownKey(VerificationError):
    """The key id is not in the key set the verifier trusts."""


class BadSignature(VerificationError):
    """A signature does not match the signed bytes under the named key."""


class WrongPayloadType(VerificationError):
    """A signed envelope carries a different payload type than expected."""


class Expired(VerificationError):
    """A token, envelope or document is past its expiry."""


class NotYetValid(VerificationError):
    """A token or document is not valid yet (``nbf`` or issue time in the future)."""


class WrongAudience(VerificationError):
    """A token or message was issued for someone else."""


class WrongIssuer(VerificationError):
    """A token or message names an issuer the verifier does not accept."""


class ClaimMismatch(VerificationError):
    """A token's claims do not match what it is being used for."""


class RolledBack(VerificationError):
    """A signed document is older than the version already held."""


class CertificateRefused(VerificationError):
    """A peer certificate is not issued by the federation CA, or is revoked."""


# --- authorisation and state ----------------------------------------------


class PermissionDenied(CredenceError):
    """The caller is authenticated but not allowed to do this."""


class Unauthenticated(CredenceError):
    """The caller's identity could not be established."""


class Replayed(PermissionDenied):
    """A message with this id was seen before and is refused."""


class Revoked(PermissionDenied):
    """A grant, key or certificate has been revoked."""


class FailedPrecondition(CredenceError):
    """The system is not in a state where this can be done (e.g. schema behind)."""


class NotFound(CredenceError):
    """The named thing does not exist."""


class AlreadyExists(CredenceError):
    """The thing being created exists already."""


class ResourceExhausted(CredenceError):
    """A rate limit or quota was hit; ``retry_after`` says when to retry (seconds)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(CredenceError):
    """A peer or dependency is down; the same call may succeed later."""


class DeadlineExceeded(CredenceError):
    """The work did not finish within its deadline."""
