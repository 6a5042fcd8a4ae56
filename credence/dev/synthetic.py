"""Reproducible synthetic records for a local federation: no real person in them.

Identifiers come from two generic schemes: organisations ``reg:CN:ORG000123``
and persons ``nin:P0000123``. A seed fixes everything, so two runs with the
same seed hold the same records and the same expected outcomes. Each agency
kind gets its own share of subjects:

* court: unsatisfied judgments (recent, expired past rehabilitation, disputed);
* tax office: arrears above the reporting floor;
* bank: loan defaults, late payments and on-time payment history (credit);
* fraud desk, insolvency register, telecom, utility, landlords: further kinds
  for larger federations.

:func:`expected` tells which subjects each outcome should show, so a tester
can check the federation answers what it should.
"""

from __future__ import annotations

import csv
import io
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

from credence.import_format import FIELDS


@dataclass(frozen=True)
class AgencyProfile:
    """A kind of agency a local federation can run."""

    name: str
    display_name: str
    record_kinds: tuple[str, ...]


AGENCY_PROFILES: tuple[AgencyProfile, ...] = (
    AgencyProfile("court", "District court", ("court_judgment",)),
    AgencyProfile("tax-office", "Tax office", ("tax_arrears",)),
    AgencyProfile("bank", "Retail bank", ("loan_default", "late_payment", "payment_history")),
    AgencyProfile("fraud-desk", "Payment fraud desk", ("fraud_flag",)),
    AgencyProfile("insolvency", "Insolvency register", ("bankruptcy",)),
    AgencyProfile("telecom", "Telecom operator", ("late_payment", "payment_history")),
    AgencyProfile("utility", "Water and power utility", ("late_payment", "payment_history")),
    AgencyProfile("landlords", "Landlords' association", ("late_payment", "payment_history")),
)


def organisation(index: int) -> str:
    """The identifier of synthetic organisation ``index``."""
    return f"reg:CN:ORG{index:06d}"


def person(index: int) -> str:
    """The identifier of synthetic person ``index``."""
    return f"nin:P{index:07d}"


@dataclass
class Expected:
    """Which subjects should show which outcome."""

    listed_organisations: list[str] = field(default_factory=list)
    disputed_organisations: list[str] = field(default_factory=list)
    expired_organisations: list[str] = field(default_factory=list)
    clear_organisations: list[str] = field(default_factory=list)
    persons_with_history: list[str] = field(default_factory=list)


def _row(
    record_id: str,
    identifier: str,
    kind: str,
    category: str,
    occurred: date,
    *,
    amount: str = "",
    currency: str = "",
    status: str = "active",
    disputed: bool = False,
    days_overdue: int | None = None,
) -> tuple[str, ...]:
    return (
        record_id,
        identifier,
        kind,
        category,
        amount,
        currency if amount else "",
        status,
        occurred.isoformat(),
        "",
        "true" if disputed else "false",
        "" if days_overdue is None else str(days_overdue),
    )


@dataclass(frozen=True)
class _Plan:
    prefix: str
    kind: str
    organisations: int
    persons: int
    today: date
    rng: random.Random

    def days_ago(self, low: int, high: int) -> date:
        return self.today - timedelta(days=self.rng.randint(low, high))

    def amount(self, low: int, high: int) -> str:
        return f"{self.rng.randint(low, high)}.00"


def _court(plan: _Plan) -> Iterator[tuple[str, ...]]:
    # Fixed shares so that every outcome exists in a federation of any size.
    kind, today = plan.kind, plan.today
    for index in range(plan.organisations):
        record_id, subject = f"{plan.prefix}-{index}", organisation(index)
        if index % 10 == 1:
            occurred = today - timedelta(days=90 + index % 200)
            yield _row(
                record_id,
                subject,
                kind,
                "dishonest_debtor",
                occurred,
                amount=plan.amount(10_000, 900_000),
                currency="CNY",
            )
        elif index % 10 == 3:  # past the five-year rehabilitation period
            yield _row(
                record_id,
                subject,
                kind,
                "judgment_debt",
                today - timedelta(days=7 * 365),
                amount="5000.00",
                currency="CNY",
            )
        elif index % 10 == 5:
            yield _row(
                record_id,
                subject,
                kind,
                "judgment_debt",
                today - timedelta(days=200),
                amount="12000.00",
                currency="CNY",
                disputed=True,
            )
    for index in range(0, plan.persons, 9):
        yield _row(
            f"{plan.prefix}-p{index}",
            person(index),
            kind,
            "judgment_debt",
            today - timedelta(days=300),
            amount="3000.00",
            currency="CNY",
        )


_LISTING_CATEGORY = {
    "tax_arrears": "tax_arrears",
    "fraud_flag": "payment_fraud",
    "bankruptcy": "liquidation",
}


def _listing(plan: _Plan) -> Iterator[tuple[str, ...]]:
    for index in range(plan.organisations):
        if index % 10 == 7 and plan.rng.random() < 0.8:
            yield _row(
                f"{plan.prefix}-{index}",
                organisation(index),
                plan.kind,
                _LISTING_CATEGORY[plan.kind],
                plan.days_ago(30, 600),
                amount=plan.amount(1_000, 90_000),
                currency="CNY",
            )


def _loan_defaults(plan: _Plan) -> Iterator[tuple[str, ...]]:
    for index in range(2, plan.persons, 7):
        yield _row(
            f"{plan.prefix}-ld{index}",
            person(index),
            plan.kind,
            "consumer_loan",
            plan.days_ago(60, 1500),
            amount=plan.amount(2_000, 60_000),
            currency="CNY",
        )


def _late_payments(plan: _Plan) -> Iterator[tuple[str, ...]]:
    for index in range(1, plan.persons, 4):
        yield _row(
            f"{plan.prefix}-lp{index}",
            person(index),
            plan.kind,
            "utility",
            plan.days_ago(10, 600),
            days_overdue=plan.rng.choice((15, 35, 65, 120)),
        )


def _payment_history(plan: _Plan) -> Iterator[tuple[str, ...]]:
    for index in range(plan.persons):
        if index % 3 != 2:
            yield _row(
                f"{plan.prefix}-ph{index}",
                person(index),
                plan.kind,
                "utility",
                plan.days_ago(120, 700),
            )


_GENERATORS = {
    "court_judgment": _court,
    "tax_arrears": _listing,
    "fraud_flag": _listing,
    "bankruptcy": _listing,
    "loan_default": _loan_defaults,
    "late_payment": _late_payments,
    "payment_history": _payment_history,
}


def _records(
    profile: AgencyProfile, subjects: int, seed: int, today: date
) -> Iterator[tuple[str, ...]]:
    organisations = max(subjects // 2, 8)
    persons = max(subjects - organisations, 8)
    for kind in profile.record_kinds:
        # Synthetic data: a seeded generator makes runs reproducible, not secret.
        rng = random.Random(f"{seed}:{profile.name}:{kind}")  # noqa: S311
        plan = _Plan(profile.name, kind, organisations, persons, today, rng)
        yield from _GENERATORS[kind](plan)


def agency_csv(profile: AgencyProfile, subjects: int, seed: int, today: date) -> str:
    """The import file (CSV) of one agency's synthetic records."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(FIELDS)
    writer.writerows(_records(profile, subjects, seed, today))
    return out.getvalue()


def expected(profiles: Sequence[AgencyProfile], subjects: int) -> Expected:
    """Which subjects should show which outcome with these agencies."""
    organisations = max(subjects // 2, 8)
    persons = max(subjects - organisations, 8)
    kinds = {kind for profile in profiles for kind in profile.record_kinds}
    result = Expected()
    listing_indexes = {7} if kinds & {"tax_arrears", "fraud_flag", "bankruptcy"} else set()
    for index in range(organisations):
        residue = index % 10
        if "court_judgment" in kinds and residue == 1:
            result.listed_organisations.append(organisation(index))
        elif "court_judgment" in kinds and residue == 5:
            result.disputed_organisations.append(organisation(index))
        elif "court_judgment" in kinds and residue == 3:
            result.expired_organisations.append(organisation(index))
        elif residue not in listing_indexes:
            result.clear_organisations.append(organisation(index))
    if kinds & {"loan_default", "late_payment", "payment_history"}:
        result.persons_with_history = [person(index) for index in range(persons) if index % 3 != 2]
    return result
