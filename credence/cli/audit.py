"""``credence audit log``: check the registry's transparency log from outside.

    credence audit log  [--federation F] --state FILE
    credence audit log  --registry-public ADDR --ca CA --root-keys R --http URL
                        [--http-ca CA] --state FILE

``audit log`` takes the log's latest cosigned checkpoint (a C2SP signed note)
and checks, from the log's tiles on the registry's HTTP side
(:mod:`credence.transparency.checkpoint_audit`):

1. the log's signature and the manifest's quorum of witness cosignatures;
2. that the tiles hash to the checkpoint's root;
3. that it extends the checkpoint saved in the state FILE (the log only
   grows, nothing rewritten, no other view than the one shown before), by a
   consistency proof computed from those tiles;

then saves it in FILE. The log's origin, key and witnesses come from the
manifest, fetched over HTTPS (its certificate checked against the federation
CA, or ``--http-ca`` for an operator's certificate) and verified under the
root keys. Without the four endpoint options the federation file is found as
every command finds it. A node checks that every query it answered is in the
log with ``credence node audit``.
"""

from __future__ import annotations

import argparse
import base64
from datetime import UTC, datetime
from pathlib import Path

import grpc

from credence.cli.command import command, subcommands
from credence.cli.federation import (
    Federation,
    add_federation_option,
    read_root_keys,
)
from credence.cli.options import read_text
from credence.client.pinned import fetch_manifest
from credence.errors import InvalidInput, Unavailable, VerificationError
from credence.keys import KeySet, write_private_file
from credence.transparency.checkpoint_audit import LogAudit, audit_checkpoint
from credence.transparency.log_audit import log_client
from credence.transparency.tile_reader import TileReader
from credence.transparency.witness_policy import WitnessPolicy, policy_from_manifest

#: Exit code when the log fails a check (evidence against the registry); 1 is
#: "could not check" (unreachable, bad options), as for every command.
EXIT_LOG_FAILED = 3

EXAMPLES = """examples:
  credence audit log --federation ./demo/federation.json --state ./log.state
  credence node audit --dir ./court

exit codes:
  0  the checkpoint is witnessed by the manifest's quorum, its tiles hash to its
     root, and it extends the checkpoint saved in the state file (saved anew)
  3  the log failed a check: evidence against the registry (no quorum, tiles
     that do not hash to the root, a log rewritten or forked since the saved
     checkpoint); the state file is left as it was
  1  nothing could be checked (registry unreachable, bad options or files)
"""


def register(parser: argparse.ArgumentParser) -> None:
    """Add the ``audit`` sub-commands to ``parser``."""
    commands = subcommands(parser, EXAMPLES)
    log = command(
        commands,
        "log",
        "verify the log's witnessed checkpoint from its tiles, and that it extends a saved one",
        epilog=EXAMPLES,
        description=(
            "Take the registry's latest checkpoint cosigned by its witnesses and check it\n"
            "from the log's tiles on the HTTP side: the log's signature and the manifest's\n"
            "quorum of witness cosignatures; that the tiles hash to the checkpoint's root;\n"
            "and that the log extends the checkpoint saved in the state file (an RFC 9162\n"
            "consistency proof computed from the tiles). Then save it there. The manifest\n"
            "(log key, witnesses, quorum) is fetched over HTTPS and verified under the\n"
            "pinned root keys."
        ),
        handler=_audit_log,
    )
    add_federation_option(log)
    log.add_argument("--registry-public", help="the registry's public host:port")
    log.add_argument("--ca", type=Path, help="the federation CA (PEM)")
    log.add_argument("--root-keys", type=Path, help="the pinned root keys (JWK Set)")
    log.add_argument("--http", help="the registry's HTTP side, e.g. https://127.0.0.1:7780")
    log.add_argument(
        "--http-ca",
        type=Path,
        help="the CA of the HTTP side's certificate, if the operator's (default: --ca)",
    )
    log.add_argument(
        "--state", "--since-head", dest="state", type=Path, required=True, metavar="FILE",
        help="the checkpoint saved last time: checked against, then replaced (created if absent)",
    )  # fmt: skip


def _endpoints(args: argparse.Namespace) -> tuple[str, bytes, KeySet, str]:
    explicit = (args.registry_public, args.ca, args.root_keys, args.http)
    if args.federation is not None or not any(explicit):
        federation = Federation(args.federation)
        return (
            federation.registry["public_address"],
            federation.ca_cert(),
            federation.root_keys(),
            federation.registry["http_url"],
        )
    if not all(explicit):
        raise InvalidInput(
            "pass --federation FILE, or all of --registry-public, --ca, --root-keys and --http"
        )
    return (args.registry_public, args.ca.read_bytes(), read_root_keys(args.root_keys), args.http)


def _audit_log(args: argparse.Namespace) -> int:
    address, ca_pem, root_keys, http_url = _endpoints(args)
    http_ca = read_text(args.http_ca, "HTTP side CA").encode() if args.http_ca else ca_pem
    now = datetime.now(UTC)
    manifest = fetch_manifest(http_url, ca_pem=http_ca, root_keys=root_keys, now=now)
    policy = policy_from_manifest(manifest)
    with log_client(address, grpc.ssl_channel_credentials(root_certificates=ca_pem)) as client:
        note = client.cosigned_checkpoint()
    if not note:
        raise Unavailable(
            f"the registry at {address} has published no cosigned checkpoint yet: its "
            "witnesses have not reached the manifest's quorum; try again later"
        )
    saved = _read_state(args.state)
    with TileReader(http_url, http_ca) as tiles:
        try:
            audit = audit_checkpoint(note, policy, tiles.tree, saved=saved, now=now)
        except VerificationError as exc:
            print(f"FAILED: {' '.join(str(exc).split())}")
            print(f"the state file {args.state} is left as it was")
            return EXIT_LOG_FAILED
    _report(audit, policy)
    write_private_file(args.state, note)
    print(f"saved to {args.state}")
    return 0


def _read_state(path: Path) -> bytes | None:
    if not path.exists():
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read the state file {path}: {exc.strerror}") from exc


def _report(audit: LogAudit, policy: WitnessPolicy) -> None:
    checkpoint = audit.cosigned.checkpoint
    root = base64.b64encode(checkpoint.root_hash).decode("ascii")
    cosigners = ", ".join(name.rsplit("/", 1)[-1] for name in audit.cosigned.cosigners)
    print(f"checkpoint: {checkpoint.size} entries, root {root}")
    print(
        f"witnessed: cosigned by {len(audit.cosigned.cosigners)} of "
        f"{len(policy.witnesses)} witnesses ({cosigners or 'none'}); the manifest requires "
        f"{policy.threshold}"
    )
    print("tiles: the right edge of every level hashes to the root")
    if audit.previous is None:
        print("no saved checkpoint yet: this one is trusted from now on")
    else:
        print(
            f"consistent: extends the saved checkpoint of {audit.previous.size} entries "
            f"(a proof of {audit.proof_length} hashes, computed from the tiles)"
        )
