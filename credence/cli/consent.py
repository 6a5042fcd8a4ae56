r"""``credence consent``: the subject requests a consent, the requester issues it.

    credence consent request --requester M --purpose P --kinds K --days N --uses N \
        --key SUBJECT.key --binding BINDING.jwt --out REQUEST.jwt
    credence consent issue REQUEST.jwt --binding BINDING.jwt --out CONSENT.jwt

The subject signs the request with their personal key; the requester it names
has the registry countersign it into a consent grant.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from pathlib import Path

from credence.cli.command import command, subcommands
from credence.cli.federation import Federation, add_federation_option, federation_path
from credence.cli.options import (
    add_purpose_option,
    add_role_option,
    identifier,
    kinds,
    positive,
    read_binding,
    read_text,
)
from credence.encoding import format_time
from credence.errors import InvalidInput
from credence.grants import tokens
from credence.keys import load_signing_key
from credence.subjects import SubjectType, normalise, ref_for

EXAMPLES = """examples:
  # the subject, with their personal key and binding:
  credence consent request --requester demo-company --purpose credit_assessment \\
      --kinds blacklist,credit --days 14 --uses 1 \\
      --key me.key --binding me.binding.jwt --out request.jwt
  # the requester named in it has the registry countersign it:
  credence consent issue request.jwt --binding me.binding.jwt --out consent.jwt
  credence verify --person cn-rid:... --grant consent.jwt

`consent sign` is another name for `consent issue`.
"""


def register(parser: argparse.ArgumentParser) -> None:
    """Add ``consent``'s sub-commands to its parser."""
    commands = subcommands(parser, EXAMPLES)
    request = command(
        commands, "request", "(the subject) sign a consent request with your personal key",
        epilog=EXAMPLES, handler=_consent_request,
    )  # fmt: skip
    add_federation_option(request)
    request.add_argument(
        "--person", type=identifier, metavar="ID",
        help="your identifier: checked against the binding when the federation file "
        "names the pseudonymisation key (optional)",
    )  # fmt: skip
    request.add_argument("--requester", required=True, metavar="MEMBER", help="who may ask")
    add_purpose_option(request, None, "what for")
    request.add_argument("--kinds", type=kinds, required=True, metavar="K,...", help="scope")
    request.add_argument("--days", type=positive, required=True, help="valid for N days")
    request.add_argument("--uses", type=positive, required=True, help="at most N lookups")
    request.add_argument(
        "--data-life-days", type=positive, default=7, metavar="N",
        help="how long the requester may keep a verdict (default 7 days)",
    )  # fmt: skip
    request.add_argument("--key", type=Path, required=True, help="your personal key")
    request.add_argument("--binding", type=Path, required=True, help="your key's binding (JWS)")
    request.add_argument("--out", type=Path, required=True, help="where to write the request")
    issue = command(
        commands, "issue", "(the requester) have the registry countersign a consent request",
        epilog=EXAMPLES, handler=_consent_issue, aliases=["sign"],
        description="(the requester) have the registry countersign a consent request; "
        "prints the grant id",
    )  # fmt: skip
    add_federation_option(issue)
    add_role_option(issue)
    issue.add_argument("request", type=Path, metavar="REQUEST.jwt", help="the signed request")
    issue.add_argument("--binding", type=Path, required=True, help="the subject's binding (JWS)")
    issue.add_argument("--out", type=Path, required=True, help="where to write the consent")


def _consent_request(args: argparse.Namespace) -> int:
    if args.purpose is None:
        args.parser.error("--purpose is required")
    _, subject = read_binding(args.binding)
    if args.person is not None:
        if normalise(args.person).subject_type != SubjectType.PERSON:
            args.parser.error("--person takes a person's identifier (cn-rid:..., nin:...)")
        path = federation_path(args.federation)
        if path.exists():
            expected = ref_for(Federation(path).pseudonymisation(), args.person)
            if expected.hex() != subject:
                raise InvalidInput(
                    f"{args.binding} binds another subject than --person names; "
                    "pass your own binding"
                )
    now = datetime.now(UTC)
    terms = tokens.ConsentTerms(
        subject_ref=subject,
        requester=args.requester,
        purpose=args.purpose,
        scope=args.kinds,
        # A minute back, so a registry clock slightly behind ours accepts it now.
        not_before=now - timedelta(minutes=1),
        expires_at=now + timedelta(days=args.days),
        max_uses=args.uses,
        data_life=timedelta(days=args.data_life_days),
    )
    token = tokens.sign_consent_request(terms, load_signing_key(args.key), now)
    args.out.write_text(token + "\n", encoding="utf-8")
    print(
        f"consent request for {args.requester} ({args.purpose}: {', '.join(terms.scope)}, "
        f"{args.uses} use(s), until {format_time(terms.expires_at)}) written to {args.out}"
    )
    return 0


def _consent_issue(args: argparse.Namespace) -> int:
    request = read_text(args.request, "consent request")
    binding, _ = read_binding(args.binding)
    federation = Federation(args.federation)
    with federation.requester(args.role) as requester:
        token, grant_id = requester.issue_consent(request, binding)
    args.out.write_text(token + "\n", encoding="utf-8")
    print(f"consent issued: grant {grant_id}, written to {args.out}")
    return 0
