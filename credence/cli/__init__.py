"""The ``credence`` command: one entry point, a module per command group.

``app`` parses the group and imports only that group's module (the node and
registry groups live with their servers); ``requester`` holds verify, screen,
verdict and consent, ``me`` the subject's commands, ``audit`` the log checks
from outside, ``dev`` a local federation.
"""

from credence.cli.app import EXIT_OK, EXIT_REFUSED, EXIT_USAGE, main

__all__ = ["EXIT_OK", "EXIT_REFUSED", "EXIT_USAGE", "main"]
