"""The node's configuration: a TOML file in its data directory, parsed once.

``credence node init`` writes ``node.toml``; environment variables override a
few deployment settings (``CREDENCE_NODE_LISTEN``,
``CREDENCE_NODE_DATABASE_URL``). The result is a frozen :class:`NodeConfig`
passed explicitly to everything that needs it.

Files in the data directory:

======================  =====================================================
``node.toml``           this configuration
``signing.key``         the node's Ed25519 signing key (0600)
``agreement.key``       the node's X25519 key agreement key, blind aggregation (0600)
``tls.key``/``tls.csr`` the node's TLS key (0600) and certificate request
``tls.crt``/``ca.crt``  its certificate and the federation CA, from enrolment
``root.jwks.json``      the registry's pinned root keys
``manifest.bin``        the newest verified federation manifest (envelope)
``pseudonymisation.key`` the federation's subject-reference key (0600)
``node.db``             the SQLite database, unless ``database_url`` is set
======================  =====================================================
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from credence.config_values import config_value
from credence.errors import InvalidInput
from credence.storage import sqlite_url
from credence.v1 import common_pb2

CONFIG_FILE = "node.toml"
SIGNING_KEY_FILE = "signing.key"
WITNESS_KEY_FILE = "witness.key"
AGREEMENT_KEY_FILE = "agreement.key"
TLS_KEY_FILE = "tls.key"
TLS_CSR_FILE = "tls.csr"
TLS_CERT_FILE = "tls.crt"
CA_CERT_FILE = "ca.crt"
ROOT_KEYS_FILE = "root.jwks.json"
MANIFEST_FILE = "manifest.bin"
PSEUDONYMISATION_KEY_FILE = "pseudonymisation.key"
DATABASE_FILE = "node.db"

DEFAULT_LISTEN = "127.0.0.1:7701"
#: Prometheus's /metrics: loopback, a free port (logged at start); set a fixed one to scrape.
DEFAULT_METRICS_LISTEN = "127.0.0.1:0"
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class NodePolicy:
    """The agency's own rules, applied after every protocol check passes."""

    refused_purposes: frozenset[str] = frozenset()
    refused_requesters: frozenset[str] = frozenset()


@dataclass(frozen=True)
class NodeConfig:
    """Everything a node process needs to know, read once at start."""

    data_dir: Path
    member_id: str
    listen: str = DEFAULT_LISTEN
    #: host:port of the node's ``/metrics`` (plain HTTP); empty: no metrics.
    metrics_listen: str = DEFAULT_METRICS_LISTEN
    database_url: str = ""
    record_kinds: tuple[str, ...] = ()
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    grace_seconds: float = 5.0
    workers: int = 8
    max_calls_per_peer: int = 16
    max_registry_calls: int = 1024
    max_watch_streams_per_peer: int = 4
    max_watch_streams: int = 64
    purge_interval_seconds: int = 3600
    root_threshold: int = 1
    registry: str = ""
    registry_public: str = ""
    #: https://host:port of the registry's HTTP side: the log's tiles for the audit.
    registry_http: str = ""
    manifest_refresh_seconds: int = 10
    audit_interval_seconds: int = 30
    audit_merge_delay_seconds: int = 300
    audit_max_lag_seconds: int = 600
    #: Run a witness of the registry's log (its key is enrolled and in the manifest).
    witness: bool = True
    #: Answer only while the registry's latest quorum-cosigned checkpoint is this recent.
    checkpoint_max_age_seconds: int = 300
    policy: NodePolicy = field(default_factory=NodePolicy)

    def path(self, name: str) -> Path:
        """A file in the data directory."""
        return self.data_dir / name

    @property
    def effective_database_url(self) -> str:
        """The configured URL, or the SQLite file in the data directory."""
        return self.database_url or sqlite_url(self.data_dir / DATABASE_FILE)


_PURPOSES = {
    name.removeprefix("PURPOSE_").lower()
    for name in common_pb2.Purpose.keys()  # noqa: SIM118 - an enum wrapper, not a dict
    if name != "PURPOSE_UNSPECIFIED"
}


def _string_list(table: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InvalidInput(f"{CONFIG_FILE}: '{key}' must be a list of strings")
    return tuple(value)


def parse_config(text: str, data_dir: Path, environ: Mapping[str, str] | None = None) -> NodeConfig:
    """Parse ``node.toml`` text and apply environment overrides.

    Raises:
        InvalidInput: the TOML is malformed or a value has the wrong type or range.
    """
    environ = os.environ if environ is None else environ
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"{CONFIG_FILE} is not valid TOML: {exc}") from exc
    node = document.get("node", {})
    policy = document.get("policy", {})
    if not isinstance(node, dict) or not isinstance(policy, dict):
        raise InvalidInput(f"{CONFIG_FILE}: [node] and [policy] must be tables")
    member_id = config_value(CONFIG_FILE, node, "member_id", str, "")
    if not member_id:
        raise InvalidInput(f"{CONFIG_FILE}: [node] member_id is required")
    refused_purposes = frozenset(_string_list(policy, "refused_purposes"))
    if unknown := refused_purposes - _PURPOSES:
        raise InvalidInput(
            f"{CONFIG_FILE}: unknown purposes {sorted(unknown)} (known: {sorted(_PURPOSES)})"
        )
    config = NodeConfig(
        data_dir=data_dir,
        member_id=member_id,
        listen=environ.get("CREDENCE_NODE_LISTEN")
        or config_value(CONFIG_FILE, node, "listen", str, DEFAULT_LISTEN),
        metrics_listen=config_value(
            CONFIG_FILE, node, "metrics_listen", str, DEFAULT_METRICS_LISTEN
        ),
        database_url=environ.get("CREDENCE_NODE_DATABASE_URL")
        or config_value(CONFIG_FILE, node, "database_url", str, ""),
        record_kinds=_string_list(node, "record_kinds"),
        max_message_bytes=config_value(
            CONFIG_FILE, node, "max_message_bytes", int, DEFAULT_MAX_MESSAGE_BYTES
        ),
        grace_seconds=float(config_value(CONFIG_FILE, node, "grace_seconds", (int, float), 5.0)),
        workers=config_value(CONFIG_FILE, node, "workers", int, 8),
        max_calls_per_peer=config_value(CONFIG_FILE, node, "max_calls_per_peer", int, 16),
        max_registry_calls=config_value(CONFIG_FILE, node, "max_registry_calls", int, 1024),
        max_watch_streams_per_peer=config_value(
            CONFIG_FILE, node, "max_watch_streams_per_peer", int, 4
        ),
        max_watch_streams=config_value(CONFIG_FILE, node, "max_watch_streams", int, 64),
        purge_interval_seconds=config_value(CONFIG_FILE, node, "purge_interval_seconds", int, 3600),
        root_threshold=config_value(CONFIG_FILE, node, "root_threshold", int, 1),
        registry=config_value(CONFIG_FILE, node, "registry", str, ""),
        registry_public=config_value(CONFIG_FILE, node, "registry_public", str, ""),
        registry_http=config_value(CONFIG_FILE, node, "registry_http", str, ""),
        manifest_refresh_seconds=config_value(
            CONFIG_FILE, node, "manifest_refresh_seconds", int, 10
        ),
        audit_interval_seconds=config_value(CONFIG_FILE, node, "audit_interval_seconds", int, 30),
        audit_merge_delay_seconds=config_value(
            CONFIG_FILE, node, "audit_merge_delay_seconds", int, 300
        ),
        audit_max_lag_seconds=config_value(CONFIG_FILE, node, "audit_max_lag_seconds", int, 600),
        witness=config_value(CONFIG_FILE, node, "witness", bool, True),
        checkpoint_max_age_seconds=config_value(
            CONFIG_FILE, node, "checkpoint_max_age_seconds", int, 300
        ),
        policy=NodePolicy(
            refused_purposes=refused_purposes,
            refused_requesters=frozenset(_string_list(policy, "refused_requesters")),
        ),
    )
    if not 1024 <= config.max_message_bytes <= 64 * 1024 * 1024:
        raise InvalidInput(f"{CONFIG_FILE}: max_message_bytes must be 1 KiB..64 MiB")
    if config.workers < 1 or config.root_threshold < 1:
        raise InvalidInput(f"{CONFIG_FILE}: workers and root_threshold must be at least 1")
    limits = {
        "max_calls_per_peer": config.max_calls_per_peer,
        "max_registry_calls": config.max_registry_calls,
        "max_watch_streams_per_peer": config.max_watch_streams_per_peer,
        "max_watch_streams": config.max_watch_streams,
    }
    if low := sorted(name for name, value in limits.items() if value < 1):
        raise InvalidInput(f"{CONFIG_FILE}: {', '.join(low)} must be at least 1")
    if config.audit_max_lag_seconds < 1:
        raise InvalidInput(f"{CONFIG_FILE}: audit_max_lag_seconds must be at least 1")
    if config.checkpoint_max_age_seconds < 1:
        raise InvalidInput(f"{CONFIG_FILE}: checkpoint_max_age_seconds must be at least 1")
    return config


def load_config(data_dir: Path, environ: Mapping[str, str] | None = None) -> NodeConfig:
    """Read ``node.toml`` from a data directory.

    Raises:
        InvalidInput: there is no config (run ``credence node init``) or it is invalid.
    """
    path = Path(data_dir) / CONFIG_FILE
    if not path.is_file():
        raise InvalidInput(f"{path} not found: run `credence node init --dir {data_dir}` first")
    return parse_config(path.read_text(encoding="utf-8"), Path(data_dir), environ)


def _toml_string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _toml_list(values: tuple[str, ...] | frozenset[str]) -> str:
    return "[" + ", ".join(_toml_string(value) for value in sorted(values)) + "]"


def render_config(config: NodeConfig) -> str:
    """The ``node.toml`` text for a config (what ``init`` writes)."""
    return "\n".join(
        [
            "# Credence agency node. Environment overrides: CREDENCE_NODE_LISTEN,",
            "# CREDENCE_NODE_DATABASE_URL.",
            "[node]",
            f"member_id = {_toml_string(config.member_id)}",
            f"listen = {_toml_string(config.listen)}",
            "# Prometheus's /metrics over plain HTTP (keep it on loopback or a private",
            "# network; port 0: a free one, in the log); empty: no metrics.",
            f"metrics_listen = {_toml_string(config.metrics_listen)}",
            "# Empty: the SQLite file node.db in this directory.",
            f"database_url = {_toml_string(config.database_url)}",
            "# The record kinds this agency holds (see credence/record_kinds.py).",
            f"record_kinds = {_toml_list(config.record_kinds)}",
            f"max_message_bytes = {config.max_message_bytes}",
            f"grace_seconds = {config.grace_seconds}",
            "# Threads that answer queries; calls wait for one, streams never hold one.",
            f"workers = {config.workers}",
            "# Calls in flight at once: from the registry (its fan-out and screening",
            "# streams), and from any other member (health checks only).",
            f"max_registry_calls = {config.max_registry_calls}",
            f"max_calls_per_peer = {config.max_calls_per_peer}",
            "# Open Health/Watch streams: per member, and in all.",
            f"max_watch_streams_per_peer = {config.max_watch_streams_per_peer}",
            f"max_watch_streams = {config.max_watch_streams}",
            f"purge_interval_seconds = {config.purge_interval_seconds}",
            f"root_threshold = {config.root_threshold}",
            "# host:port of the registry: where newer manifests come from (set by enrol).",
            f"registry = {_toml_string(config.registry)}",
            "# host:port of the registry's public port: its transparency log (set by enrol).",
            f"registry_public = {_toml_string(config.registry_public)}",
            "# https://host:port of the registry's HTTP side: the audit reads the log's tiles",
            "# there (set by enrol --http; empty: it asks the public port for proofs).",
            f"registry_http = {_toml_string(config.registry_http)}",
            f"manifest_refresh_seconds = {config.manifest_refresh_seconds}",
            "# How often to check the registry's log, and how long an entry may take to appear.",
            f"audit_interval_seconds = {config.audit_interval_seconds}",
            f"audit_merge_delay_seconds = {config.audit_merge_delay_seconds}",
            "# Audit health goes NOT_SERVING when a promise is this long past its merge delay.",
            f"audit_max_lag_seconds = {config.audit_max_lag_seconds}",
            "# Witness the registry's log: cosign each checkpoint consistent with the last.",
            f"witness = {'true' if config.witness else 'false'}",
            "# Refuse queries (UNAVAILABLE, Health NOT_SERVING) while the registry's latest",
            "# checkpoint cosigned by the manifest's quorum of witnesses is older than this.",
            f"checkpoint_max_age_seconds = {config.checkpoint_max_age_seconds}",
            "",
            "[policy]",
            "# Purposes and requesters this agency refuses to answer, whatever the grant.",
            f"refused_purposes = {_toml_list(config.policy.refused_purposes)}",
            f"refused_requesters = {_toml_list(config.policy.refused_requesters)}",
            "",
        ]
    )
