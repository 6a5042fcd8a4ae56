"""The one map from domain errors to gRPC status codes.

The grpc.aio servicers get :func:`grpc_errors_async` around every handler from
the decorators of :mod:`credence.rpc.handlers`; :func:`grpc_errors` is the same
for thread-pool servers. A :class:`CredenceError` becomes
its mapped status with its message as the one-line reason; anything else is
logged with its traceback and becomes INTERNAL with a generic reason, so no
internal detail leaks to the caller.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import NoReturn

import grpc
import grpc.aio

from credence import errors

_log = logging.getLogger(__name__)

# Most specific class first: the first isinstance match wins.
STATUS_BY_ERROR: dict[type[errors.CredenceError], grpc.StatusCode] = {
    errors.MessageTooLarge: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.InvalidIdentifier: grpc.StatusCode.INVALID_ARGUMENT,
    errors.InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    errors.CertificateRefused: grpc.StatusCode.UNAUTHENTICATED,
    errors.UnknownKey: grpc.StatusCode.UNAUTHENTICATED,
    errors.BadSignature: grpc.StatusCode.UNAUTHENTICATED,
    errors.WrongPayloadType: grpc.StatusCode.INVALID_ARGUMENT,
    errors.Expired: grpc.StatusCode.FAILED_PRECONDITION,
    errors.NotYetValid: grpc.StatusCode.FAILED_PRECONDITION,
    errors.WrongAudience: grpc.StatusCode.PERMISSION_DENIED,
    errors.WrongIssuer: grpc.StatusCode.UNAUTHENTICATED,
    errors.ClaimMismatch: grpc.StatusCode.PERMISSION_DENIED,
    errors.RolledBack: grpc.StatusCode.FAILED_PRECONDITION,
    errors.VerificationError: grpc.StatusCode.UNAUTHENTICATED,
    errors.Replayed: grpc.StatusCode.ALREADY_EXISTS,
    errors.Revoked: grpc.StatusCode.PERMISSION_DENIED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.CredenceError: grpc.StatusCode.UNKNOWN,
}

INTERNAL_REASON = "internal error; the server logged the details"


def status_for(error: errors.CredenceError) -> grpc.StatusCode:
    """The gRPC status code a domain error maps to."""
    for cls, code in STATUS_BY_ERROR.items():
        if isinstance(error, cls):
            return code
    return grpc.StatusCode.UNKNOWN  # pragma: no cover - CredenceError is mapped


def reason_for(error: errors.CredenceError) -> str:
    """The one-line reason sent to the caller, with retry advice when known."""
    reason = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, errors.ResourceExhausted) and error.retry_after is not None:
        reason = f"{reason}; retry after {error.retry_after:.1f}s"
    return reason


def _trailers(error: errors.CredenceError) -> tuple[tuple[str, str], ...]:
    if isinstance(error, errors.ResourceExhausted) and error.retry_after is not None:
        return (("retry-after", f"{error.retry_after:.3f}"),)
    return ()


@contextmanager
def grpc_errors(context: grpc.ServicerContext) -> Iterator[None]:
    """Turn domain errors raised in a sync handler into gRPC statuses."""
    try:
        yield
    except errors.CredenceError as exc:
        if trailers := _trailers(exc):
            context.set_trailing_metadata(trailers)
        context.abort(status_for(exc), reason_for(exc))
    except Exception:
        if _is_abort_in_progress(context):
            raise
        _log.exception("unexpected error in handler")
        context.abort(grpc.StatusCode.INTERNAL, INTERNAL_REASON)


def _is_abort_in_progress(context: grpc.ServicerContext) -> bool:
    # context.abort raises a plain Exception after setting the status; let it pass.
    code = getattr(context, "code", None)
    return callable(code) and code() is not None


@asynccontextmanager
async def grpc_errors_async(
    context: grpc.aio.ServicerContext[object, object],
) -> AsyncIterator[None]:
    """Turn domain errors raised in a grpc.aio handler into gRPC statuses."""
    try:
        yield
    except errors.CredenceError as exc:
        if trailers := _trailers(exc):
            context.set_trailing_metadata(trailers)
        await _abort(context, status_for(exc), reason_for(exc))
    except grpc.aio.AbortError:
        raise
    except Exception:
        _log.exception("unexpected error in handler")
        await _abort(context, grpc.StatusCode.INTERNAL, INTERNAL_REASON)


async def _abort(
    context: grpc.aio.ServicerContext[object, object], code: grpc.StatusCode, reason: str
) -> NoReturn:
    await context.abort(code, reason)
    raise AssertionError("unreachable: abort raises")  # pragma: no cover
