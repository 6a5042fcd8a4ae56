"""A lookup end to end at the registry: what the gRPC servicer calls.

:class:`Lookups` holds the state every lookup shares (:mod:`central_registry.lookup_context`)
and runs one subject (:mod:`central_registry.lookup_single`) or one screening
message (:mod:`central_registry.screening`). A request's shape is checked
(:mod:`central_registry.limits.request_shape`) before anything is written for
it; its rate and log-row quota are spent next
(:mod:`central_registry.limits.lookup_quotas`); its rows, grant uses and
subjects are written in one transaction (:mod:`central_registry.lookup_log`).
"""

from __future__ import annotations

from sqlalchemy import Engine

from central_registry import lookup_single, screening
from central_registry.config import RegistryConfig
from central_registry.fanout import FanOut
from central_registry.keyring import RegistryKeys
from central_registry.limits.lookup_quotas import LookupQuotas
from central_registry.lookup_context import LookupContext
from central_registry.lookup_log import LookupLog
from central_registry.manifest_cache import ManifestCache
from central_registry.verdict_records import VerdictRecords
from credence.clock import Clock
from credence.storage import session_factory
from credence.v1 import registry_pb2

__all__ = ["Lookups"]


class Lookups:
    """The registry's lookup logic over its keys, database, manifest and fan-out."""

    def __init__(
        self,
        *,
        config: RegistryConfig,
        keys: RegistryKeys,
        engine: Engine,
        manifests: ManifestCache,
        fanout: FanOut,
        clock: Clock,
    ) -> None:
        sessions = session_factory(engine)
        self._context = LookupContext(
            config=config,
            keys=keys,
            manifests=manifests,
            fanout=fanout,
            clock=clock,
            log=LookupLog(sessions, LookupQuotas(config.rate_limits)),
            records=VerdictRecords(sessions),
        )

    def serve_scorecard_at(self, url: str) -> None:
        """Name ``url`` (the HTTP side's ``/scorecard``) in every explanation from now on."""
        self._context.scorecard_url = url

    async def request_verdict(
        self, requester: str, request: registry_pb2.RequestVerdictRequest
    ) -> registry_pb2.RequestVerdictResponse:
        """Check, log, fan out, aggregate and sign one lookup.

        Raises:
            CredenceError: the lookup is refused; the refusal is logged first (within
                the log quota).
        """
        return await lookup_single.request_verdict(self._context, requester, request)

    async def screen_message(
        self, requester: str, message: registry_pb2.ScreenBatchRequest
    ) -> registry_pb2.ScreenBatchResponse:
        """Screen one message's rows: refusals per row, verdicts under one signature.

        Raises:
            CredenceError: the whole message is refused (its shape, rate limit, log quota,
                rights); its identifiable rows are logged as refused, within budget.
        """
        return await screening.screen_message(self._context, requester, message)
