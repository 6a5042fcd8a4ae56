"""The transparency log's maths, shared by the registry, nodes and auditors.

``merkle`` is RFC 9162 (leaf and node hashes, roots, inclusion and consistency
proofs), ``merkle_batch`` many inclusion proofs of one tree built and checked
together, ``log_promise`` the salted entry commitment and the registry's
signed promise of inclusion, ``log_audit`` checking checkpoints and proofs
against what a node was promised. The ecosystem's formats (C2SP): ``note``
signed notes, ``checkpoint`` the log's tree heads as notes, ``tiles`` tile
paths and entry bundles.
"""
