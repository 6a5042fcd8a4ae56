"""Hostile requests on the registry's members' port, and what each cost its database.

Each input is what a member with a valid certificate can send; :func:`measure`
sends one and compares the registry database's in-use bytes before and after
(:meth:`MembersPort.database_bytes`) with the bytes of the serialized request,
a lower bound of what crossed the wire (gRPC and TLS framing add to it, so the
ratio reported is, if anything, too high).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import grpc
from support.members_port import MembersPort, organisation, person

from credence.v1 import agency_pb2, common_pb2, registry_pb2

BLACKLIST = common_pb2.VERDICT_KIND_BLACKLIST
COUNTERPARTY = common_pb2.PURPOSE_COUNTERPARTY_VERIFICATION
PUBLIC = agency_pb2.Grant(public_register=agency_pb2.PublicRegisterBasis())
_TIMEOUT = 120.0


@dataclass(frozen=True)
class Measurement:
    """One input: bytes sent, bytes the database grew by, and the call's status."""

    name: str
    sent: int
    added: int
    code: grpc.StatusCode

    @property
    def ratio(self) -> float:
        return self.added / self.sent


def screen(port: MembersPort, message: registry_pb2.ScreenBatchRequest) -> grpc.StatusCode:
    """Send one screening message; the call's final status."""
    try:
        for _ in port.stub.ScreenBatch(iter([message]), timeout=_TIMEOUT):
            pass
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def request(port: MembersPort, message: registry_pb2.RequestVerdictRequest) -> grpc.StatusCode:
    """Send one ``RequestVerdict``; the call's status."""
    try:
        port.stub.RequestVerdict(message, timeout=_TIMEOUT)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def _rows(count: int, subject: Callable[[int], common_pb2.SubjectRef], **item: object) -> list[
    registry_pb2.ScreenItem
]:  # fmt: skip
    return [registry_pb2.ScreenItem(subject=subject(n), **item) for n in range(count)]  # type: ignore[arg-type]


def repeated_kinds() -> registry_pb2.ScreenBatchRequest:
    """The issue's x386: 400 rows asking for one kind 50,000 times."""
    return registry_pb2.ScreenBatchRequest(
        items=_rows(400, organisation, grant=PUBLIC), kinds=[BLACKLIST] * 50_000,
        purpose=COUNTERPARTY,
    )  # fmt: skip


def long_row_keys() -> registry_pb2.ScreenBatchRequest:
    """100 rows, each with a 32 KiB row key."""
    items = [
        registry_pb2.ScreenItem(row_key="k" * 32_768, subject=organisation(n), grant=PUBLIC)
        for n in range(100)
    ]
    return registry_pb2.ScreenBatchRequest(items=items, kinds=[BLACKLIST], purpose=COUNTERPARTY)


def long_grant_token() -> registry_pb2.RequestVerdictRequest:
    """One lookup of a person carrying a 1 MiB "consent token"."""
    grant = agency_pb2.Grant(consent_token="a" * (1 << 20))
    return registry_pb2.RequestVerdictRequest(
        subject=person(1), kinds=[BLACKLIST], purpose=COUNTERPARTY, grant=grant
    )


def many_rows() -> registry_pb2.ScreenBatchRequest:
    """20,000 rows in one message (the limit is 1,000)."""
    return registry_pb2.ScreenBatchRequest(
        items=_rows(20_000, organisation, grant=PUBLIC), kinds=[BLACKLIST], purpose=COUNTERPARTY
    )


def oversize_message() -> registry_pb2.ScreenBatchRequest:
    """1,000 rows with 16 KiB tokens: a 16 MiB message."""
    grant = agency_pb2.Grant(consent_token="a" * 16_384)
    return registry_pb2.ScreenBatchRequest(
        items=_rows(1000, person, grant=grant), kinds=[BLACKLIST], purpose=COUNTERPARTY
    )


def many_refused_rows() -> registry_pb2.ScreenBatchRequest:
    """1,000 well-formed rows of people without a grant: each refused on its own."""
    return registry_pb2.ScreenBatchRequest(
        items=_rows(1000, person), kinds=[BLACKLIST], purpose=COUNTERPARTY
    )


#: name -> (build the request, send it)
INPUTS: dict[str, tuple[Callable[[], object], Callable[[MembersPort, object], grpc.StatusCode]]] = {
    "repeated kinds": (repeated_kinds, screen),  # type: ignore[dict-item]
    "long row keys": (long_row_keys, screen),  # type: ignore[dict-item]
    "long grant token": (long_grant_token, request),  # type: ignore[dict-item]
    "many rows": (many_rows, screen),  # type: ignore[dict-item]
    "oversize message": (oversize_message, screen),  # type: ignore[dict-item]
    "many refused rows": (many_refused_rows, screen),  # type: ignore[dict-item]
}


def measure(port: MembersPort, name: str) -> Measurement:
    """Send input ``name`` once; what it cost the registry's database."""
    build, send = INPUTS[name]
    message = build()
    sent = message.ByteSize()  # type: ignore[attr-defined]
    before = port.database_bytes()
    code = send(port, message)
    return Measurement(name, sent, port.database_bytes() - before, code)
