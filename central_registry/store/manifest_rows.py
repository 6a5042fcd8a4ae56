"""Signed manifest versions, kept as published."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from central_registry.models import Manifest
from central_registry.store._keys import insert_new
from credence.encoding import require_utc
from credence.errors import NotFound

__all__ = ["get_manifest", "latest_manifest", "store_manifest"]


def latest_manifest(session: Session) -> Manifest | None:
    """The newest manifest version, or None before the first is published."""
    return session.scalars(select(Manifest).order_by(Manifest.version.desc()).limit(1)).first()


def get_manifest(session: Session, version: int) -> Manifest:
    """Manifest ``version``.

    Raises:
        NotFound: that version was never published.
    """
    manifest = session.get(Manifest, version)
    if manifest is None:
        raise NotFound(f"manifest version {version} was never published")
    return manifest


def store_manifest(
    session: Session, *, version: int, issued_at: datetime, expires_at: datetime, envelope: bytes
) -> Manifest:
    """Keep a newly signed manifest version.

    Raises:
        AlreadyExists: ``version`` is stored already; sign the next one.
    """
    manifest = Manifest(
        version=version,
        issued_at=require_utc(issued_at),
        expires_at=require_utc(expires_at),
        envelope=bytes(envelope),
    )
    insert_new(
        session,
        manifest,
        f"manifest version {version} exists already: publish a version above the latest",
    )
    return manifest
