"""The registry's keys: created once by ``init``, loaded by every process.

* the **root key** signs manifests only (pinned by every member);
* the **signing key** signs queries, verdicts, consents and log promises; its
  key id is the transparency log's id;
* the **CA** issues member certificates for mutual TLS;
* the registry's own **TLS key and certificate**, issued by that CA;
* the **pseudonymisation key** that turns identifiers into subject references,
  handed to members at enrolment.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from central_registry import config as registry_config
from central_registry.config import RegistryConfig
from credence.errors import FailedPrecondition
from credence.keys import (
    SigningKey,
    load_signing_key,
    private_key_pem,
    save_signing_key,
    write_private_file,
)
from credence.pki import (
    CertificateAuthority,
    create_ca,
    generate_tls_key,
    issue_member_certificate,
    load_ca,
    make_csr,
    save_ca,
)
from credence.subjects import PseudonymisationKey

CA_VALIDITY = timedelta(days=3650)
REGISTRY_CERTIFICATE_VALIDITY = timedelta(days=365)


@dataclass(frozen=True)
class RegistryKeys:
    """Every key the registry holds."""

    root: SigningKey
    signing: SigningKey
    ca: CertificateAuthority
    tls_key_pem: bytes
    tls_cert_pem: bytes
    pseudonymisation: PseudonymisationKey

    def __repr__(self) -> str:
        return f"RegistryKeys(root={self.root.kid!r}, signing={self.signing.kid!r})"


def _hosts(listen: str) -> tuple[str, ...]:
    host = listen.rpartition(":")[0].strip("[]")
    hosts = ["127.0.0.1", "::1", "localhost"]
    if host and host not in hosts and host not in ("0.0.0.0", "::"):  # noqa: S104 - names, not binds
        hosts.append(host)
    return tuple(hosts)


def create_keys(config: RegistryConfig, now: datetime) -> RegistryKeys:
    """Generate and save every key of a new registry.

    Raises:
        FailedPrecondition: the data directory already holds registry keys.
    """
    if config.path(registry_config.ROOT_KEY_FILE).exists():
        raise FailedPrecondition(
            f"{config.data_dir} already holds registry keys; refusing to overwrite them"
        )
    config.data_dir.mkdir(parents=True, exist_ok=True)
    root, signing = SigningKey.generate(), SigningKey.generate()
    save_signing_key(config.path(registry_config.ROOT_KEY_FILE), root)
    save_signing_key(config.path(registry_config.SIGNING_KEY_FILE), signing)
    ca = create_ca(f"Credence federation {config.federation_id} CA", now, CA_VALIDITY)
    save_ca(ca, config.path(registry_config.CA_KEY_FILE), config.path(registry_config.CA_CERT_FILE))
    tls_key = generate_tls_key()
    tls_key_pem = private_key_pem(tls_key)
    tls_cert_pem = issue_member_certificate(
        ca,
        make_csr(tls_key, config.member_id),
        config.member_id,
        now,
        valid_for=REGISTRY_CERTIFICATE_VALIDITY,
        hosts=_hosts(config.listen),
    )
    write_private_file(config.path(registry_config.TLS_KEY_FILE), tls_key_pem)
    config.path(registry_config.TLS_CERT_FILE).write_bytes(tls_cert_pem)
    pseudonymisation = PseudonymisationKey.generate()
    write_private_file(
        config.path(registry_config.PSEUDONYMISATION_KEY_FILE), pseudonymisation.secret
    )
    return RegistryKeys(root, signing, ca, tls_key_pem, tls_cert_pem, pseudonymisation)


def load_keys(config: RegistryConfig) -> RegistryKeys:
    """Load the keys ``create_keys`` saved.

    Raises:
        FailedPrecondition: a key file is missing (run ``credence registry init``).
    """

    def need(name: str) -> Path:
        path = config.path(name)
        if not path.is_file():
            raise FailedPrecondition(
                f"{path} is missing: run `credence registry init --dir {config.data_dir}`"
            )
        return path

    return RegistryKeys(
        root=load_signing_key(need(registry_config.ROOT_KEY_FILE)),
        signing=load_signing_key(need(registry_config.SIGNING_KEY_FILE)),
        ca=load_ca(need(registry_config.CA_KEY_FILE), need(registry_config.CA_CERT_FILE)),
        tls_key_pem=need(registry_config.TLS_KEY_FILE).read_bytes(),
        tls_cert_pem=need(registry_config.TLS_CERT_FILE).read_bytes(),
        pseudonymisation=PseudonymisationKey.from_bytes(
            need(registry_config.PSEUDONYMISATION_KEY_FILE).read_bytes()
        ),
    )
