"""The federation CA: member TLS keys, CSRs, certificates and their verification.

The registry holds a CA key that issues the X.509 certificates every RPC's
mutual TLS runs on. A member generates its TLS key locally, sends a CSR, and
gets back a short-lived certificate whose only identity is the SAN URI
``credence://member/<member_id>``; a peer's member id is read from there and
nowhere else.

Keys are ECDSA P-256 (CA and members): gRPC's TLS stack (BoringSSL in grpcio)
does not accept Ed25519 certificates for its handshakes; ``tests/test_mtls.py``
proves it and fails once a grpcio that does is installed.

Member ids are 1 to 64 characters: lowercase ASCII letters, digits, ``.`` and
``-``, starting with a letter or digit (``^[a-z0-9][a-z0-9.-]{0,63}$``), so
that they fit a URI path segment and a DNS-like label without escaping.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from credence.encoding import format_time, require_utc
from credence.errors import CertificateRefused, FailedPrecondition, InvalidInput
from credence.keys import load_private_key_pem, private_key_pem, write_private_file

MEMBER_URI_PREFIX = "credence://member/"
MEMBER_ID_RULE = "1-64 characters of a-z 0-9 . -, starting with a letter or digit"
DEFAULT_MEMBER_VALIDITY = timedelta(days=30)

_MEMBER_ID = re.compile(r"[a-z0-9][a-z0-9.-]{0,63}")
_DNS_NAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*")
# Certificates start a little in the past: peers check validity against their
# own wall clocks, and a fresh certificate must not be refused by a peer whose
# clock runs slightly behind the registry's.
_CLOCK_SKEW = timedelta(minutes=5)
# RFC 5280 section 4.1.2.2: a serial is a positive integer of at most 20 octets.
_MAX_SERIAL = 1 << 159


@dataclass(frozen=True)
class CertificateAuthority:
    """The federation CA: its private key and self-signed certificate."""

    private_key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @property
    def certificate_pem(self) -> bytes:
        """The CA certificate in PEM, the trust root handed to every member."""
        return certificate_pem(self.certificate)

    def __repr__(self) -> str:
        return f"CertificateAuthority(subject={self.certificate.subject.rfc4514_string()!r})"


def validate_member_id(member_id: str) -> str:
    """Return ``member_id`` if it follows the member id rule.

    Raises:
        InvalidInput: the id breaks the rule; the message states the rule.
    """
    if not isinstance(member_id, str) or not _MEMBER_ID.fullmatch(member_id):
        raise InvalidInput(f"member id {member_id!r} is not valid: use {MEMBER_ID_RULE}")
    return member_id


def member_uri(member_id: str) -> str:
    """The SAN URI that names a member: ``credence://member/<member_id>``.

    Raises:
        InvalidInput: the member id breaks the member id rule.
    """
    return MEMBER_URI_PREFIX + validate_member_id(member_id)


def generate_tls_key() -> ec.EllipticCurvePrivateKey:
    """A fresh ECDSA P-256 key for a member's TLS certificate."""
    return ec.generate_private_key(ec.SECP256R1())


def _require_p256(key: ec.EllipticCurvePublicKey | object, what: str) -> None:
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        name = getattr(getattr(key, "curve", None), "name", None) or type(key).__name__
        raise InvalidInput(f"{what} is {name}; gRPC's TLS stack needs an ECDSA P-256 key")


def create_ca(name: str, now: datetime, valid_for: timedelta) -> CertificateAuthority:
    """Create the federation CA with a fresh P-256 key.

    The certificate may sign member certificates only (path length 0) and
    revocation lists.

    Raises:
        InvalidInput: the name is empty or the validity is not positive.
    """
    if not name.strip():
        raise InvalidInput("CA name must not be empty")
    if valid_for <= timedelta(0):
        raise InvalidInput(f"CA validity must be positive, got {valid_for}")
    now = require_utc(now, "now")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + valid_for)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return CertificateAuthority(key, certificate)


def save_ca(
    ca: CertificateAuthority, key_path: Path, cert_path: Path, passphrase: bytes | None = None
) -> None:
    """Write the CA key (PKCS#8 PEM, mode 0600) and certificate (PEM)."""
    write_private_file(key_path, private_key_pem(ca.private_key, passphrase))
    Path(cert_path).write_bytes(ca.certificate_pem)


def load_ca(
    key_path: Path, cert_path: Path, passphrase: bytes | None = None
) -> CertificateAuthority:
    """Read a CA written by :func:`save_ca`.

    Raises:
        InvalidInput: a file is unreadable, the key is not P-256, the
            certificate is not a CA certificate, or key and certificate do
            not belong together.
    """
    key = load_private_key_pem(Path(key_path).read_bytes(), passphrase)
    certificate = load_certificate_pem(Path(cert_path).read_bytes())
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise InvalidInput(f"{key_path} holds a {type(key).__name__}, not an ECDSA CA key")
    _require_p256(key.public_key(), f"the CA key in {key_path}")
    if not _is_ca(certificate):
        raise InvalidInput(f"{cert_path} is not a CA certificate (basicConstraints CA:false)")
    if certificate.public_key() != key.public_key():
        raise InvalidInput(f"{cert_path} does not certify the key in {key_path}")
    return CertificateAuthority(key, certificate)


def certificate_pem(certificate: x509.Certificate) -> bytes:
    """A certificate in PEM."""
    return certificate.public_bytes(serialization.Encoding.PEM)


def load_certificate_pem(data: bytes) -> x509.Certificate:
    """Read one PEM certificate.

    Raises:
        InvalidInput: the bytes are not a PEM certificate.
    """
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise InvalidInput(f"not a readable PEM certificate: {exc}") from exc


def make_csr(key: ec.EllipticCurvePrivateKey, member_id: str) -> bytes:
    """A PEM CSR for ``key`` naming the member in its SAN URI.

    Raises:
        InvalidInput: the member id breaks the member id rule, or the key is
            not P-256.
    """
    uri = member_uri(member_id)
    _require_p256(key.public_key(), "the TLS key")
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, member_id)]))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def _load_csr(csr_pem: bytes) -> x509.CertificateSigningRequest:
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as exc:
        raise InvalidInput(f"not a readable PEM CSR: {exc}") from exc
    if not csr.is_signature_valid:
        raise InvalidInput("CSR signature does not verify: the CSR was altered or not self-signed")
    return csr


def _csr_member_uris(csr: x509.CertificateSigningRequest) -> list[str]:
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return list(san.get_values_for_type(x509.UniformResourceIdentifier))


def check_csr(csr_pem: bytes, member_id: str) -> None:
    """Check a CSR before it is stored: readable, self-signed, naming exactly this member.

    Raises:
        InvalidInput: unreadable, altered, or naming another (or no) member.
    """
    uri = member_uri(member_id)
    csr = _load_csr(csr_pem)
    uris = _csr_member_uris(csr)
    if uris != [uri]:
        named = ", ".join(uris) or "no SAN URI"
        raise InvalidInput(f"CSR names {named}, but the enrolling member is {uri}")
    _require_p256(csr.public_key(), "CSR key")


def _host_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
            continue
        except ValueError:
            pass
        if len(host) > 253 or not _DNS_NAME.fullmatch(host):
            raise InvalidInput(f"host {host!r} is neither an IP address nor a DNS name")
        names.append(x509.DNSName(host.lower()))
    return names


def issue_member_certificate(
    ca: CertificateAuthority,
    csr_pem: bytes,
    member_id: str,
    now: datetime,
    *,
    valid_for: timedelta = DEFAULT_MEMBER_VALIDITY,
    serial: int | None = None,
    hosts: Sequence[str] = (),
) -> bytes:
    """Issue the TLS certificate of an approved member from its CSR.

    The certificate names the member by exactly one SAN URI, plus the DNS
    names and IP addresses in ``hosts`` for a member that serves; every other
    name in the CSR is ignored. It is good for client and server TLS.

    Args:
        ca: the federation CA.
        csr_pem: the member's PEM CSR, made by :func:`make_csr`.
        member_id: the member id the operator approved.
        now: the issue time.
        valid_for: how long the certificate is good for; keep it short.
        serial: a fixed serial (tests); a random 159-bit one by default.
        hosts: DNS names or IP addresses a server member is reached at.

    Returns:
        The certificate in PEM.

    Raises:
        InvalidInput: the CSR is unreadable, its signature does not verify,
            it names another member or none, its key is not P-256, a host
            or the serial or validity is malformed, or the member id breaks
            the member id rule.
        FailedPrecondition: the CA certificate expires before the member
            certificate would.
    """
    uri = member_uri(member_id)
    now = require_utc(now, "now")
    csr = _load_csr(csr_pem)
    uris = _csr_member_uris(csr)
    if uris != [uri]:
        named = ", ".join(uris) or "no SAN URI"
        raise InvalidInput(f"CSR names {named}, but the approved member is {uri}")
    public_key = csr.public_key()
    _require_p256(public_key, "the CSR key")
    if valid_for <= timedelta(0):
        raise InvalidInput(f"certificate validity must be positive, got {valid_for}")
    if serial is None:
        serial = x509.random_serial_number()
    if not 0 < serial < _MAX_SERIAL:
        raise InvalidInput(f"serial must be in 1..2**159-1, got {serial}")
    not_after = now + valid_for
    ca_not_after = ca.certificate.not_valid_after_utc
    if not_after > ca_not_after:
        raise FailedPrecondition(
            f"the CA certificate expires at {format_time(ca_not_after)}, before the member "
            f"certificate would ({format_time(not_after)}): renew the CA or shorten the validity"
        )
    ca_ski = ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri), *_host_names(hosts)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, member_id)]))
        .issuer_name(ca.certificate.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(san, critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca.private_key, hashes.SHA256())
    )
    return certificate_pem(certificate)


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        return certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def member_id_from_certificate(certificate: x509.Certificate) -> str:
    """The member id named by a certificate's SAN URI.

    Raises:
        CertificateRefused: the certificate has no SAN URI, more than one, or
            one that is not a valid ``credence://member/<member_id>``.
    """
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise CertificateRefused(
            "certificate has no SAN; it must name credence://member/<id>"
        ) from None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise CertificateRefused(
            f"certificate must carry exactly one SAN URI credence://member/<id>, has {len(uris)}"
        )
    uri = uris[0]
    member_id = uri.removeprefix(MEMBER_URI_PREFIX)
    if member_id == uri or not _MEMBER_ID.fullmatch(member_id):
        raise CertificateRefused(f"certificate SAN URI {uri!r} is not credence://member/<id>")
    return member_id


# A peer presents the same certificate with every call on its connections. Its
# CA signature cannot change, so it is checked once per process (and costs an
# ECDSA verification, the dearest step of a call's peer check); validity at
# ``now``, revocation and the member id are checked on every call.
_SIGNED_BY_CA: dict[tuple[bytes, x509.Certificate], x509.Certificate] = {}
_SIGNED_BY_CA_MAX = 4096


def _signed_by_ca(cert_pem: bytes, ca_cert: x509.Certificate) -> x509.Certificate:
    try:
        certificate = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as exc:
        raise CertificateRefused(f"not a readable PEM certificate: {exc}") from exc
    try:
        certificate.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise CertificateRefused(
            f"certificate of {certificate.subject.rfc4514_string()!r} is not issued by the "
            f"federation CA {ca_cert.subject.rfc4514_string()!r}: {exc or 'bad signature'}"
        ) from None
    if len(_SIGNED_BY_CA) >= _SIGNED_BY_CA_MAX:
        _SIGNED_BY_CA.clear()  # a flood of distinct certificates cannot grow memory
    _SIGNED_BY_CA[cert_pem, ca_cert] = certificate
    return certificate


def verify_member_certificate(
    cert_pem: bytes,
    ca_cert: x509.Certificate,
    now: datetime,
    revoked_serials: Collection[int],
) -> str:
    """Check a member certificate against the federation CA and return its member id.

    Checks that the CA signed it directly, that it is not itself a CA
    certificate, that it and the CA are valid at ``now``, and that its
    serial is not revoked.

    Raises:
        CertificateRefused: the certificate is unreadable, issued by another
            CA, a CA certificate, expired or not yet valid, revoked, or does
            not name a member; the message says which.
    """
    now = require_utc(now, "now")
    certificate = _SIGNED_BY_CA.get((cert_pem, ca_cert))
    if certificate is None:
        certificate = _signed_by_ca(cert_pem, ca_cert)
    if _is_ca(certificate):
        raise CertificateRefused("a CA certificate cannot identify a member")
    for what, cert in (("certificate", certificate), ("CA certificate", ca_cert)):
        if now < cert.not_valid_before_utc:
            raise CertificateRefused(
                f"{what} is not valid before {format_time(cert.not_valid_before_utc)} "
                f"(now {format_time(now)})"
            )
        if now > cert.not_valid_after_utc:
            raise CertificateRefused(
                f"{what} expired at {format_time(cert.not_valid_after_utc)} "
                f"(now {format_time(now)})"
            )
    member_id = member_id_from_certificate(certificate)
    if certificate.serial_number in revoked_serials:
        raise CertificateRefused(
            f"certificate of member {member_id!r} is revoked "
            f"(serial {certificate.serial_number:#x})"
        )
    return member_id
