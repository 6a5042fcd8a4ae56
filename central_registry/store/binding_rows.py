"""Subjects' personal keys, bound by an identity-verifying member."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from central_registry.models import Binding
from central_registry.store._keys import checked_subject_ref
from credence.encoding import require_utc

__all__ = ["add_binding", "bindings_for"]


def add_binding(
    session: Session,
    *,
    subject_ref_hex: str,
    subject_kid: str,
    identity_member: str,
    token: str,
    now: datetime,
    expires_at: datetime,
) -> Binding:
    """Bind a subject's personal key; binding the same key again refreshes it.

    Raises:
        InvalidInput: the subject reference is not 64 hex digits.
    """
    ref = checked_subject_ref(subject_ref_hex)
    binding = session.get(Binding, (ref, subject_kid))
    if binding is None:
        binding = Binding(
            subject_ref=ref,
            subject_kid=subject_kid,
            identity_member=identity_member,
            binding_token=token,
            registered_at=require_utc(now),
            expires_at=require_utc(expires_at),
        )
        try:
            with session.begin_nested():
                session.add(binding)
        except IntegrityError:
            # Another process bound the same key meanwhile: refresh that row.
            binding = session.get(Binding, (ref, subject_kid), populate_existing=True)
            assert binding is not None  # the insert just collided with it
        else:
            return binding
    binding.identity_member = identity_member
    binding.binding_token = token
    binding.expires_at = require_utc(expires_at)
    return binding


def bindings_for(session: Session, subject_ref_hex: str, now: datetime) -> list[Binding]:
    """The subject's unexpired key bindings, oldest first.

    Raises:
        InvalidInput: the subject reference is not 64 hex digits.
    """
    ref = checked_subject_ref(subject_ref_hex)
    statement = (
        select(Binding)
        .where(Binding.subject_ref == ref, Binding.expires_at > require_utc(now))
        .order_by(Binding.registered_at, Binding.subject_kid)
    )
    return list(session.scalars(statement))
