"""Grants and the tokens that carry them: bindings, consents, mandates, revocation.

``tokens`` is the surface the servers use (issue and verify each kind);
``binding``, ``consent`` and ``mandate`` hold each token's claims and rules,
``status_list`` the registry's signed revocation list, ``subject_proofs`` a
subject's signed request to act on their own data, ``cache`` verified grants
remembered by token hash. All pure: keys and ``now`` are passed in.
"""
