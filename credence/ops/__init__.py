"""Observability shared by the registry and the nodes: metrics, traces, logs."""
