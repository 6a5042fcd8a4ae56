r"""``credence verify``: one subject's signed verdict.

    credence verify ID [--out FILE] [--json]
    credence verify --person ID --grant CONSENT.jwt [--purpose P] [--kinds K,...]
                    [--explanation-out FILE]

An organisation is looked up on the public-register basis, a person only with
their consent or a mandate. The verdict's signature is verified against the
registry key of the federation manifest before anything is printed or saved.
A credit verdict asked for a credit decision (``credit_assessment``) comes
with the registry's signed explanation, checked against the verdict and the
scorecard and printed in plain words: what the applicant's notice says.
``--explanation-out`` saves it (``credence verdict explain`` checks it later).
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict

from credence import jws
from credence.cli.federation import Federation, add_federation_option
from credence.cli.options import (
    add_purpose_option,
    add_role_option,
    identifier,
    kinds,
    read_text,
)
from credence.client.requester import VerifiedVerdict
from credence.encoding import format_time
from credence.errors import InvalidInput
from credence.explanations import describe
from credence.grants import tokens
from credence.queries import public_register
from credence.subjects import SubjectType, normalise, ref_for
from credence.v1 import agency_pb2, common_pb2

EXAMPLES = """examples:
  credence verify cn-uscc:91350100M000100Y43
  credence verify lei:5493001KJTIIGC8Y1R12 --json --out verdict.json
  credence verify --person cn-rid:11010519491231002X --grant consent.jwt \\
      --purpose credit_assessment --kinds blacklist,credit
"""


def register(parser: argparse.ArgumentParser) -> None:
    """Add ``verify``'s arguments to its parser."""
    parser.epilog = EXAMPLES
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    add_federation_option(parser)
    add_role_option(parser)
    parser.add_argument(
        "identifier", nargs="?", type=identifier, metavar="ID",
        help="an organisation identifier, e.g. cn-uscc:..., lei:..., reg:GB:...",
    )  # fmt: skip
    parser.add_argument("--person", type=identifier, metavar="ID", help="a person's identifier")
    parser.add_argument(
        "--grant", type=Path, metavar="FILE",
        help="the consent (or mandate) token file; required for a person",
    )  # fmt: skip
    add_purpose_option(parser, None, "why you ask (default counterparty_verification; "
                       "credit_assessment for a person)")  # fmt: skip
    parser.add_argument(
        "--kinds", type=kinds, default=None, metavar="K,...",
        help="verdict kinds (default blacklist; blacklist,credit for a person)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, metavar="FILE", help="save the signed verdict here")
    parser.add_argument(
        "--explanation-out", type=Path, metavar="FILE",
        help="save the signed explanation of a credit decision's verdict here",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(handler=_verify, parser=parser)


def _grant_from_file(path: Path) -> agency_pb2.Grant:
    token = read_text(path, "grant file")
    typ = jws.peek_header(token).get("typ")
    if typ == tokens.CONSENT_TYP:
        return agency_pb2.Grant(consent_token=token)
    if typ == tokens.MANDATE_TYP:
        return agency_pb2.Grant(mandate_token=token)
    raise InvalidInput(
        f"{path} is a {typ!r} token; --grant takes a consent ({tokens.CONSENT_TYP}) "
        f"or a mandate ({tokens.MANDATE_TYP})"
    )


def _verify(args: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = args.parser
    if (args.identifier is None) == (args.person is None):
        parser.error("name one subject: an organisation ID, or --person ID")
    subject_id = args.person or args.identifier
    subject_type = normalise(subject_id).subject_type
    person = subject_type == SubjectType.PERSON
    if args.person is not None and not person:
        parser.error("--person takes a person's identifier (cn-rid:..., nin:...)")
    purpose = args.purpose or ("credit_assessment" if person else "counterparty_verification")
    verdict_kinds = args.kinds or (("blacklist", "credit") if person else ("blacklist",))
    if args.grant is not None:
        grant = _grant_from_file(args.grant)
    elif person:
        raise InvalidInput(
            "a person is looked up only with their consent or a mandate: pass --grant FILE "
            "(the public-register basis covers organisations)"
        )
    else:
        grant = public_register()
    federation = Federation(args.federation)
    subject = ref_for(federation.pseudonymisation(), subject_id)
    with federation.requester(args.role) as requester:
        verified = requester.request_verdict(
            subject, kinds=verdict_kinds, purpose=purpose, grant=grant
        )
        registry_keys = requester.manifest().registry_keys
    key_ids = [sig.keyid for sig in verified.envelope.signatures if sig.keyid in registry_keys]
    _save(args, verified)
    normalised = normalise(subject_id)
    summary = {
        "subject": {
            "identifier": subject_id,
            "normalised": normalised.canonical,
            "type": normalised.subject_type.name.lower(),
        },
        **_summary(verified, key_ids),
    }
    if args.json:
        print(json.dumps({**summary, "out": None if args.out is None else str(args.out)}))
        return 0
    _print_summary(summary)
    if verified.explanation is not None:
        print("explanation (signed by the registry, checked against the verdict):")
        for line in describe(verified.explanation):
            print(f"  {line}")
    if args.out is not None:
        print(f"saved to {args.out} (check it with `credence verdict check {args.out}`)")
    if args.explanation_out is not None:
        print(f"explanation saved to {args.explanation_out} (check it with "
              f"`credence verdict explain VERDICT_FILE {args.explanation_out}`)")  # fmt: skip
    return 0


def _save(args: argparse.Namespace, verified: VerifiedVerdict) -> None:
    """Write the files asked for: the verdict (``--out``), its explanation (``--explanation-out``).

    Raises:
        InvalidInput: an explanation is asked for a verdict that has none.
    """
    if args.out is not None:
        args.out.write_text(verified.to_file(), encoding="utf-8")
    if args.explanation_out is None:
        return
    signed = verified.explanation_envelope
    if signed is None:
        raise InvalidInput(
            "the registry explains credit verdicts asked for a credit decision only: "
            "--explanation-out needs --purpose credit_assessment and --kinds with credit"
        )
    args.explanation_out.write_text(signed.to_json(), encoding="utf-8")


def _summary(verified: VerifiedVerdict, key_ids: list[str]) -> dict[str, Any]:
    verdict = verified.verdict
    return {
        "verified": True,
        "verdict_id": verdict.verdict_id,
        "subject_ref": verdict.subject.ref.hex(),
        "requester": verdict.requester,
        "status": verified.status,
        "categories": list(verified.categories),
        "disputed": verdict.blacklist.disputed or verdict.credit.disputed,
        "score": verified.score,
        "band": verified.band,
        "reason_codes": list(verified.reason_codes),
        "provisional": verified.provisional if verified.score is not None else None,
        "coverage": coverage_of(verified.verdict.coverage),
        "grant_id": verdict.grant_id,
        "issued_at": format_time(verdict.issued_at.ToDatetime(tzinfo=UTC)),
        "expires_at": format_time(verdict.expires_at.ToDatetime(tzinfo=UTC)),
        "key_ids": key_ids,
        "explanation": None
        if verified.explanation is None
        else MessageToDict(verified.explanation, preserving_proto_field_name=True),
    }


def coverage_of(coverage: common_pb2.Coverage) -> dict[str, Any]:
    """A verdict's coverage as data: who was asked, who answered, who is missing and why."""
    missing = [
        {
            "agency": agency.member_id,
            "state": _state_name(agency.state),
            "reason": agency.reason,
        }
        for agency in coverage.agencies
        if agency.state != common_pb2.COVERAGE_STATE_ANSWERED
    ]
    return {
        "asked": coverage.expected,
        "answered": coverage.answered,
        "answered_by": [
            agency.member_id
            for agency in coverage.agencies
            if agency.state == common_pb2.COVERAGE_STATE_ANSWERED
        ],
        "missing": missing,
    }


def _state_name(state: int) -> str:
    try:
        name = common_pb2.CoverageState.Name(common_pb2.CoverageState.ValueType(state))
        return name.removeprefix("COVERAGE_STATE_").lower()
    except ValueError:
        return f"unknown state {state}"


def _coverage_text(coverage: dict[str, Any]) -> str:
    text = f"{coverage['answered']} of {coverage['asked']} agencies answered"
    for agency in coverage["missing"]:
        reason = f" ({agency['reason']})" if agency["reason"] else ""
        text += f"; {agency['agency']}: {agency['state'].replace('_', ' ')}{reason}"
    return text


def _print_summary(summary: dict[str, Any]) -> None:
    subject = summary["subject"]
    lines = [("subject", f"{subject['normalised']} ({subject['type']})")]
    lines.append(("verdict", summary["verdict_id"]))
    if summary["status"] is not None:
        status = summary["status"]
        if summary["categories"]:
            status += f" ({', '.join(summary['categories'])})"
        if summary["disputed"]:
            status += " [disputed by the subject]"
        lines.append(("status", status))
    if summary["score"] is not None:
        score = f"{summary['score']} (band {summary['band']})"
        if summary["provisional"]:
            score += " provisional"
        lines.append(("score", score))
        lines.append(("reasons", ", ".join(summary["reason_codes"]) or "none"))
    lines.append(("coverage", _coverage_text(summary["coverage"])))
    if summary["grant_id"]:
        lines.append(("grant", summary["grant_id"]))
    lines.append(("expires", summary["expires_at"]))
    for label, value in lines:
        print(f"{label:<9} {value}")
    print(f"signature verified against the registry key {', '.join(summary['key_ids'])}")
