"""The ``credence`` command: one entry point, a module per command group.

``app`` parses the group and imports only that group's module (the node and
registry groups live with their servers): ``verify``, ``screen``, ``verdict``
and ``consent`` are the requester's, ``me`` the subject's, ``audit`` checks the
log from outside, ``dev`` runs a local federation. Every command is built with
``command`` and finds its federation with ``federation``; ``options`` holds the
arguments they share.
"""

from credence.cli.app import EXIT_OK, EXIT_REFUSED, EXIT_USAGE, main

__all__ = ["EXIT_OK", "EXIT_REFUSED", "EXIT_USAGE", "main"]
