r"""A requester's commands: ``verify``, ``screen``, ``verdict check`` and ``consent``.

    credence verify ID [--out FILE] [--json]
    credence verify --person ID --grant CONSENT.jwt [--purpose P] [--kinds K,...]
    credence screen IN.csv --out OUT.csv|OUT.jsonl [--resume]
    credence verdict check FILE [--json]
    credence consent request --requester M --purpose P --kinds K --days N --uses N \\
        --key SUBJECT.key --binding BINDING.jwt --out REQUEST.jwt
    credence consent issue REQUEST.jwt --binding BINDING.jwt --out CONSENT.jwt

Each is a top-level command (see :data:`COMMANDS`). The federation file
(``--federation``, else ``$CREDENCE_FEDERATION``, else ``./federation.json``)
says where the registry is, which credentials the requester uses (``--as``, a
role entry of the file, default ``company``) and where the pseudonymisation
key is that maps identifiers to subject references. Exit codes: 0 success,
1 a refusal or failed check, 2 bad usage, 130 an interrupted screen.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

from credence import jws
from credence.cli.me import default_federation
from credence.client.requester import MemberCredentials, Requester, VerifiedVerdict
from credence.client.screening import ScreenProgress, screen_file
from credence.dev.federation import load_federation
from credence.encoding import format_time
from credence.envelope import Envelope
from credence.errors import (
    InvalidIdentifier,
    InvalidInput,
    Unavailable,
    VerificationError,
)
from credence.grants import tokens
from credence.keys import KeySet, load_signing_key
from credence.manifest import verify_manifest
from credence.names import KIND_NAMES, PURPOSE_NAMES
from credence.queries import public_register
from credence.subjects import PseudonymisationKey, SubjectType, normalise, ref_for
from credence.v1 import agency_pb2
from credence.verdicts import read_verdict_file, verify_verdict_file

ROLES = ("company", "authority", "identity_verifier")
EXIT_INTERRUPTED = 130


def register(parser: argparse.ArgumentParser) -> None:
    """Add the command named by ``parser``'s prog (``credence verify`` -> verify).

    :mod:`credence.cli` registers this one module under each of
    :data:`COMMANDS`' names, and calls this with the sub-parser of each.

    Raises:
        ValueError: the parser's name is not one of :data:`COMMANDS`.
    """
    name = parser.prog.split()[-1]
    if name not in COMMANDS:
        raise ValueError(f"requester_cli has no command {name!r}; known: {sorted(COMMANDS)}")
    COMMANDS[name][0](parser)


# --- argument types ----------------------------------------------------------


def _identifier(text: str) -> str:
    try:
        normalise(text)
    except InvalidIdentifier as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _kinds(text: str) -> tuple[str, ...]:
    kinds = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = sorted(set(kinds) - KIND_NAMES)
    if not kinds or unknown:
        raise argparse.ArgumentTypeError(
            f"{text!r}: name verdict kinds separated by commas, "
            f"from {', '.join(sorted(KIND_NAMES))}"
        )
    return kinds


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def _common(parser: argparse.ArgumentParser, *, role: bool = True) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--federation",
        type=Path,
        default=None,
        help="federation.json (default $CREDENCE_FEDERATION, then ./federation.json)",
    )
    if role:
        parser.add_argument(
            "--as",
            dest="role",
            choices=ROLES,
            default="company",
            help="whose credentials, from the federation file (default: company)",
        )


def _purpose(parser: argparse.ArgumentParser, default: str | None, help_text: str) -> None:
    parser.add_argument(
        "--purpose", choices=sorted(PURPOSE_NAMES), default=default, metavar="PURPOSE",
        help=f"{help_text} (one of {', '.join(sorted(PURPOSE_NAMES))})",
    )  # fmt: skip


# --- the federation ------------------------------------------------------------


class _Federation:
    """What a command needs from federation.json, read lazily."""

    def __init__(self, path: Path | None) -> None:
        self.path = path or default_federation()
        self.document = load_federation(self.path)
        self.registry: dict[str, Any] = self.document["registry"]

    def member(self, role: str) -> dict[str, Any]:
        entry = self.document.get(role)
        if not isinstance(entry, dict) or "member_id" not in entry:
            raise InvalidInput(f"{self.path} has no {role!r} entry; pick another --as")
        return entry

    def root_keys(self) -> KeySet:
        path = Path(self.registry["root_keys"])
        try:
            return KeySet.from_jwks(json.loads(path.read_text()))
        except OSError as exc:
            raise InvalidInput(f"cannot read the root keys {path}: {exc.strerror}") from exc
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"the root keys {path} are not JSON: {exc}") from exc

    def requester(self, role: str) -> Requester:
        files = self.member(role)
        credentials = MemberCredentials.from_files(
            files["member_id"],
            key=Path(files["key"]),
            cert=Path(files["cert"]),
            ca=Path(self.registry["ca_cert"]),
        )
        return Requester(self.registry["address"], credentials, root_keys=self.root_keys())

    def pseudonymisation(self) -> PseudonymisationKey:
        path = self.document.get("pseudonymisation_key")
        if not path:
            raise InvalidInput(f"{self.path} names no pseudonymisation_key")
        try:
            return PseudonymisationKey.from_bytes(Path(path).read_bytes())
        except OSError as exc:
            raise InvalidInput(
                f"cannot read the pseudonymisation key {path}: {exc.strerror}"
            ) from exc


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise InvalidInput(f"cannot read the {what} {path}: {exc.strerror}") from exc


def _grant_from_file(path: Path) -> agency_pb2.Grant:
    token = _read_text(path, "grant file")
    typ = jws.peek_header(token).get("typ")
    if typ == tokens.CONSENT_TYP:
        return agency_pb2.Grant(consent_token=token)
    if typ == tokens.MANDATE_TYP:
        return agency_pb2.Grant(mandate_token=token)
    raise InvalidInput(
        f"{path} is a {typ!r} token; --grant takes a consent ({tokens.CONSENT_TYP}) "
        f"or a mandate ({tokens.MANDATE_TYP})"
    )


# --- verify ------------------------------------------------------------------------

_VERIFY_EXAMPLES = """examples:
  credence verify cn-uscc:91350100M000100Y43
  credence verify lei:5493001KJTIIGC8Y1R12 --json --out verdict.json
  credence verify --person cn-rid:11010519491231002X --grant consent.jwt \\
      --purpose credit_assessment --kinds blacklist,credit
"""


def _register_verify(parser: argparse.ArgumentParser) -> None:
    parser.epilog = _VERIFY_EXAMPLES
    _common(parser)
    parser.add_argument(
        "identifier", nargs="?", type=_identifier, metavar="ID",
        help="an organisation identifier, e.g. cn-uscc:..., lei:..., reg:GB:...",
    )  # fmt: skip
    parser.add_argument("--person", type=_identifier, metavar="ID", help="a person's identifier")
    parser.add_argument(
        "--grant", type=Path, metavar="FILE",
        help="the consent (or mandate) token file; required for a person",
    )  # fmt: skip
    _purpose(parser, None, "why you ask (default counterparty_verification; credit_assessment "
             "for a person)")  # fmt: skip
    parser.add_argument(
        "--kinds", type=_kinds, default=None, metavar="K,...",
        help="verdict kinds (default blacklist; blacklist,credit for a person)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, metavar="FILE", help="save the signed verdict here")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(handler=_verify, parser=parser)


def _verify(args: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = args.parser
    if (args.identifier is None) == (args.person is None):
        parser.error("name one subject: an organisation ID, or --person ID")
    identifier = args.person or args.identifier
    subject_type = normalise(identifier).subject_type
    person = subject_type == SubjectType.PERSON
    if args.person is not None and not person:
        parser.error("--person takes a person's identifier (cn-rid:..., nin:...)")
    purpose = args.purpose or ("credit_assessment" if person else "counterparty_verification")
    kinds = args.kinds or (("blacklist", "credit") if person else ("blacklist",))
    if args.grant is not None:
        grant = _grant_from_file(args.grant)
    elif person:
        raise InvalidInput(
            "a person is looked up only with their consent or a mandate: pass --grant FILE "
            "(the public-register basis covers organisations)"
        )
    else:
        grant = public_register()
    federation = _Federation(args.federation)
    subject = ref_for(federation.pseudonymisation(), identifier)
    with federation.requester(args.role) as requester:
        verified = requester.request_verdict(subject, kinds=kinds, purpose=purpose, grant=grant)
        registry_keys = requester.manifest().registry_keys
    key_ids = [sig.keyid for sig in verified.envelope.signatures if sig.keyid in registry_keys]
    if args.out is not None:
        args.out.write_text(verified.to_file(), encoding="utf-8")
    summary = _summary(verified, key_ids)
    if args.json:
        print(json.dumps({**summary, "out": None if args.out is None else str(args.out)}))
        return 0
    _print_summary(summary)
    if args.out is not None:
        print(f"saved to {args.out} (check it with `credence verdict check {args.out}`)")
    return 0


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
        "coverage": verified.coverage,
        "grant_id": verdict.grant_id,
        "issued_at": format_time(verdict.issued_at.ToDatetime(tzinfo=UTC)),
        "expires_at": format_time(verdict.expires_at.ToDatetime(tzinfo=UTC)),
        "key_ids": key_ids,
    }


def _print_summary(summary: dict[str, Any]) -> None:
    lines = [("verdict", summary["verdict_id"])]
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
    lines.append(("coverage", summary["coverage"]))
    if summary["grant_id"]:
        lines.append(("grant", summary["grant_id"]))
    lines.append(("expires", summary["expires_at"]))
    for label, value in lines:
        print(f"{label:<9} {value}")
    print(f"signature verified against the registry key {', '.join(summary['key_ids'])}")


# --- screen ----------------------------------------------------------------------

_SCREEN_EXAMPLES = """examples:
  credence screen suppliers.csv --out results.csv
  credence screen suppliers.csv --out results.jsonl --resume

The input has a header naming `identifier` and optionally `row_key` (default:
the line number). Bad rows are written with the reason; Ctrl-C stops sending,
saves the results of what was sent, and `--resume` continues where it stopped.
"""


def _register_screen(parser: argparse.ArgumentParser) -> None:
    parser.epilog = _SCREEN_EXAMPLES
    _common(parser)
    parser.add_argument("input", type=Path, metavar="FILE.csv", help="identifiers to screen")
    parser.add_argument(
        "--out", type=Path, required=True, metavar="FILE",
        help="results file: .jsonl for JSON Lines, otherwise CSV",
    )  # fmt: skip
    parser.add_argument(
        "--resume", action="store_true", help="skip rows already in --out and append the rest"
    )
    parser.add_argument(
        "--kinds", type=_kinds, default=("blacklist",), metavar="K,...",
        help="verdict kinds (default blacklist)",
    )  # fmt: skip
    _purpose(parser, "counterparty_verification", "why you screen")
    parser.add_argument(
        "--message-size", type=_positive, default=500, metavar="N",
        help="rows per request message (default 500)",
    )  # fmt: skip
    parser.set_defaults(handler=_screen)


class _ProgressBar:
    """Rows done, rate and ETA on one terminal line."""

    def __init__(self) -> None:
        self.shown = False

    def __call__(self, progress: ScreenProgress) -> None:
        width = 30
        fraction = progress.done / progress.total if progress.total else 1.0
        bar = "#" * int(width * fraction)
        eta = "--" if progress.eta is None else f"{progress.eta:.0f}s"
        sys.stderr.write(
            f"\r[{bar:<{width}}] {progress.done}/{progress.total} rows  "
            f"{progress.rate:,.0f}/s  ETA {eta} "
        )
        sys.stderr.flush()
        self.shown = True

    def end(self) -> None:
        if self.shown:
            sys.stderr.write("\n")


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT/SIGTERM set ``stop`` (a second SIGINT aborts at once)."""

    def handle(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _screen(args: argparse.Namespace) -> int:
    federation = _Federation(args.federation)
    pseudonymisation = federation.pseudonymisation()
    stop = threading.Event()
    bar = _ProgressBar() if sys.stderr.isatty() else None
    try:
        with federation.requester(args.role) as requester, _stop_on_signals(stop):
            summary = screen_file(
                requester,
                pseudonymisation,
                args.input,
                args.out,
                kinds=args.kinds,
                purpose=args.purpose,
                resume=args.resume,
                message_size=args.message_size,
                stop=stop,
                progress=bar,
            )
    finally:
        if bar is not None:
            bar.end()
    print(
        f"{summary.written} rows written to {args.out}: {summary.verdicts} verdicts, "
        f"{summary.refused} refused, {summary.invalid} invalid"
        + (f"; {summary.skipped} already there" if summary.skipped else "")
    )
    if summary.interrupted:
        print("interrupted: run the same command with --resume to finish", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


# --- verdict check ------------------------------------------------------------------

_CHECK_EXAMPLES = """examples:
  credence verdict check verdict.json
  credence verdict check verdict.json --as authority --json

Checks the registry's signature under a key of the federation manifest (fetched
from the registry's HTTP side and verified against the pinned root keys), the
expiry, and that the verdict was issued to you. Exit 0 yes, 1 no.
"""


def _register_verdict(parser: argparse.ArgumentParser) -> None:
    parser.epilog = _CHECK_EXAMPLES
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    check = commands.add_parser(
        "check",
        help="verify a saved verdict file: yes or no, and why",
        description="verify a saved verdict file: yes or no, and why",
        epilog=_CHECK_EXAMPLES,
    )
    _common(check)
    check.add_argument("file", type=Path, metavar="FILE", help="a file saved by verify --out")
    check.add_argument(
        "--requester", metavar="MEMBER",
        help="the member the verdict must be issued to (default: the --as member)",
    )  # fmt: skip
    check.add_argument("--json", action="store_true", help="machine-readable output")
    check.set_defaults(handler=_check)


def _fetch_manifest(http_url: str) -> Envelope:
    if not http_url.startswith(("http://", "https://")):
        raise InvalidInput(f"the federation's registry http_url must be http(s), got {http_url!r}")
    try:
        with urllib.request.urlopen(f"{http_url}/manifest", timeout=10) as response:  # noqa: S310 - scheme checked
            return Envelope.from_json(response.read())
    except OSError as exc:
        raise Unavailable(f"cannot fetch the manifest from {http_url}/manifest: {exc}") from exc


def _check(args: argparse.Namespace) -> int:
    federation = _Federation(args.federation)
    requester = args.requester or federation.member(args.role)["member_id"]
    text = _read_text(args.file, "verdict file")
    now = datetime.now(UTC)
    manifest = verify_manifest(
        _fetch_manifest(federation.registry["http_url"]),
        trusted_root=federation.root_keys(),
        threshold=1,
        now=now,
    )
    try:
        verdict, claims = verify_verdict_file(
            text,
            registry_keys=manifest.registry_keys,
            now=now,
            requester=requester,
            issuer=manifest.registry.member_id,
        )
    except (VerificationError, InvalidInput) as exc:
        reason = " ".join(str(exc).split())
        if args.json:
            print(json.dumps({"valid": False, "reason": reason, "error": type(exc).__name__}))
        else:
            print(f"no: {reason}")
        return 1
    envelope, _ = read_verdict_file(text)
    key_ids = [s.keyid for s in envelope.signatures if s.keyid in manifest.registry_keys]
    expires = format_time(verdict.expires_at.ToDatetime(tzinfo=UTC))
    if args.json:
        print(json.dumps({
            "valid": True, "verdict_id": verdict.verdict_id, "requester": requester,
            "expires_at": expires, "key_ids": key_ids, "manifest_version": manifest.version,
            "claims": claims,
        }))  # fmt: skip
        return 0
    print(
        f"yes: verdict {verdict.verdict_id} is signed by the registry key {', '.join(key_ids)} "
        f"(manifest version {manifest.version}), issued to {requester}, valid until {expires}"
    )
    return 0


# --- consent -----------------------------------------------------------------------

_CONSENT_EXAMPLES = """examples:
  # the subject, with their personal key and binding:
  credence consent request --requester demo-company --purpose credit_assessment \
      --kinds blacklist,credit --days 14 --uses 1 \
      --key me.key --binding me.binding.jwt --out request.jwt
  # the requester named in it has the registry countersign it:
  credence consent issue request.jwt --binding me.binding.jwt --out consent.jwt
  credence verify --person cn-rid:... --grant consent.jwt

`consent sign` is another name for `consent issue`.
"""


def _register_consent(parser: argparse.ArgumentParser) -> None:
    parser.epilog = _CONSENT_EXAMPLES
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    request = commands.add_parser(
        "request",
        help="(the subject) sign a consent request with your personal key",
        description="(the subject) sign a consent request with your personal key",
        epilog=_CONSENT_EXAMPLES,
    )
    _common(request, role=False)
    request.add_argument(
        "--person", type=_identifier, metavar="ID",
        help="your identifier: checked against the binding when the federation file "
        "names the pseudonymisation key (optional)",
    )  # fmt: skip
    request.add_argument("--requester", required=True, metavar="MEMBER", help="who may ask")
    _purpose(request, None, "what for")
    request.add_argument("--kinds", type=_kinds, required=True, metavar="K,...", help="scope")
    request.add_argument("--days", type=_positive, required=True, help="valid for N days")
    request.add_argument("--uses", type=_positive, required=True, help="at most N lookups")
    request.add_argument(
        "--data-life-days", type=_positive, default=7, metavar="N",
        help="how long the requester may keep a verdict (default 7 days)",
    )  # fmt: skip
    request.add_argument("--key", type=Path, required=True, help="your personal key")
    request.add_argument("--binding", type=Path, required=True, help="your key's binding (JWS)")
    request.add_argument("--out", type=Path, required=True, help="where to write the request")
    request.set_defaults(handler=_consent_request, parser=request)
    issue = commands.add_parser(
        "issue",
        aliases=["sign"],
        help="(the requester) have the registry countersign a consent request",
        description="(the requester) have the registry countersign a consent request; "
        "prints the grant id",
        epilog=_CONSENT_EXAMPLES,
    )
    _common(issue)
    issue.add_argument("request", type=Path, metavar="REQUEST.jwt", help="the signed request")
    issue.add_argument("--binding", type=Path, required=True, help="the subject's binding (JWS)")
    issue.add_argument("--out", type=Path, required=True, help="where to write the consent")
    issue.set_defaults(handler=_consent_issue)


def _binding_subject(path: Path) -> tuple[str, str]:
    binding = _read_text(path, "binding")
    claims = jws.parse_json_object(jws.parse_compact(binding).payload, "binding")
    subject = claims.get("sub")
    if not isinstance(subject, str):
        raise InvalidInput(f"{path} is not a binding (no 'sub' claim)")
    return binding, subject


def _consent_request(args: argparse.Namespace) -> int:
    if args.purpose is None:
        args.parser.error("--purpose is required")
    _, subject = _binding_subject(args.binding)
    if args.person is not None:
        if normalise(args.person).subject_type != SubjectType.PERSON:
            args.parser.error("--person takes a person's identifier (cn-rid:..., nin:...)")
        federation_path = args.federation or default_federation()
        if federation_path.exists():
            expected = ref_for(_Federation(federation_path).pseudonymisation(), args.person)
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
    request = _read_text(args.request, "consent request")
    binding, _ = _binding_subject(args.binding)
    federation = _Federation(args.federation)
    with federation.requester(args.role) as requester:
        token, grant_id = requester.issue_consent(request, binding)
    args.out.write_text(token + "\n", encoding="utf-8")
    print(f"consent issued: grant {grant_id}, written to {args.out}")
    return 0


#: Top-level command name -> (function adding its arguments, one-line help).
COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], str]] = {
    "verify": (
        _register_verify,
        "one subject's signed verdict (an organisation, or a person with a grant)",
    ),
    "screen": (_register_screen, "screen a CSV of organisations into a results file (resumable)"),
    "verdict": (_register_verdict, "check a saved verdict file offline"),
    "consent": (_register_consent, "consent: the subject requests it, the requester issues it"),
}
