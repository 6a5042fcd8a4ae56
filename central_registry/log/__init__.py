"""The registry's transparency log: its rows, their appends and reads.

:mod:`~central_registry.log.rows` builds every row the log holds, one
constructor per kind (a lookup dispatched, a lookup refused);
:mod:`~central_registry.log.entries` appends rows and reads them back. As in
Tessera's append lifecycle, entries are appended first and then integrated
into the Merkle tree (:mod:`central_registry.transparency`, over
:mod:`credence.transparency.merkle`), in the same transaction.
"""
