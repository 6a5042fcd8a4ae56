"""Every /metrics of a federation after the demo's story: the figures are there, no subject is.

The demo's story runs against a real federation (`credence dev up`: own
processes, mutual TLS): lookups of a clear and a listed organisation, a
person's credit with consent, the same without consent (refused), 10,000
screening rows, the person reading their log. Then the registry's ``/metrics``
(on the console's listener) and every node's are scraped, as Prometheus
would. From the attacker's side: no identifier, subject reference, grant id or
query id the story used appears anywhere in the text, and the counted figures
equal what happened (verdicts signed, rows screened, the refused lookup, each
node's answered and refused queries as its own query log has them).
"""

from __future__ import annotations

import base64
import json
import sqlite3
import ssl
import time
from collections import defaultdict
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from credence.dev import demo
from credence.dev import federation as dev_federation
from credence.subjects import PseudonymisationKey, ref_for

pytestmark = pytest.mark.slow

#: A node audits every 30 s (node.toml's default); a busy machine gets headroom.
AUDIT_WAIT_SECONDS = 120
REQUEST_VERDICT = "/credence.v1.RegistryService/RequestVerdict"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _samples(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _sum(samples: Samples, name: str, **labels: str) -> float:
    return sum(
        value
        for (sample, sample_labels), value in samples.items()
        if sample == name and set(labels.items()) <= set(sample_labels)
    )


def _jti(token: str) -> str:
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return str(claims["jti"])


def _node_log(data_dir: Path) -> tuple[dict[tuple[str, str], int], set[str]]:
    """A node's logged queries by (outcome, code), and every query id and subject reference."""
    counts: dict[tuple[str, str], int] = defaultdict(int)
    secrets: set[str] = set()
    with sqlite3.connect(data_dir / "node.db") as db:
        rows = db.execute(
            "SELECT outcome, status_code, query_id, subject_ref, purpose FROM query_log"
        )
        for outcome, code, query_id, subject_ref, purpose in rows:
            if purpose != "mask_recovery":  # the recovery desk's rows are not answers
                counts[(outcome, code)] += 1
            secrets.add(query_id)
            if subject_ref:
                secrets.add(bytes(subject_ref).hex())
    return counts, secrets


def _after_an_audit(url: str) -> str:
    deadline = time.monotonic() + AUDIT_WAIT_SECONDS
    while True:
        text = httpx.get(url, timeout=30).text
        if "credence_node_audit_lag_seconds" in text or time.monotonic() > deadline:
            return text
        time.sleep(0.5)


def test_no_subject_in_any_metric_and_the_figures_match_the_story(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "fed"
    try:
        demo.run(directory, demo.Story())
        out = capsys.readouterr().out
        assert "the refused attempt is in the log too" in out
        federation = json.loads((directory / dev_federation.FEDERATION_FILE).read_text())
        registry = federation["registry"]
        context = ssl.create_default_context(cadata=Path(registry["ca_cert"]).read_text())
        scraped = {"registry": httpx.get(registry["metrics_url"], verify=context, timeout=30)}
        for agency in federation["agencies"]:
            scraped[agency["member_id"]] = httpx.get(agency["metrics_url"], timeout=30)
        assert all(response.status_code == 200 for response in scraped.values())
        texts = {name: response.text for name, response in scraped.items()}
        for agency in federation["agencies"]:  # the audit's figures come with its first pass
            texts[agency["member_id"]] = _after_an_audit(agency["metrics_url"])

        # What the story used that must never be a label value (or anywhere else).
        key = PseudonymisationKey.from_bytes(Path(federation["pseudonymisation_key"]).read_bytes())
        samples = federation["samples"]
        identifiers = [
            *samples["clear_organisation"], *samples["listed_organisation"],
            *samples["disputed"], *samples["expired_organisation"],
            *(person["id"] for person in samples["person_with_consent"]),
            *(f"reg:CN:ORG{index:06d}" for index in range(200)),  # the screened rows
        ]  # fmt: skip
        secrets = {*identifiers, *(ref_for(key, identifier).hex() for identifier in identifiers)}
        secrets |= {
            _jti(Path(person["consent"]).read_text()) for person in samples["person_with_consent"]
        }
        node_counts = {}
        for agency in federation["agencies"]:
            counts, logged = _node_log(Path(agency["data_dir"]))
            node_counts[agency["member_id"]] = counts
            secrets |= logged
        assert len(secrets) > 400
        for name, text in texts.items():
            leaked = sorted(
                secret for secret in secrets if secret in text or secret.upper() in text
            )
            assert leaked == [], f"{name}'s /metrics shows {leaked[:5]}"

        figures = _samples(texts["registry"])
        # Two organisations and one person's credit, each verdict signed once.
        assert _sum(figures, "credence_registry_verdicts_total") == 3
        assert _sum(figures, "credence_registry_verdicts_total", status="listed") >= 1
        assert _sum(figures, "credence_rpc_requests_total", method=REQUEST_VERDICT) == 4
        assert _sum(figures, "credence_rpc_requests_total", method=REQUEST_VERDICT, code="OK") == 3
        assert _sum(figures, "credence_rpc_duration_seconds_count", method=REQUEST_VERDICT) == 4
        assert _sum(figures, "credence_registry_screening_rows_total") == 10_000
        for agency in federation["agencies"]:
            asked = _sum(
                figures, "credence_registry_fanout_calls_total", agency=agency["member_id"]
            )
            assert asked == _sum(
                figures, "credence_registry_fanout_seconds_count", agency=agency["member_id"]
            )
            assert _sum(
                figures, "credence_registry_fanout_calls_total",
                agency=agency["member_id"], outcome="ok",
            ) >= 1  # fmt: skip
        assert _sum(figures, "credence_registry_log_size_entries") >= 10_004
        assert _sum(figures, "credence_registry_log_appends_total") == _sum(
            figures, "credence_registry_log_size_entries"
        )
        assert ("credence_registry_checkpoint_age_seconds", ()) in figures
        assert _sum(figures, "process_resident_memory_bytes") > 0

        for agency in federation["agencies"]:
            figures = _samples(texts[agency["member_id"]])
            counted = {
                (dict(labels)["outcome"], dict(labels)["code"]): int(value)
                for (name, labels), value in figures.items()
                if name == "credence_node_queries_total"
            }
            assert counted == node_counts[agency["member_id"]], agency["member_id"]
            assert sum(counted.values()) > 0
            assert ("credence_node_audit_lag_seconds", ()) in figures
            assert ("credence_node_audit_unchecked_promises", ()) in figures
            # The family is there; an honest registry raises no alarm.
            assert "# TYPE credence_node_audit_alarms_total counter" in texts[agency["member_id"]]
            assert _sum(figures, "credence_node_audit_alarms_total") == 0
            assert _sum(figures, "credence_node_import_running") == 0
            assert _sum(figures, "process_cpu_seconds_total") > 0
            assert _sum(figures, "credence_rpc_requests_total") > 0
    finally:
        dev_federation.down(directory)
