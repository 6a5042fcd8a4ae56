"""Credence: federated, consent-bound blacklist and credit verdicts.

The shared library used by the agency node, the central registry and
requesters. Its modules are pure functions over bytes; the servers wrap them
in thin gRPC and database layers.
"""

__version__ = "0.1.0"
