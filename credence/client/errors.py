"""Failed gRPC calls as domain errors: the one map of the client side.

Every client module (:mod:`credence.client.requester`, :mod:`credence.client.enrol`,
:mod:`credence.client.subject`) makes its calls inside :func:`rpc_errors`, so
a script catches :mod:`credence.errors` classes only. It mirrors
:mod:`credence.rpc.status`, which maps the other way on the server.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

import grpc

from credence.errors import (
    AlreadyExists,
    CredenceError,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidInput,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)

__all__ = ["error_from_code", "error_from_rpc", "error_from_status", "rpc_errors"]

Metadata = Sequence[tuple[str, str | bytes]]

_ERROR_BY_STATUS: dict[grpc.StatusCode, type[CredenceError]] = {
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidInput,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
}
_STATUS_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def error_from_status(
    code: grpc.StatusCode, details: str, trailing_metadata: Metadata = ()
) -> CredenceError:
    """The domain error for a gRPC status: the one map of the client side.

    Args:
        code: the status code of the failed call.
        details: the server's one-line reason.
        trailing_metadata: the call's trailers; ``retry-after`` (seconds) is
            read for RESOURCE_EXHAUSTED.

    Returns:
        The error to raise; its message is the server's reason, with advice
        where the reason alone does not say what to do.
    """
    reason = details or f"the server gave no reason ({code.name})"
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return ResourceExhausted(reason, retry_after=_retry_after(trailing_metadata))
    if code == grpc.StatusCode.UNAVAILABLE:
        return Unavailable(f"{reason}; check the address and that the server runs, then retry")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded(f"{reason}; retry, or allow a longer timeout")
    error_class = _ERROR_BY_STATUS.get(code)
    if error_class is None:
        return CredenceError(f"{code.name}: {reason}")
    return error_class(reason)


def _retry_after(trailing_metadata: Metadata) -> float | None:
    for key, value in trailing_metadata:
        if key.lower() != "retry-after":
            continue
        text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
        try:
            seconds = float(text)
        except ValueError:
            return None
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    return None


def error_from_rpc(error: grpc.RpcError) -> CredenceError:
    """The domain error for a failed call (see :func:`error_from_status`)."""
    try:
        code, details, trailers = error.code(), error.details(), error.trailing_metadata()
    except AttributeError:  # a bare RpcError, raised without a call's status
        return CredenceError(f"gRPC call failed: {error!r}")
    return error_from_status(code, details or "", _pairs(trailers or ()))


def _pairs(trailers: Iterable[object]) -> list[tuple[str, str | bytes]]:
    # grpc hands trailers as (key, value) namedtuples; the stubs type them otherwise.
    pairs: list[tuple[str, str | bytes]] = []
    for item in trailers:
        if isinstance(item, tuple) and len(item) == 2:
            key, value = item
            if isinstance(key, str) and isinstance(value, str | bytes):
                pairs.append((key, value))
    return pairs


@contextmanager
def rpc_errors() -> Iterator[None]:
    """Raise failed gRPC calls inside the block as domain errors.

    Raises:
        CredenceError: a subclass chosen by :func:`error_from_status`.
    """
    try:
        yield
    except grpc.RpcError as exc:
        raise error_from_rpc(exc) from exc


def error_from_code(code: int, reason: str) -> CredenceError:
    """The domain error for a status code number (a screened row's refusal)."""
    return error_from_status(_STATUS_BY_NUMBER.get(code, grpc.StatusCode.UNKNOWN), reason)
