"""The central registry: membership, grants, fan-out, aggregation, the log."""
