"""The ``credence`` command: one entry point, one sub-command group per role.

``credence node ...`` runs an agency node (:mod:`agency_node.cli`). The
groups are imported only when used, so the shared library never depends on a
server package. Exit codes: 0 success, 1 a refusal or failed check, 2 bad usage.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

import grpc

from credence import __version__
from credence.client.errors import error_from_rpc
from credence.errors import CredenceError

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2

# group name -> (module that defines `register(subparsers)`, one-line help)
_GROUPS = {
    "node": ("agency_node.cli", "run and audit an agency node: init, import, serve, audit, ..."),
    "registry": ("central_registry.cli", "run the central registry and manage its members"),
    "audit": ("credence.cli.audit", "check the registry's transparency log from outside"),
    "me": ("credence.cli.me", "a subject: who looked me up, my grants, revoke, contest"),
    "verify": ("credence.cli.verify", "one subject's signed verdict (organisation, or person)"),
    "screen": ("credence.cli.screen", "screen a CSV of organisations (resumable)"),
    "verdict": ("credence.cli.verdict", "check a saved verdict file offline"),
    "consent": ("credence.cli.consent", "consent: the subject requests, the requester issues"),
    "dev": ("credence.cli.dev", "a whole federation on loopback: up, status, down"),
}


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser, with the sub-commands of the group ``argv`` names.

    Only that group's module is imported (a server package weighs about a
    second to import); the others appear with their one-line help. Without
    ``argv`` every group is registered.
    """
    parser = argparse.ArgumentParser(
        prog="credence",
        description="Credence: federated, consent-bound blacklist and credit verdicts.",
        epilog="Example: credence node init --dir ./court --member-id court-1 "
        "--kinds court_judgment",
    )
    parser.add_argument("--version", action="version", version=f"credence {__version__}")
    groups = parser.add_subparsers(dest="group", metavar="GROUP", required=True)
    chosen = None if argv is None else next((arg for arg in argv if arg in _GROUPS), None)
    for name, (module_name, help_text) in _GROUPS.items():
        sub = groups.add_parser(name, help=help_text, description=help_text)
        if argv is None or name == chosen:
            importlib.import_module(module_name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    try:
        result: int = args.handler(args)
    except CredenceError as exc:
        return _refused(str(exc))
    except grpc.RpcError as exc:
        # A call made outside credence.client's rpc_errors(): still one line.
        return _refused(str(error_from_rpc(exc)))
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        return _refused(f"cannot use{where}: {exc.strerror or exc}")
    except KeyboardInterrupt:
        print("credence: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the last line of defence: never a traceback
        return _refused(
            f"unexpected {type(exc).__name__}: {exc}; this is a bug in credence "
            f"{__version__}, please report it with the command you ran"
        )
    return result


def _refused(message: str) -> int:
    """One line on stderr, exit code 1."""
    print(f"credence: {' '.join(message.split())}", file=sys.stderr)
    return EXIT_REFUSED
