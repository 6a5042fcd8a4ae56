"""Builders the test suites share, as python-tuf's ``tests/repository_simulator.py``.

- (keys, CA and signed manifests without a registry are the product's own
  :mod:`credence.dev.offline_federation`, with
  :func:`agency_node.offline_node.write_node_dir` for a node's directory.)
- :mod:`support.registry`: ``credence registry init`` on loopback with settings
  overridden, served in this process.
- :mod:`support.inprocess`: a registry with approved members and agencies as threads.
- :mod:`support.members_port` / :mod:`support.public_port`: a registry as a
  hostile member or a stranger sees it.
- :mod:`support.log_server`: a registry log of any size, served or audited.
- :mod:`support.grants`: consent and mandate factories.
- :mod:`support.fault_proxy` / :mod:`support.fault_federation`: the fault suite's
  proxies and the federation behind them.
- :mod:`support.fixtures`: all of the above as pytest fixtures (registered by
  ``tests/conftest.py``).
"""
