"""Blind aggregation: answers as vectors under pairwise masks (issue 14; docs/protocol.md).

* :mod:`credence.blind.layout`: which integer of an answer vector means what;
* :mod:`credence.blind.sums`: sums mod 2^64 and the verdict that follows from one;
* :mod:`credence.blind.masks`: X25519 agreement keys, pair keys and masks;
* :mod:`credence.blind.recovery`: removing the masks of agencies that did not answer;
* :mod:`credence.blind.reading`: the verdict parts the registry and every verifier
  read from a sum.
"""
