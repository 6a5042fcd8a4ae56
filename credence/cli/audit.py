"""``credence audit log``: check the registry's transparency log from outside.

    credence audit log  [--federation F] --since-head FILE
    credence audit log  --registry-public ADDR --ca CA --root-keys R --http URL
                        [--http-ca CA] --since-head FILE

``audit log`` verifies the log's current checkpoint (a C2SP signed note) and
that it extends the checkpoint saved in FILE (the log only grows, nothing
rewritten), then saves the new one there. The log's origin and key come from
the manifest, fetched over HTTPS from the registry's HTTP side (its
certificate checked against the federation CA, or ``--http-ca`` for an
operator's certificate) and verified under the root keys.
Without the four endpoint options the federation file is found as every
command finds it. A node checks that every query it answered is in the
log with ``credence node audit``.
Exit code 0 when everything verifies, 1 when anything does not.
"""

from __future__ import annotations

import argparse
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
from credence.errors import InvalidInput
from credence.keys import KeySet, write_private_file
from credence.transparency.log_audit import (
    LogIdentity,
    check_consistency,
    log_client,
    open_tree_head,
)

EXAMPLES = """examples:
  credence audit log --federation ./demo/federation.json --since-head ./head.bin
  credence node audit --dir ./court
"""


def register(parser: argparse.ArgumentParser) -> None:
    """Add the ``audit`` sub-commands to ``parser``."""
    commands = subcommands(parser, EXAMPLES)
    log = command(
        commands,
        "log",
        "verify the log's signed head and that it extends a saved one",
        "credence audit log --federation F --since-head head.bin",
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
        "--since-head", type=Path, required=True, help="saved head to check against, then update"
    )


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
    manifest = fetch_manifest(http_url, ca_pem=http_ca, root_keys=root_keys, now=datetime.now(UTC))
    log = LogIdentity.from_manifest(manifest)
    with log_client(address, grpc.ssl_channel_credentials(root_certificates=ca_pem)) as client:
        head = client.tree_head(log)
        if args.since_head.exists():
            old = open_tree_head(args.since_head.read_bytes(), log)
            path = (
                client.consistency(old.tree_size, head.tree_size)
                if (head.tree_size >= old.tree_size)
                else []
            )
            check_consistency(old, head, path)
            print(f"log consistent: {old.tree_size} -> {head.tree_size} entries")
        else:
            print(f"no saved head yet: trusting size {head.tree_size} from now on")
    write_private_file(args.since_head, head.to_bytes())
    print(f"head saved to {args.since_head} (root {head.root_hash.hex()[:16]}...)")
    return 0
