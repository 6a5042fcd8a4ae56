"""``credence verdict check`` and ``explain``: verify a saved verdict (and its explanation) offline.

    credence verdict check FILE [--manifest M] [--refresh] [--requester MEMBER]
                                [--log-proof RECEIPT] [--json]
    credence verdict explain FILE EXPLANATION [--manifest M] [--refresh]
                                [--requester MEMBER] [--json]

Checks the registry's signature under a key of the federation manifest, the
expiry, and that the verdict was issued to the requester, then re-adds it:
every node-signed masked answer and recovery share it carries is checked
under its agency's keys, summed, and every verdict field checked against the
sum (:func:`credence.verdicts.readd_verdict`). Exit 0 yes, 1 no.
Offline: the manifest is one the user already holds (``--manifest FILE``, else
the one ``dev up`` wrote, named by the federation file's ``manifest``, else
``manifest.json`` beside it), verified against the pinned root keys. Only
``--refresh`` goes to the network: it fetches the current manifest over TLS,
verifies it and saves it where the held one is read from. ``--log-proof``
checks a receipt (a C2SP tlog-proof) beside it: that the verdict's lookup, as
its log promise names it, is in the log under the manifest's witness quorum.

``explain`` checks a saved explanation (``verify --explanation-out``) against
the verdict file: the verdict as ``check`` verifies it, the explanation's
registry signature, and every figure against the verdict and the scorecard
(:func:`credence.explanations.verify_explanation`); then prints it in words.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from credence.cli.command import command, subcommands
from credence.cli.federation import Federation, add_federation_option
from credence.cli.options import add_role_option, read_text
from credence.client.receipts import check_verdict_receipt
from credence.encoding import format_time
from credence.envelope import Envelope
from credence.errors import Expired, InvalidInput, VerificationError
from credence.explanations import describe, verify_explanation
from credence.manifest import TrustedManifest, verify_manifest
from credence.v1.registry_pb2 import Verdict
from credence.verdicts import read_verdict_file, readd_verdict, verify_verdict_file

EXAMPLES = """examples:
  credence verdict check verdict.json
  credence verdict check verdict.json --as authority --json
  credence verdict check verdict.json --manifest ./manifest.json
  credence verdict check verdict.json --refresh
  credence verdict check verdict.json --log-proof receipts/q-1f3a.tlog-proof
  credence verdict explain verdict.json explanation.json

Checks the registry's signature under a key of the federation manifest, the
expiry, and that the verdict was issued to you, then re-adds the node-signed
masked answers it carries and checks every field against their sum. Exit 0
yes, 1 no. It runs
offline against the manifest you hold (--manifest FILE, else the one `dev up`
wrote), verified against the pinned root keys; --refresh fetches the current
one over TLS first and saves it.
"""


def register(parser: argparse.ArgumentParser) -> None:
    """Add ``verdict``'s sub-commands to its parser."""
    commands = subcommands(parser, EXAMPLES)
    check = command(
        commands, "check", "verify a saved verdict file: yes or no, and why",
        epilog=EXAMPLES, handler=_check,
    )  # fmt: skip
    _verdict_options(check)
    check.add_argument(
        "--log-proof", type=Path, metavar="FILE",
        help="a receipt (tlog-proof, from `me lookups --proofs`): also check, offline, that the "
        "verdict's lookup is in the log as the manifest's witness quorum saw it",
    )  # fmt: skip
    check.add_argument("--json", action="store_true", help="machine-readable output")
    explain = command(
        commands, "explain", "check a saved explanation against its verdict, and read it",
        epilog=EXAMPLES, handler=_explain,
    )  # fmt: skip
    _verdict_options(explain)
    explain.add_argument(
        "explanation", type=Path, metavar="EXPLANATION",
        help="a file saved by verify --explanation-out",
    )  # fmt: skip
    explain.add_argument("--json", action="store_true", help="machine-readable output")


def _verdict_options(sub: argparse.ArgumentParser) -> None:
    """The options of a command checking a verdict file against a manifest."""
    add_federation_option(sub)
    add_role_option(sub)
    sub.add_argument("file", type=Path, metavar="FILE", help="a file saved by verify --out")
    sub.add_argument(
        "--requester", metavar="MEMBER",
        help="the member the verdict must be issued to (default: the --as member)",
    )  # fmt: skip
    sub.add_argument(
        "--manifest", type=Path, metavar="FILE",
        help="the signed manifest you hold, as served by /manifest (default: the federation's)",
    )  # fmt: skip
    sub.add_argument(
        "--refresh", action="store_true",
        help="fetch the current manifest over TLS, verify it and save it first (online)",
    )  # fmt: skip


def held_manifest_path(federation: Federation, given: Path | None) -> Path:
    """Where the held manifest is: ``given``, the federation's ``manifest``, or beside it."""
    if given is not None:
        return given
    named = federation.document.get("manifest")
    if isinstance(named, str) and named:
        return Path(named)
    return federation.path.parent / "manifest.json"


def _held_manifest(federation: Federation, path: Path, now: datetime) -> TrustedManifest:
    if not path.is_file():
        raise InvalidInput(
            f"no manifest held at {path}: pass --manifest FILE, or fetch the current one "
            "with --refresh"
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read the manifest {path}: {exc.strerror}") from exc
    # As served by /manifest (DSSE JSON), or the serialized envelope `dev up` saves.
    envelope = Envelope.from_json(data) if data.lstrip()[:1] == b"{" else Envelope.from_bytes(data)
    try:
        return verify_manifest(envelope, trusted_root=federation.root_keys(), threshold=1, now=now)
    except Expired as exc:
        raise Expired(
            f"the manifest held at {path} has expired ({exc}); fetch the current one with --refresh"
        ) from exc


def _manifest(federation: Federation, args: argparse.Namespace, now: datetime) -> TrustedManifest:
    path = held_manifest_path(federation, args.manifest)
    if not args.refresh:
        return _held_manifest(federation, path, now)
    manifest = federation.manifest(now)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(manifest.envelope.to_json())
    print(f"fetched manifest version {manifest.version}, saved to {path}", file=sys.stderr)
    return manifest


def _inputs(args: argparse.Namespace) -> tuple[str, str, datetime, TrustedManifest]:
    """The requester the verdict must name, the verdict file's text, now, the manifest held."""
    federation = Federation(args.federation)
    requester = args.requester or federation.member(args.role)["member_id"]
    text = read_text(args.file, "verdict file")
    now = datetime.now(UTC)
    return requester, text, now, _manifest(federation, args, now)


def _verified(
    text: str, manifest: TrustedManifest, now: datetime, requester: str
) -> tuple[Verdict, dict[str, Any]]:
    """The verdict file checked under ``manifest`` (:func:`credence.verdicts.verify_verdict_file`).

    Raises:
        VerificationError: as :func:`credence.verdicts.verify_verdict_file`.
        InvalidInput: as :func:`credence.verdicts.verify_verdict_file`.
    """
    return verify_verdict_file(
        text,
        registry_keys=manifest.registry_keys,
        now=now,
        requester=requester,
        issuer=manifest.registry.member_id,
    )


def _check(args: argparse.Namespace) -> int:
    requester, text, now, manifest = _inputs(args)
    try:
        verdict, claims = _verified(text, manifest, now, requester)
        readd_verdict(verdict, manifest)
        logged = _logged(args, verdict, manifest, now)
    except (VerificationError, InvalidInput) as exc:
        return _refused(args, exc)
    envelope, _ = read_verdict_file(text)
    key_ids = [s.keyid for s in envelope.signatures if s.keyid in manifest.registry_keys]
    expires = format_time(verdict.expires_at.ToDatetime(tzinfo=UTC))
    if args.json:
        print(json.dumps({
            "valid": True, "verdict_id": verdict.verdict_id, "requester": requester,
            "expires_at": expires, "key_ids": key_ids, "manifest_version": manifest.version,
            "claims": claims, **({"log_proof": logged} if logged else {}),
            "re_added": {"answers": len(verdict.answers), "recoveries": len(verdict.recoveries)},
        }))  # fmt: skip
        return 0
    print(
        f"yes: verdict {verdict.verdict_id} is signed by the registry key {', '.join(key_ids)} "
        f"(manifest version {manifest.version}), issued to {requester}, valid until {expires}"
    )
    print(
        f"re-added: {len(verdict.answers)} signed masked answers and "
        f"{len(verdict.recoveries)} recovery shares give every field of the verdict"
    )
    if logged:
        print(
            f"logged: entry {logged['index']} of the log's checkpoint of {logged['tree_size']} "
            f"entries, cosigned by {', '.join(logged['cosigners']) or 'no witness'}"
        )
    return 0


def _refused(args: argparse.Namespace, exc: Exception) -> int:
    """Say no, and why; exit status 1."""
    reason = " ".join(str(exc).split())
    if args.json:
        print(json.dumps({"valid": False, "reason": reason, "error": type(exc).__name__}))
    else:
        print(f"no: {reason}")
    return 1


def _explain(args: argparse.Namespace) -> int:
    signed = read_text(args.explanation, "explanation file")
    requester, text, now, manifest = _inputs(args)
    try:
        verdict, _ = _verified(text, manifest, now, requester)
        envelope, _ = read_verdict_file(text)
        explanation = verify_explanation(Envelope.from_json(signed), verdict, envelope, manifest)
    except (VerificationError, InvalidInput) as exc:
        return _refused(args, exc)
    lines = describe(explanation)
    if args.json:
        print(json.dumps({"valid": True, "verdict_id": verdict.verdict_id, "words": lines}))
        return 0
    print(
        f"yes: the explanation of verdict {verdict.verdict_id} is signed by the registry and "
        f"every figure follows from the verdict and scorecard {explanation.scorecard_version}"
    )
    for line in lines:
        print(f"  {line}")
    return 0


def _logged(
    args: argparse.Namespace, verdict: Verdict, manifest: TrustedManifest, now: datetime
) -> dict[str, Any] | None:
    """With ``--log-proof``: the receipt checked against the verdict's log promise.

    Raises:
        InvalidInput: the receipt cannot be read or is malformed.
        VerificationError: it does not prove the verdict's entry in the witnessed log.
    """
    if args.log_proof is None:
        return None
    try:
        receipt = args.log_proof.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read the receipt {args.log_proof}: {exc.strerror}") from exc
    cosigned, index = check_verdict_receipt(verdict, receipt, manifest, now=now)
    return {
        "index": index,
        "tree_size": cosigned.checkpoint.size,
        "cosigners": list(cosigned.cosigners),
    }
