"""A node's data directory for a federation without a registry.

What ``credence node init`` and ``credence node install`` leave, written from an
:class:`credence.dev.offline_federation.Federation` that holds the member's keys:
tests, benchmarks and an operator trying a node offline start ``credence node
serve`` on it and play the registry with the same federation.
"""

from __future__ import annotations

import json
from pathlib import Path

from agency_node import config as node_config
from agency_node import database
from credence.blind.masks import save_agreement_key
from credence.dev.offline_federation import Federation
from credence.keys import KeySet, save_signing_key


def write_node_dir(federation: Federation, root: Path, member_id: str, **config: object) -> Path:
    """Write ``root/member_id``, a ready node data directory of an agency of ``federation``.

    Args:
        federation: the offline federation; ``member_id`` must be one of its agencies.
        root: the directory to create the node's directory in.
        member_id: the agency's member id.
        **config: further :class:`agency_node.config.NodeConfig` fields
            (``database_url``, ``registry_public``, ...).

    Returns:
        The node's data directory, its schema migrated.

    Raises:
        KeyError: ``member_id`` is not an agency of ``federation``.
        FileExistsError: the directory already exists.
    """
    member = federation.members[member_id]
    data_dir = root / member_id
    data_dir.mkdir(parents=True)
    settings = node_config.NodeConfig(
        data_dir=data_dir,
        member_id=member_id,
        listen="127.0.0.1:0",
        record_kinds=federation.agencies[member_id],
        grace_seconds=2.0,
        **config,  # type: ignore[arg-type]
    )
    (data_dir / node_config.CONFIG_FILE).write_text(node_config.render_config(settings))
    save_signing_key(data_dir / node_config.SIGNING_KEY_FILE, member.signing_key)
    save_agreement_key(data_dir / node_config.AGREEMENT_KEY_FILE, member.agreement_key)
    (data_dir / node_config.TLS_KEY_FILE).write_bytes(member.tls_key_pem)
    (data_dir / node_config.TLS_CERT_FILE).write_bytes(member.cert_pem)
    (data_dir / node_config.CA_CERT_FILE).write_bytes(federation.ca.certificate_pem)
    (data_dir / node_config.ROOT_KEYS_FILE).write_text(
        json.dumps(KeySet([federation.root_key.public]).to_jwks())
    )
    (data_dir / node_config.MANIFEST_FILE).write_bytes(federation.manifest_envelope().to_bytes())
    (data_dir / node_config.PSEUDONYMISATION_KEY_FILE).write_bytes(
        federation.pseudonymisation_key.secret
    )
    engine = database.create_engine_for(settings.effective_database_url)
    database.upgrade_schema(engine)
    engine.dispose()
    return data_dir
