"""The registry's configuration: ``registry.toml`` in its data directory, parsed once.

``credence registry init`` writes it; ``CREDENCE_REGISTRY_LISTEN``,
``CREDENCE_REGISTRY_PUBLIC_LISTEN``, ``CREDENCE_REGISTRY_HTTP_LISTEN``,
``CREDENCE_REGISTRY_CONSOLE_LISTEN`` and ``CREDENCE_REGISTRY_DATABASE_URL``
override it for deployment. The result is a frozen :class:`RegistryConfig`.

Files in the data directory:

=========================  ===================================================
``registry.toml``          this configuration
``root.key``               the root key that signs manifests (0600)
``signing.key``            the registry key: queries, verdicts, consents, log
``ca.key`` / ``ca.crt``    the federation CA (key 0600)
``tls.key`` / ``tls.crt``  the registry's own mutual-TLS identity
``pseudonymisation.key``   the federation's subject-reference key (0600)
``registry.db``            the SQLite database, unless ``database_url`` is set
=========================  ===================================================
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from credence import names
from credence.config_values import config_value
from credence.errors import InvalidInput
from credence.manifest import (
    DEFAULT_CONTEST_DEADLINE_DAYS,
    MAX_CONTEST_DEADLINE_DAYS,
    MIN_CONTEST_DEADLINE_DAYS,
)
from credence.storage import sqlite_url

CONFIG_FILE = "registry.toml"
ROOT_KEY_FILE = "root.key"
SIGNING_KEY_FILE = "signing.key"
CA_KEY_FILE = "ca.key"
CA_CERT_FILE = "ca.crt"
TLS_KEY_FILE = "tls.key"
TLS_CERT_FILE = "tls.crt"
PSEUDONYMISATION_KEY_FILE = "pseudonymisation.key"
DATABASE_FILE = "registry.db"


@dataclass(frozen=True)
class PurposeRules:
    """Fair-use limits of one purpose: the registry applies them, nodes check again."""

    max_validity: timedelta
    max_uses: int
    kinds: frozenset[str]


#: Defaults: who may ask what, for how long and how often.
DEFAULT_PURPOSES: dict[str, PurposeRules] = {
    "counterparty_verification": PurposeRules(timedelta(days=30), 10, frozenset({"blacklist"})),
    "credit_assessment": PurposeRules(timedelta(days=30), 3, frozenset({"blacklist", "credit"})),
    "tenancy_screening": PurposeRules(timedelta(days=14), 1, frozenset({"blacklist", "credit"})),
    "employment_screening": PurposeRules(timedelta(days=14), 1, frozenset({"blacklist"})),
    "legal_mandate": PurposeRules(timedelta(days=90), 1000, frozenset({"blacklist", "credit"})),
}

#: The members' port's per-message limit: a screening message of 1,000 rows with
#: consent tokens (~2.3 KB each, ~2.3 MB in all) fits with 3x headroom; a
#: 16 MiB message is refused by gRPC before it is decoded.
DEFAULT_MAX_MESSAGE_BYTES = 8 * 1024 * 1024
#: Rows of one screening message; the SDK sends 1,000.
DEFAULT_MAX_SCREEN_ROWS = 1000

#: The purposes a member of each role may request unless approved otherwise.
DEFAULT_ROLE_PURPOSES: dict[str, frozenset[str]] = {
    "company": frozenset({"counterparty_verification", "credit_assessment"}),
    "authority": frozenset({"legal_mandate", "counterparty_verification"}),
    "agency": frozenset(),
}


@dataclass(frozen=True)
class RateLimits:
    """Per-requester limits, refused with RESOURCE_EXHAUSTED and when to retry."""

    requests_per_second: float = 200.0
    burst: int = 400
    distinct_subjects_per_day: int = 1_000_000
    #: Log rows (lookups and refusals) per member per minute, and the burst: a
    #: minute's worth. 120,000 keeps the measured ~2,000 screened subjects/s.
    log_rows_per_minute: int = 120_000
    #: Refused single lookups logged per member per minute. A refused lookup is
    #: logged for its subject however small the request (tens of bytes for a
    #: row of hundreds), so this bounds what a flood of them adds to the log.
    refused_rows_per_minute: int = 600


@dataclass(frozen=True)
class PublicLimits:
    """The public port (no client certificate): rates per source address and overall.

    Refusals are RESOURCE_EXHAUSTED with when to retry. ``enrol`` limits
    ``Enrol``; ``access`` limits subject access and ``GetEnrolment``.
    """

    max_message_bytes: int = 64 * 1024
    enrolments_per_second_per_address: float = 0.2
    enrolment_burst_per_address: int = 30
    enrolments_per_second: float = 1.0
    enrolment_burst: int = 100
    access_per_second_per_address: float = 5.0
    access_burst_per_address: int = 50
    access_per_second: float = 100.0
    access_burst: int = 500
    max_pending_enrolments: int = 100
    pending_enrolment_lifetime: timedelta = timedelta(days=7)


@dataclass(frozen=True)
class PeerCallLimits:
    """Calls one peer may have in flight at once, refused beyond with RESOURCE_EXHAUSTED.

    Members are counted by the member id in their certificate (members'
    port), others by source address (public port). ``Health/Watch`` streams
    are limited on both ports, per peer and in all.
    """

    calls_per_member: int = 64
    calls_per_address: int = 32
    watch_streams_per_peer: int = 4
    watch_streams: int = 256


@dataclass(frozen=True)
class RegistryConfig:
    """Everything a registry process needs, read once at start."""

    data_dir: Path
    member_id: str = "registry"
    federation_id: str = "credence"
    listen: str = "127.0.0.1:7700"
    public_listen: str = "127.0.0.1:7702"
    http_listen: str = "127.0.0.1:7780"
    #: The HTTP side's TLS certificate chain and key (PEM files); None: the
    #: registry's own ``tls.crt`` / ``tls.key`` from the federation CA.
    http_tls_cert: Path | None = None
    http_tls_key: Path | None = None
    #: The operator's console (HTTPS, admin token); empty: no console. Its TLS
    #: identity is the HTTP side's.
    console_listen: str = ""
    #: Prometheus metrics (``/metrics`` on the console's listener); false: none kept.
    metrics: bool = True
    database_url: str = ""
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_screen_rows: int = DEFAULT_MAX_SCREEN_ROWS
    grace_seconds: float = 5.0
    manifest_validity: timedelta = timedelta(days=30)
    member_certificate_validity: timedelta = timedelta(days=30)
    fanout_deadline_seconds: float = 2.0
    batch_deadline_seconds: float = 20.0
    fanout_concurrency: int = 256
    query_lifetime: timedelta = timedelta(seconds=60)
    verdict_lifetime: timedelta = timedelta(hours=24)
    max_embargo: timedelta = timedelta(days=90)
    log_merge_delay: timedelta = timedelta(minutes=5)
    log_retention: timedelta = timedelta(days=730)
    node_batch_size: int = 1000
    #: How often the registry signs a checkpoint and asks every witness to cosign it.
    witness_interval_seconds: float = 10.0
    #: How long one add-checkpoint call to a witness may take.
    witness_deadline_seconds: float = 5.0
    #: Cosignatures a checkpoint needs before it is published (the manifest's
    #: k of n); None: a majority of the active witnesses.
    witness_quorum: int | None = None
    #: Days an agency has to resolve a subject's contest (the manifest's
    #: ``contest_deadline_days``); past them the contested records stop counting.
    contest_deadline_days: int = DEFAULT_CONTEST_DEADLINE_DAYS
    purposes: Mapping[str, PurposeRules] = field(default_factory=lambda: dict(DEFAULT_PURPOSES))
    rate_limits: RateLimits = field(default_factory=RateLimits)
    public: PublicLimits = field(default_factory=PublicLimits)
    peer_limits: PeerCallLimits = field(default_factory=PeerCallLimits)

    def path(self, name: str) -> Path:
        """A file in the data directory."""
        return self.data_dir / name

    @property
    def effective_database_url(self) -> str:
        """The configured URL, or the SQLite file in the data directory."""
        return self.database_url or sqlite_url(self.data_dir / DATABASE_FILE)


def _purposes(table: Mapping[str, Any]) -> dict[str, PurposeRules]:
    purposes = dict(DEFAULT_PURPOSES)
    for name, rules in table.items():
        if name not in names.PURPOSE_NAMES:
            raise InvalidInput(
                f"{CONFIG_FILE}: unknown purpose [purposes.{name}] "
                f"(known: {', '.join(sorted(names.PURPOSE_NAMES))})"
            )
        if not isinstance(rules, dict):
            raise InvalidInput(f"{CONFIG_FILE}: [purposes.{name}] must be a table")
        kinds = frozenset(
            config_value(CONFIG_FILE, rules, "kinds", list, sorted(purposes[name].kinds))
        )
        if unknown := kinds - names.KIND_NAMES:
            raise InvalidInput(f"{CONFIG_FILE}: [purposes.{name}] unknown kinds {sorted(unknown)}")
        days = config_value(CONFIG_FILE, rules, "max_validity_days", (int, float), 30)
        uses = config_value(CONFIG_FILE, rules, "max_uses", int, 1)
        if days <= 0 or uses < 1:
            raise InvalidInput(
                f"{CONFIG_FILE}: [purposes.{name}] needs max_validity_days > 0 and max_uses >= 1"
            )
        purposes[name] = PurposeRules(timedelta(days=days), uses, kinds)
    return purposes


def _public_limits(table: Mapping[str, Any]) -> PublicLimits:
    defaults = PublicLimits()

    def rate(key: str) -> float:
        value = float(config_value(CONFIG_FILE, table, key, (int, float), getattr(defaults, key)))
        if value <= 0:
            raise InvalidInput(f"{CONFIG_FILE}: [public] {key} must be positive")
        return value

    def count(key: str) -> int:
        value: int = config_value(CONFIG_FILE, table, key, int, getattr(defaults, key))
        if value < 1:
            raise InvalidInput(f"{CONFIG_FILE}: [public] {key} must be at least 1")
        return value

    days = config_value(CONFIG_FILE, table, "pending_enrolment_days", (int, float), 7)
    if days <= 0:
        raise InvalidInput(f"{CONFIG_FILE}: [public] pending_enrolment_days must be positive")
    limits = PublicLimits(
        max_message_bytes=count("max_message_bytes"),
        enrolments_per_second_per_address=rate("enrolments_per_second_per_address"),
        enrolment_burst_per_address=count("enrolment_burst_per_address"),
        enrolments_per_second=rate("enrolments_per_second"),
        enrolment_burst=count("enrolment_burst"),
        access_per_second_per_address=rate("access_per_second_per_address"),
        access_burst_per_address=count("access_burst_per_address"),
        access_per_second=rate("access_per_second"),
        access_burst=count("access_burst"),
        max_pending_enrolments=count("max_pending_enrolments"),
        pending_enrolment_lifetime=timedelta(days=days),
    )
    if limits.max_message_bytes < 4096:
        raise InvalidInput(f"{CONFIG_FILE}: [public] max_message_bytes must be at least 4096")
    return limits


def _peer_call_limits(table: Mapping[str, Any]) -> PeerCallLimits:
    defaults = PeerCallLimits()
    values: dict[str, int] = {}
    for key in ("calls_per_member", "calls_per_address", "watch_streams_per_peer", "watch_streams"):
        values[key] = config_value(CONFIG_FILE, table, key, int, getattr(defaults, key))
        if values[key] < 1:
            raise InvalidInput(f"{CONFIG_FILE}: [peer_limits] {key} must be at least 1")
    return PeerCallLimits(**values)


def parse_config(
    text: str, data_dir: Path, environ: Mapping[str, str] | None = None
) -> RegistryConfig:
    """Parse ``registry.toml`` text and apply environment overrides.

    Raises:
        InvalidInput: malformed TOML, or a value of the wrong type or range.
    """
    environ = os.environ if environ is None else environ
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"{CONFIG_FILE} is not valid TOML: {exc}") from exc
    main = document.get("registry", {})
    limits = document.get("rate_limits", {})
    if not isinstance(main, dict) or not isinstance(limits, dict):
        raise InvalidInput(f"{CONFIG_FILE}: [registry] and [rate_limits] must be tables")

    def seconds(key: str, default: int) -> timedelta:
        return timedelta(seconds=config_value(CONFIG_FILE, main, key, (int, float), default))

    config = RegistryConfig(
        data_dir=data_dir,
        member_id=config_value(CONFIG_FILE, main, "member_id", str, "registry"),
        federation_id=config_value(CONFIG_FILE, main, "federation_id", str, "credence"),
        listen=environ.get("CREDENCE_REGISTRY_LISTEN")
        or config_value(CONFIG_FILE, main, "listen", str, "127.0.0.1:7700"),
        public_listen=environ.get("CREDENCE_REGISTRY_PUBLIC_LISTEN")
        or config_value(CONFIG_FILE, main, "public_listen", str, "127.0.0.1:7702"),
        http_listen=environ.get("CREDENCE_REGISTRY_HTTP_LISTEN")
        or config_value(CONFIG_FILE, main, "http_listen", str, "127.0.0.1:7780"),
        http_tls_cert=_data_path(
            data_dir, config_value(CONFIG_FILE, main, "http_tls_cert", str, "")
        ),
        http_tls_key=_data_path(data_dir, config_value(CONFIG_FILE, main, "http_tls_key", str, "")),
        console_listen=environ.get("CREDENCE_REGISTRY_CONSOLE_LISTEN")
        or config_value(CONFIG_FILE, main, "console_listen", str, ""),
        metrics=config_value(CONFIG_FILE, main, "metrics", bool, True),
        database_url=environ.get("CREDENCE_REGISTRY_DATABASE_URL")
        or config_value(CONFIG_FILE, main, "database_url", str, ""),
        max_message_bytes=config_value(
            CONFIG_FILE, main, "max_message_bytes", int, DEFAULT_MAX_MESSAGE_BYTES
        ),
        max_screen_rows=config_value(
            CONFIG_FILE, main, "max_screen_rows", int, DEFAULT_MAX_SCREEN_ROWS
        ),
        grace_seconds=float(config_value(CONFIG_FILE, main, "grace_seconds", (int, float), 5.0)),
        manifest_validity=timedelta(
            days=config_value(CONFIG_FILE, main, "manifest_validity_days", (int, float), 30)
        ),
        member_certificate_validity=timedelta(
            days=config_value(CONFIG_FILE, main, "member_certificate_days", (int, float), 30)
        ),
        fanout_deadline_seconds=float(
            config_value(CONFIG_FILE, main, "fanout_deadline_seconds", (int, float), 2.0)
        ),
        batch_deadline_seconds=float(
            config_value(CONFIG_FILE, main, "batch_deadline_seconds", (int, float), 20.0)
        ),
        fanout_concurrency=config_value(CONFIG_FILE, main, "fanout_concurrency", int, 256),
        query_lifetime=seconds("query_lifetime_seconds", 60),
        verdict_lifetime=seconds("verdict_lifetime_seconds", 86400),
        max_embargo=timedelta(
            days=config_value(CONFIG_FILE, main, "max_embargo_days", (int, float), 90)
        ),
        log_merge_delay=seconds("log_merge_delay_seconds", 300),
        log_retention=timedelta(
            days=config_value(CONFIG_FILE, main, "log_retention_days", (int, float), 730)
        ),
        node_batch_size=config_value(CONFIG_FILE, main, "node_batch_size", int, 1000),
        witness_interval_seconds=float(
            config_value(CONFIG_FILE, main, "witness_interval_seconds", (int, float), 10.0)
        ),
        witness_deadline_seconds=float(
            config_value(CONFIG_FILE, main, "witness_deadline_seconds", (int, float), 5.0)
        ),
        witness_quorum=_witness_quorum(config_value(CONFIG_FILE, main, "witness_quorum", int, -1)),
        contest_deadline_days=config_value(
            CONFIG_FILE, main, "contest_deadline_days", int, DEFAULT_CONTEST_DEADLINE_DAYS
        ),
        purposes=_purposes(config_value(CONFIG_FILE, document, "purposes", dict, {})),
        rate_limits=RateLimits(
            requests_per_second=float(
                config_value(CONFIG_FILE, limits, "requests_per_second", (int, float), 200.0)
            ),
            burst=config_value(CONFIG_FILE, limits, "burst", int, 400),
            distinct_subjects_per_day=config_value(
                CONFIG_FILE, limits, "distinct_subjects_per_day", int, 1_000_000
            ),
            log_rows_per_minute=config_value(
                CONFIG_FILE, limits, "log_rows_per_minute", int, 120_000
            ),
            refused_rows_per_minute=config_value(
                CONFIG_FILE, limits, "refused_rows_per_minute", int, 600
            ),
        ),
        public=_public_limits(config_value(CONFIG_FILE, document, "public", dict, {})),
        peer_limits=_peer_call_limits(config_value(CONFIG_FILE, document, "peer_limits", dict, {})),
    )
    if (config.http_tls_cert is None) != (config.http_tls_key is None):
        raise InvalidInput(
            f"{CONFIG_FILE}: set both http_tls_cert and http_tls_key (the operator's "
            "certificate and its key), or neither for the federation CA's"
        )
    if config.max_message_bytes < 64 * 1024:
        raise InvalidInput(f"{CONFIG_FILE}: max_message_bytes must be at least 65536")
    if config.rate_limits.refused_rows_per_minute < 1:
        raise InvalidInput(f"{CONFIG_FILE}: refused_rows_per_minute must be at least 1")
    if config.max_screen_rows < 1:
        raise InvalidInput(f"{CONFIG_FILE}: max_screen_rows must be at least 1")
    if config.rate_limits.log_rows_per_minute < config.max_screen_rows:
        raise InvalidInput(
            f"{CONFIG_FILE}: log_rows_per_minute ({config.rate_limits.log_rows_per_minute}) "
            f"must be at least max_screen_rows ({config.max_screen_rows}), or no full "
            f"screening message could ever be logged"
        )
    if not 1 <= config.node_batch_size <= 5000:
        raise InvalidInput(f"{CONFIG_FILE}: node_batch_size must be 1..5000")
    if config.fanout_deadline_seconds <= 0 or config.fanout_concurrency < 1:
        raise InvalidInput(f"{CONFIG_FILE}: fan-out deadline and concurrency must be positive")
    if config.witness_interval_seconds <= 0 or config.witness_deadline_seconds <= 0:
        raise InvalidInput(f"{CONFIG_FILE}: witness interval and deadline must be positive")
    if not MIN_CONTEST_DEADLINE_DAYS <= config.contest_deadline_days <= MAX_CONTEST_DEADLINE_DAYS:
        raise InvalidInput(
            f"{CONFIG_FILE}: contest_deadline_days is {config.contest_deadline_days}; it must be "
            f"{MIN_CONTEST_DEADLINE_DAYS}..{MAX_CONTEST_DEADLINE_DAYS} (days an agency has to "
            f"resolve a contest; {DEFAULT_CONTEST_DEADLINE_DAYS} when unset)"
        )
    return config


def _witness_quorum(value: int) -> int | None:
    # -1 (the file's default) means a majority of the active witnesses.
    if value < -1:
        raise InvalidInput(f"{CONFIG_FILE}: witness_quorum must be -1 (a majority) or 0 or more")
    return None if value == -1 else value


def load_config(data_dir: Path, environ: Mapping[str, str] | None = None) -> RegistryConfig:
    """Read ``registry.toml`` from a data directory.

    Raises:
        InvalidInput: no config (run ``credence registry init``) or an invalid one.
    """
    path = Path(data_dir) / CONFIG_FILE
    if not path.is_file():
        raise InvalidInput(f"{path} not found: run `credence registry init --dir {data_dir}` first")
    return parse_config(path.read_text(encoding="utf-8"), Path(data_dir), environ)


def _data_path(data_dir: Path, value: str) -> Path | None:
    """``value`` as a path, relative ones under ``data_dir``; empty: None."""
    return (data_dir / value) if value else None


def render_config(config: RegistryConfig) -> str:
    """The ``registry.toml`` that ``init`` writes."""
    lines = [
        "# Credence registry. Environment overrides: CREDENCE_REGISTRY_LISTEN,",
        "# CREDENCE_REGISTRY_PUBLIC_LISTEN, CREDENCE_REGISTRY_HTTP_LISTEN,",
        "# CREDENCE_REGISTRY_CONSOLE_LISTEN, CREDENCE_REGISTRY_DATABASE_URL.",
        "[registry]",
        f'member_id = "{config.member_id}"',
        f'federation_id = "{config.federation_id}"',
        "# Members' port: mutual TLS, lookups, grants, manifest, status list.",
        f'listen = "{config.listen}"',
        "# Public TLS port, no client certificates: enrolment, subject access, the log.",
        f'public_listen = "{config.public_listen}"',
        "# The HTTP side (manifest, JWKS, status list) is HTTPS; empty: tls.crt/tls.key",
        "# (the federation CA's), else the operator's PEM chain and key (relative: here).",
        f'http_listen = "{config.http_listen}"',
        f'http_tls_cert = "{config.http_tls_cert or ""}"',
        f'http_tls_key = "{config.http_tls_key or ""}"',
        "# The operator's console (HTTPS with the HTTP side's certificate; log in with a",
        "# token from `credence registry admin-token`); empty: no console.",
        f'console_listen = "{config.console_listen}"',
        "# Prometheus metrics, served at /metrics on the console's listener.",
        f"metrics = {'true' if config.metrics else 'false'}",
        "# Empty: the SQLite file registry.db in this directory.",
        f'database_url = "{config.database_url}"',
        f"manifest_validity_days = {config.manifest_validity.days}",
        f"member_certificate_days = {config.member_certificate_validity.days}",
        f"fanout_deadline_seconds = {config.fanout_deadline_seconds}",
        f"batch_deadline_seconds = {config.batch_deadline_seconds}",
        f"fanout_concurrency = {config.fanout_concurrency}",
        f"query_lifetime_seconds = {int(config.query_lifetime.total_seconds())}",
        f"verdict_lifetime_seconds = {int(config.verdict_lifetime.total_seconds())}",
        f"max_embargo_days = {config.max_embargo.days}",
        "# Log entries' content is erased after this; their leaves (and proofs) remain.",
        f"log_retention_days = {config.log_retention.days}",
        f"node_batch_size = {config.node_batch_size}",
        "# Witnesses: a checkpoint is offered to every witnessing member this often,",
        "# each call under the deadline, and published once witness_quorum cosigned it",
        "# (-1: a majority of the active witnesses; the manifest carries the quorum).",
        f"witness_interval_seconds = {config.witness_interval_seconds}",
        f"witness_deadline_seconds = {config.witness_deadline_seconds}",
        f"witness_quorum = {-1 if config.witness_quorum is None else config.witness_quorum}",
        "# Days an agency has to resolve a subject's contest (1..365, published in the",
        "# manifest); a record whose contest is open past them stops counting in verdicts.",
        f"contest_deadline_days = {config.contest_deadline_days}",
        "# Members' port: the largest request message in bytes. 1,000 screening rows",
        "# with consent tokens (~2.3 KB each) take ~2.3 MB; a larger message is refused",
        "# (RESOURCE_EXHAUSTED) before it is decoded.",
        f"max_message_bytes = {config.max_message_bytes}",
        "# Rows per screening message; a larger message is refused whole (INVALID_ARGUMENT).",
        f"max_screen_rows = {config.max_screen_rows}",
        "",
        "[rate_limits]",
        f"requests_per_second = {config.rate_limits.requests_per_second}",
        f"burst = {config.rate_limits.burst}",
        f"distinct_subjects_per_day = {config.rate_limits.distinct_subjects_per_day}",
        "# Log rows (lookups and refused lookups) a member may add per minute, and at",
        "# once; over it, RESOURCE_EXHAUSTED and nothing more is logged for that member.",
        "# At least max_screen_rows.",
        f"log_rows_per_minute = {config.rate_limits.log_rows_per_minute}",
        "# Refused single lookups a member may have logged per minute (a refusal row",
        "# outweighs the request that caused it); past it they are refused unlogged.",
        f"refused_rows_per_minute = {config.rate_limits.refused_rows_per_minute}",
        "",
        "# The public port (no client certificate): enrolment and subject access.",
        "# Rates per source address and overall, refused with RESOURCE_EXHAUSTED;",
        "# 'access' covers subject access and enrolment status calls. Pending",
        "# enrolments beyond the cap are refused; unapproved ones expire.",
        "[public]",
        f"max_message_bytes = {config.public.max_message_bytes}",
        f"enrolments_per_second_per_address = {config.public.enrolments_per_second_per_address}",
        f"enrolment_burst_per_address = {config.public.enrolment_burst_per_address}",
        f"enrolments_per_second = {config.public.enrolments_per_second}",
        f"enrolment_burst = {config.public.enrolment_burst}",
        f"access_per_second_per_address = {config.public.access_per_second_per_address}",
        f"access_burst_per_address = {config.public.access_burst_per_address}",
        f"access_per_second = {config.public.access_per_second}",
        f"access_burst = {config.public.access_burst}",
        f"max_pending_enrolments = {config.public.max_pending_enrolments}",
        "pending_enrolment_days = "
        f"{config.public.pending_enrolment_lifetime.total_seconds() / 86400:g}",
        "",
        "# Calls one peer may have in flight at once (members by certificate, others by",
        "# source address); beyond them, RESOURCE_EXHAUSTED. A requester's concurrent",
        "# lookups and screening streams count against calls_per_member.",
        "[peer_limits]",
        f"calls_per_member = {config.peer_limits.calls_per_member}",
        f"calls_per_address = {config.peer_limits.calls_per_address}",
        f"watch_streams_per_peer = {config.peer_limits.watch_streams_per_peer}",
        f"watch_streams = {config.peer_limits.watch_streams}",
        "",
        "# Fair-use limits per purpose (nodes check them again).",
    ]
    for name, rules in sorted(config.purposes.items()):
        kinds = ", ".join(f'"{kind}"' for kind in sorted(rules.kinds))
        lines += [
            f"[purposes.{name}]",
            f"max_validity_days = {rules.max_validity.days}",
            f"max_uses = {rules.max_uses}",
            f"kinds = [{kinds}]",
        ]
    return "\n".join(lines) + "\n"
