"""What an operator can do from the console, each action logged.

Approve, suspend and reinstate call the same :mod:`central_registry.membership`
functions as ``credence registry members``; refusing a pending enrolment drops
it (the member may enrol again). Deciding a subject's review signs its outcome
(:func:`central_registry.reviews.decide`), here or from ``credence registry
reviews decide``. Every attempt, done or refused, becomes an ``admin_actions``
row and a log line naming the admin (by its token's name), the action and the
member or review: never a subject.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from central_registry import membership, reviews
from central_registry.config import RegistryConfig
from central_registry.keyring import RegistryKeys
from central_registry.models import AdminAction
from central_registry.store import member_rows
from credence.clock import Clock
from credence.errors import CredenceError, FailedPrecondition, InvalidInput
from credence.scorecard import default_scorecard
from credence.storage import session_factory

_log = logging.getLogger(__name__)

#: The member actions a form can ask for.
MEMBER_ACTIONS = ("approve", "refuse", "suspend", "reinstate")
_OUTCOME_LENGTH = 256


def refuse_enrolment(session: Session, member_id: str) -> None:
    """Drop a pending enrolment: the applicant is told nothing more and may enrol again.

    Raises:
        NotFound: no such member.
        FailedPrecondition: the member is not pending (suspend an approved one instead).
    """
    member = member_rows.get_member(session, member_id)
    if member.state != "pending":
        raise FailedPrecondition(
            f"{member_id} is {member.state}, not pending: only an enrolment can be refused "
            "(suspend a member instead)"
        )
    session.delete(member)


def record(session: Session, *, admin: str, action: str, member_id: str, outcome: str,
           now: datetime) -> None:  # fmt: skip
    """Add one ``admin_actions`` row and its log line."""
    session.add(
        AdminAction(
            at=now,
            admin=admin,
            action=action,
            member_id=member_id,
            outcome=outcome[:_OUTCOME_LENGTH],
        )
    )
    _log.info("console: admin %s %s %s: %s", admin, action, member_id or "-", outcome)


class ConsoleActions:
    """Membership changes from the console, each in one transaction with its log row."""

    def __init__(
        self,
        *,
        engine: Engine,
        config: RegistryConfig,
        keys: RegistryKeys,
        clock: Clock,
        published: Callable[[], object] | None = None,
    ) -> None:
        self._sessions = session_factory(engine)
        self._config = config
        self._keys = keys
        self._clock = clock
        # Called after a change publishes a manifest, so this process sees it at once.
        self._published = published

    def member_action(self, admin: str, action: str, member_id: str) -> str:
        """Do ``action`` to ``member_id`` for ``admin``; what happened, in words.

        Raises:
            InvalidInput: an unknown action.
            CredenceError: the change was refused (logged as refused, nothing changed).
        """
        if action not in MEMBER_ACTIONS:
            raise InvalidInput(
                f"unknown action {action[:40]!r}; one of {', '.join(MEMBER_ACTIONS)}"
            )
        now = self._clock()
        try:
            with self._sessions.begin() as session:
                self._apply(session, action, member_id, now)
                record(session, admin=admin, action=action, member_id=member_id, outcome="ok",
                       now=now)  # fmt: skip
        except CredenceError as exc:
            with self._sessions.begin() as session:
                record(session, admin=admin, action=action, member_id=member_id,
                       outcome=f"refused: {exc}", now=now)  # fmt: skip
            raise
        if self._published is not None and action != "refuse":
            self._published()
        return {
            "approve": f"approved {member_id}; a new manifest lists it",
            "refuse": f"refused the enrolment of {member_id}",
            "suspend": f"suspended {member_id}; it is refused from now on",
            "reinstate": f"reinstated {member_id}",
        }[action]

    def _apply(self, session: Session, action: str, member_id: str, now: datetime) -> None:
        if action == "refuse":
            refuse_enrolment(session, member_id)
            return
        config, keys, scorecard = self._config, self._keys, default_scorecard()
        if action == "approve":
            membership.approve(
                session, member_id, config=config, keys=keys, scorecard=scorecard, now=now
            )
            return
        state = "suspended" if action == "suspend" else "active"
        membership.set_state(
            session, member_id, state, config=config, keys=keys, scorecard=scorecard, now=now
        )

    def decide_review(self, admin: str, review_id: str, outcome: str, statement: str) -> str:
        """Decide an open review for ``admin``: the registry signs the outcome; what happened.

        Raises:
            CredenceError: the decision was refused (logged as refused, nothing changed).
        """
        now = self._clock()
        action = f"review {outcome[:16]}"
        try:
            with self._sessions.begin() as session:
                reviews.decide(
                    session, review_id, outcome=outcome, statement=statement, reviewer=admin,
                    key=self._keys.signing, now=now,
                )  # fmt: skip
                record(session, admin=admin, action=action, member_id="",
                       outcome=f"ok: review {review_id}", now=now)  # fmt: skip
        except CredenceError as exc:
            with self._sessions.begin() as session:
                record(session, admin=admin, action=action, member_id="",
                       outcome=f"refused: review {review_id[:64]}: {exc}", now=now)  # fmt: skip
            raise
        return f"review {review_id} {outcome}: the subject sees the signed outcome"

    def login(self, admin: str) -> None:
        """Log that ``admin`` logged in."""
        with self._sessions.begin() as session:
            record(session, admin=admin, action="login", member_id="", outcome="ok",
                   now=self._clock())  # fmt: skip
