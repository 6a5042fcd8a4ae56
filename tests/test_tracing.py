"""Traces across a lookup and a screening: one trace from the client to every node, no subject.

A registry and two agency nodes run in this process with tracing on (an
in-memory exporter); the requester's calls cross loopback mutual TLS with
``traceparent`` in their metadata, exactly as between processes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from support.fixtures import StartFederation
from support.inprocess import InProcessFederation

from credence.client.results import ScreenRow
from credence.dev import synthetic
from credence.ops import tracing
from credence.v1 import agency_pb2

pytestmark = pytest.mark.slow

COURT, BANK = synthetic.AGENCY_PROFILES[0], synthetic.AGENCY_PROFILES[2]
VERDICT = "/credence.v1.RegistryService/RequestVerdict"
SCREEN = "/credence.v1.RegistryService/ScreenBatch"
ANSWER = "/credence.v1.AgencyNodeService/AnswerQuery"
ANSWER_BATCH = "/credence.v1.AgencyNodeService/AnswerBatch"


@pytest.fixture(scope="module")
def exporter() -> Iterator[InMemorySpanExporter]:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    tracing.use_provider(provider)
    try:
        yield spans
    finally:
        tracing.use_provider(None)
        provider.shutdown()


@pytest.fixture(scope="module")
def federation(
    exporter: InMemorySpanExporter, start_federation: StartFederation
) -> InProcessFederation:
    fed = start_federation("tracing")
    fed.enrol_member("acme", "company", "--purposes", "counterparty_verification,credit_assessment")
    fed.enrol_member("idp", "company", "--identity-verifier")
    fed.add_agency(COURT)
    fed.add_agency(BANK)
    return fed


def _text_of(span: ReadableSpan) -> str:
    """Everything a span says: name, attributes, events and their attributes."""
    parts = [span.name, repr(dict(span.attributes or {}))]
    for event in span.events:
        parts += [event.name, repr(dict(event.attributes or {}))]
    return "\n".join(parts)


def _one(spans: Sequence[ReadableSpan], name: str) -> ReadableSpan:
    named = [span for span in spans if span.name == name]
    assert len(named) == 1, f"{name}: {[span.name for span in spans]}"
    return named[0]


def _root(spans: Sequence[ReadableSpan], name: str) -> ReadableSpan:
    """The client's span of a call: the only one of that name with no parent."""
    return _one([span for span in spans if span.parent is None], name)


def _children(spans: Sequence[ReadableSpan], parent: ReadableSpan, name: str) -> list[ReadableSpan]:
    return [
        span
        for span in spans
        if span.name == name
        and span.parent is not None
        and span.parent.span_id == parent.context.span_id
    ]


def _trace(spans: Sequence[ReadableSpan], root: ReadableSpan) -> list[ReadableSpan]:
    return [span for span in spans if span.context.trace_id == root.context.trace_id]


def test_a_lookup_is_one_trace_from_client_to_each_node(
    federation: InProcessFederation, exporter: InMemorySpanExporter
) -> None:
    person = synthetic.person(0)
    token, grant_id, _, binding = federation.consent(person, requester="acme", idp="idp")
    exporter.clear()
    with federation.requester("acme") as acme:
        verdict = acme.request_verdict(
            federation.subject(person),
            kinds=("blacklist", "credit"),
            purpose="credit_assessment",
            grant=agency_pb2.Grant(consent_token=token),
        )
    spans = exporter.get_finished_spans()
    client = _root(spans, VERDICT)
    trace = _trace(spans, client)
    # client -> registry's server span -> grant check, log append, one call per agency,
    # aggregation -> each node's server span -> its evaluation.
    [registry] = _children(trace, client, VERDICT)
    for step in ("registry.grant_check", "registry.log_append", "registry.aggregate"):
        assert len(_children(trace, registry, step)) == 1, step
    calls = _children(trace, registry, "registry.agency_call")
    assert sorted(str((span.attributes or {})["credence.agency"]) for span in calls) == [
        BANK.name,
        COURT.name,
    ]
    for call in calls:
        [node] = _children(trace, call, ANSWER)
        assert len(_children(trace, node, "node.evaluate")) == 1
    assert all(span.context.trace_id == client.context.trace_id for span in trace)

    secrets = {
        person,
        federation.subject(person).hex(),
        grant_id,
        token,
        binding,
        verdict.verdict.query_id,
        verdict.verdict.verdict_id,
    }
    for span in spans:
        text = _text_of(span)
        assert not [secret for secret in secrets if secret in text], span.name


def test_a_screening_is_one_trace_and_names_no_subject(
    federation: InProcessFederation, exporter: InMemorySpanExporter
) -> None:
    organisations = [synthetic.organisation(index) for index in range(1, 6)]
    rows = [ScreenRow(f"row-{i}", federation.subject(o)) for i, o in enumerate(organisations)]
    exporter.clear()
    with federation.requester("acme") as acme:
        outcomes = list(acme.screen(rows, message_size=5))
    assert len(outcomes) == len(rows)
    spans = exporter.get_finished_spans()
    client = _root(spans, SCREEN)
    trace = _trace(spans, client)
    [registry] = _children(trace, client, SCREEN)
    assert (_one(trace, "registry.log_append").attributes or {})["credence.items"] == 5
    calls = _children(trace, registry, "registry.agency_call")
    # Blacklist screening asks the agencies contributing blacklist records: the court.
    assert [(span.attributes or {})["credence.agency"] for span in calls] == [COURT.name]
    for call in calls:
        assert len(_children(trace, call, ANSWER_BATCH)) == 1

    secrets = {*organisations, *(federation.subject(o).hex() for o in organisations)}
    secrets |= {outcome.verdict.verdict.query_id for outcome in outcomes if outcome.verdict}
    for span in spans:
        text = _text_of(span)
        assert not [secret for secret in secrets if secret in text], span.name


def test_span_attributes_outside_the_allowed_keys_are_refused() -> None:
    provider = TracerProvider()
    tracing.use_provider(provider)
    try:
        with pytest.raises(ValueError, match="subject"):
            tracing.span("registry.lookup", subject="anything")
    finally:
        tracing.use_provider(None)


def test_with_tracing_off_there_is_no_span_and_no_metadata() -> None:
    assert not tracing.enabled()
    assert tracing.span("registry.grant_check") is tracing.span("registry.aggregate", items=3)
    assert tracing.outgoing_metadata() is None
    assert tracing.current_trace_id() is None
    assert tracing.server_interceptors() == []


def test_configure_reads_the_standard_environment() -> None:
    try:
        assert not tracing.configure("credence-test", environ={})
        assert not tracing.enabled()
        assert tracing.configure("credence-test", environ={"OTEL_TRACES_EXPORTER": "console"})
        assert tracing.enabled()
    finally:
        tracing.shutdown()
    assert not tracing.enabled()


def test_an_otlp_endpoint_turns_tracing_on_and_none_keeps_it_off() -> None:
    try:
        # Nothing listens there: the exporter connects only to export, and nothing is.
        assert tracing.configure("credence-test", otlp="http://127.0.0.1:9", environ={})
        assert tracing.enabled()
    finally:
        tracing.shutdown()
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_TRACES_EXPORTER": "none"}
    assert not tracing.configure("credence-test", environ=environ)
    assert not tracing.enabled()
