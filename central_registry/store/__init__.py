"""The central registry's repositories: members, manifests, bindings, grants.

Every function receives a ``Session`` and runs in the caller's transaction
(``with session.begin():``); none commits. Rows come back as the ORM objects
of :mod:`central_registry.models`, readable after the commit (the sessions of
:func:`credence.storage.session_factory` do not expire on commit).

What must hold across several registry processes sharing one database is
decided by the database, in one statement: a grant's use count, a member id,
a manifest version. The log's rows live in :mod:`central_registry.log`, the
limits' state in :mod:`central_registry.limits`.
"""
