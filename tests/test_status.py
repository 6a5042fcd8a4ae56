"""The one map from domain errors to gRPC status codes covers every error."""

from __future__ import annotations

import inspect

import grpc
import pytest

from credence import errors
from credence.rpc.status import STATUS_BY_ERROR, reason_for, status_for


def _all_error_classes() -> list[type[errors.CredenceError]]:
    return [
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.CredenceError)
    ]


@pytest.mark.parametrize("cls", _all_error_classes(), ids=lambda cls: cls.__name__)
def test_every_error_class_has_its_own_mapping(cls: type[errors.CredenceError]) -> None:
    assert cls in STATUS_BY_ERROR, f"add {cls.__name__} to credence.rpc.status.STATUS_BY_ERROR"


def test_map_is_ordered_most_specific_first() -> None:
    # A parent listed before its subclass would shadow the subclass's mapping.
    classes = list(STATUS_BY_ERROR)
    for index, cls in enumerate(classes):
        for later in classes[index + 1 :]:
            assert not issubclass(later, cls), f"{later.__name__} is shadowed by {cls.__name__}"


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.Expired("grant expired"), grpc.StatusCode.FAILED_PRECONDITION),
        (errors.Replayed("query id seen before"), grpc.StatusCode.ALREADY_EXISTS),
        (errors.BadSignature("bad"), grpc.StatusCode.UNAUTHENTICATED),
        (errors.MessageTooLarge("too big"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.InvalidIdentifier("bad id"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.Revoked("revoked"), grpc.StatusCode.PERMISSION_DENIED),
        (errors.Unavailable("down"), grpc.StatusCode.UNAVAILABLE),
    ],
)
def test_status_for(error: errors.CredenceError, code: grpc.StatusCode) -> None:
    assert status_for(error) is code


def test_reason_is_one_line_and_carries_retry_advice() -> None:
    error = errors.ResourceExhausted("rate limit of 10/s for member acme\nexceeded", 1.5)
    assert reason_for(error) == "rate limit of 10/s for member acme exceeded; retry after 1.5s"
