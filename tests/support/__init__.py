"""Builders the test suites share, as python-tuf's ``tests/repository_simulator.py``.

- :mod:`support.signed_federation`: keys, CA and signed manifests without a
  registry, for node unit tests (it plays the registry's part).
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
