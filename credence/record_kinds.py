"""The record kinds an agency may hold, and how long each one counts.

Shared: nodes validate and evaluate records with it, the registry derives
which verdict kinds an agency contributes to from the record kinds it holds.

Every record has a kind. The kind decides whether the record can list a subject
on a blacklist, which categories it may carry, and its rehabilitation period:
the time after which the record no longer counts for anything and is purged.

Rehabilitation periods (from the record's ``occurred_at``):

==================  ========  =======  =====================================
kind                period    lists    what it is
==================  ========  =======  =====================================
court_judgment      5 years   yes      unsatisfied judgment debt
tax_arrears         3 years   yes      overdue tax above the reporting floor
fraud_flag          7 years   yes      confirmed fraud finding
bankruptcy          6 years   yes      insolvency proceedings
loan_default        5 years   no       a loan declared in default
late_payment        2 years   no       a payment made late (days overdue)
payment_history     2 years   no       an account paid on time (positive)
==================  ========  =======  =====================================

A record may carry an earlier explicit ``expires_at`` (a court lifting a
listing, a settled arrear); it can never extend past the rehabilitation period.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from credence.encoding import require_utc

_YEAR = timedelta(days=365)


@dataclass(frozen=True, slots=True)
class KindRule:
    """What a record kind means for verdicts."""

    rehabilitation: timedelta
    lists: bool
    categories: frozenset[str]
    description: str


KINDS: dict[str, KindRule] = {
    "court_judgment": KindRule(
        5 * _YEAR,
        lists=True,
        categories=frozenset({"dishonest_debtor", "judgment_debt"}),
        description="unsatisfied court judgment debt",
    ),
    "tax_arrears": KindRule(
        3 * _YEAR,
        lists=True,
        categories=frozenset({"tax_arrears", "tax_evasion"}),
        description="overdue tax above the reporting floor",
    ),
    "fraud_flag": KindRule(
        7 * _YEAR,
        lists=True,
        categories=frozenset({"fraud", "identity_fraud", "payment_fraud"}),
        description="confirmed fraud finding",
    ),
    "bankruptcy": KindRule(
        6 * _YEAR,
        lists=True,
        categories=frozenset({"bankruptcy", "liquidation"}),
        description="insolvency proceedings",
    ),
    "loan_default": KindRule(
        5 * _YEAR,
        lists=False,
        categories=frozenset({"consumer_loan", "mortgage", "business_loan", "credit_card"}),
        description="a loan declared in default",
    ),
    "late_payment": KindRule(
        2 * _YEAR,
        lists=False,
        categories=frozenset({"utility", "credit_card", "loan", "rent", "trade"}),
        description="a payment made late",
    ),
    "payment_history": KindRule(
        2 * _YEAR,
        lists=False,
        categories=frozenset({"utility", "credit_card", "loan", "rent", "trade"}),
        description="an account paid on time",
    ),
}

#: A record is only in force while its status is one of these.
ACTIVE_STATUSES = frozenset({"active"})
#: Every status a record may have.
STATUSES = frozenset({"active", "settled", "overturned", "closed"})


def rehabilitation_end(kind: str, occurred_at: datetime, explicit: datetime | None) -> datetime:
    """When a record of ``kind`` stops counting: the earlier of its period and ``explicit``.

    Raises:
        KeyError: ``kind`` is not in :data:`KINDS` (callers validate first).
    """
    end = require_utc(occurred_at, "occurred_at") + KINDS[kind].rehabilitation
    if explicit is not None:
        end = min(end, require_utc(explicit, "expires_at"))
    return end


#: Record kinds that can put a subject on a blacklist.
LISTING_KINDS = frozenset(name for name, rule in KINDS.items() if rule.lists)
