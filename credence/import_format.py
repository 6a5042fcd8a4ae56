"""The columns of an agency's import file, shared by the importer and the generators.

An import file is CSV with a header line naming its columns, or JSON Lines
with one object a line keyed by the same names. The node's importer reads it
(``agency_node.importer``); the synthetic federation (``credence.dev.synthetic``)
and the benchmarks write it. One definition keeps the three from drifting.
"""

from __future__ import annotations

__all__ = ["FIELDS", "REQUIRED_FIELDS"]

#: Every field a row may carry, in the order of the documented CSV header.
FIELDS = (
    "record_id",
    "identifier",
    "kind",
    "category",
    "amount",
    "currency",
    "status",
    "occurred_at",
    "expires_at",
    "disputed",
    "days_overdue",
)
#: The fields every row must fill; the others may be left out or left empty.
REQUIRED_FIELDS = frozenset(
    {"record_id", "identifier", "kind", "category", "status", "occurred_at"}
)
