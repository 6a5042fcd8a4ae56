"""Tests for credence.pki: the CA, CSRs, member certificates and their verification."""

from __future__ import annotations

import re
import stat
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from credence import pki
from credence.errors import CertificateRefused, FailedPrecondition, InvalidInput

NOW = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
SKEW = timedelta(minutes=5)


@pytest.fixture(scope="module")
def ca() -> pki.CertificateAuthority:
    return pki.create_ca("Credence Test CA", NOW, timedelta(days=365))


def _issue(
    ca: pki.CertificateAuthority,
    member_id: str = "bank-a",
    *,
    valid_for: timedelta = pki.DEFAULT_MEMBER_VALIDITY,
    serial: int | None = None,
    hosts: Sequence[str] = (),
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = pki.generate_tls_key()
    pem = pki.issue_member_certificate(
        ca,
        pki.make_csr(key, member_id),
        member_id,
        NOW,
        valid_for=valid_for,
        serial=serial,
        hosts=hosts,
    )
    return key, x509.load_pem_x509_certificate(pem)


def _raw_cert(
    ca: pki.CertificateAuthority,
    names: Sequence[x509.GeneralName] | None,
    *,
    public_key: CertificatePublicKeyTypes | None = None,
    not_before: datetime = NOW,
    not_after: datetime = NOW + timedelta(days=1),
    is_ca: bool = False,
) -> bytes:
    """A certificate signed by the CA without issue_member_certificate's rules."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "raw")]))
        .issuer_name(ca.certificate.subject)
        .public_key(public_key or pki.generate_tls_key().public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    if names is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return pki.certificate_pem(builder.sign(ca.private_key, hashes.SHA256()))


# --- the CA ------------------------------------------------------------------


def test_ca_certificate_may_only_sign_member_certificates(ca: pki.CertificateAuthority) -> None:
    cert = ca.certificate
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca
    assert constraints.value.path_length == 0
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.key_cert_sign
    assert usage.value.crl_sign
    assert not usage.value.digital_signature
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(ca.private_key.public_key())
    assert cert.subject == cert.issuer
    assert cert.subject.rfc4514_string() == "CN=Credence Test CA"
    cert.verify_directly_issued_by(cert)
    assert cert.not_valid_before_utc == NOW - SKEW
    assert cert.not_valid_after_utc == NOW + timedelta(days=365)
    assert isinstance(ca.private_key.curve, ec.SECP256R1)
    assert "PRIVATE" not in repr(ca)


def test_create_ca_refuses_empty_name_and_non_positive_validity() -> None:
    with pytest.raises(InvalidInput, match="CA name must not be empty"):
        pki.create_ca(" ", NOW, timedelta(days=1))
    with pytest.raises(InvalidInput, match="CA validity must be positive"):
        pki.create_ca("CA", NOW, timedelta(0))


def test_create_ca_refuses_naive_time() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        pki.create_ca("CA", datetime(2026, 11, 28), timedelta(days=1))


@pytest.mark.parametrize("passphrase", [None, b"correct horse"])
def test_ca_save_load_round_trip(
    ca: pki.CertificateAuthority, tmp_path: Path, passphrase: bytes | None
) -> None:
    key_path, cert_path = tmp_path / "ca" / "ca.key", tmp_path / "ca" / "ca.pem"
    pki.save_ca(ca, key_path, cert_path, passphrase)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert (b"ENCRYPTED" in key_path.read_bytes()) == (passphrase is not None)
    loaded = pki.load_ca(key_path, cert_path, passphrase)
    assert loaded.certificate == ca.certificate
    assert loaded.private_key.private_numbers() == ca.private_key.private_numbers()


def test_load_ca_refuses_a_certificate_of_another_key(
    ca: pki.CertificateAuthority, tmp_path: Path
) -> None:
    other = pki.create_ca("Credence Test CA", NOW, timedelta(days=1))
    pki.save_ca(ca, tmp_path / "ca.key", tmp_path / "ca.pem")
    (tmp_path / "other.pem").write_bytes(other.certificate_pem)
    with pytest.raises(InvalidInput, match=r"other\.pem does not certify the key in .*ca\.key"):
        pki.load_ca(tmp_path / "ca.key", tmp_path / "other.pem")


def test_load_ca_refuses_a_member_certificate(ca: pki.CertificateAuthority, tmp_path: Path) -> None:
    pki.save_ca(ca, tmp_path / "ca.key", tmp_path / "ca.pem")
    (tmp_path / "member.pem").write_bytes(pki.certificate_pem(_issue(ca)[1]))
    with pytest.raises(InvalidInput, match=r"member\.pem is not a CA certificate"):
        pki.load_ca(tmp_path / "ca.key", tmp_path / "member.pem")


def test_load_certificate_pem_refuses_garbage() -> None:
    with pytest.raises(InvalidInput, match="not a readable PEM certificate"):
        pki.load_certificate_pem(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")


# --- member ids ----------------------------------------------------------------


@pytest.mark.parametrize("member_id", ["a", "0", "bank-a", "tax.agency-7", "a" * 64, "0.-"])
def test_valid_member_ids(member_id: str) -> None:
    assert pki.validate_member_id(member_id) == member_id
    assert pki.member_uri(member_id) == f"credence://member/{member_id}"


@pytest.mark.parametrize(
    "member_id",
    ["", "A", "Bank", "-bank", ".bank", "a" * 65, "bank/a", "bank a", "bank_a", "bänk", "bank\n"],
)
def test_bad_member_ids_are_refused_with_the_rule(member_id: str) -> None:
    rule = r"use 1-64 characters of a-z 0-9 \. -, starting with a letter or digit"
    with pytest.raises(InvalidInput, match=rf"member id .* is not valid: {rule}"):
        pki.validate_member_id(member_id)
    with pytest.raises(InvalidInput, match=rule):
        pki.make_csr(pki.generate_tls_key(), member_id)


def test_issue_refuses_a_bad_member_id(ca: pki.CertificateAuthority) -> None:
    csr = pki.make_csr(pki.generate_tls_key(), "bank-a")
    with pytest.raises(InvalidInput, match="member id 'Bank-A' is not valid"):
        pki.issue_member_certificate(ca, csr, "Bank-A", NOW)


# --- CSR -> certificate ------------------------------------------------------------


def test_csr_names_the_member() -> None:
    key = pki.generate_tls_key()
    csr = x509.load_pem_x509_csr(pki.make_csr(key, "bank-a"))
    assert csr.is_signature_valid
    assert csr.public_key() == key.public_key()
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["credence://member/bank-a"]


def test_csr_to_certificate_round_trip(ca: pki.CertificateAuthority) -> None:
    key, cert = _issue(ca, "bank-a")
    assert cert.public_key() == key.public_key()
    cert.verify_directly_issued_by(ca.certificate)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(san) == [x509.UniformResourceIdentifier("credence://member/bank-a")]
    assert cert.subject.rfc4514_string() == "CN=bank-a"
    assert cert.not_valid_before_utc == NOW - SKEW
    assert cert.not_valid_after_utc == NOW + timedelta(days=30)
    assert 0 < cert.serial_number < 2**159
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature
    assert not usage.key_cert_sign
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ca_ski = ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest
    assert pki.member_id_from_certificate(cert) == "bank-a"
    assert pki.verify_member_certificate(pki.certificate_pem(cert), ca.certificate, NOW, ()) == (
        "bank-a"
    )


def test_serials_are_random_unless_given(ca: pki.CertificateAuthority) -> None:
    assert _issue(ca)[1].serial_number != _issue(ca)[1].serial_number
    assert _issue(ca, serial=4242)[1].serial_number == 4242


@pytest.mark.parametrize("serial", [0, -1, 2**159])
def test_out_of_range_serials_are_refused(ca: pki.CertificateAuthority, serial: int) -> None:
    with pytest.raises(InvalidInput, match=r"serial must be in 1\.\.2\*\*159-1"):
        _issue(ca, serial=serial)


def test_server_certificate_carries_its_hosts(ca: pki.CertificateAuthority) -> None:
    _, cert = _issue(ca, "node-1", hosts=["127.0.0.1", "::1", "localhost", "Node1.Example"])
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["credence://member/node-1"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "node1.example"]
    assert pki.member_id_from_certificate(cert) == "node-1"


@pytest.mark.parametrize("host", ["", "*.example", "exa mple", "-bad.example", "a..b", "x" * 64])
def test_bad_hosts_are_refused(ca: pki.CertificateAuthority, host: str) -> None:
    with pytest.raises(InvalidInput, match="is neither an IP address nor a DNS name"):
        _issue(ca, hosts=[host])


def test_validity_must_be_positive_and_within_the_ca(ca: pki.CertificateAuthority) -> None:
    assert _issue(ca, valid_for=timedelta(hours=1))[1].not_valid_after_utc == NOW + timedelta(
        hours=1
    )
    with pytest.raises(InvalidInput, match="certificate validity must be positive"):
        _issue(ca, valid_for=timedelta(0))
    with pytest.raises(
        FailedPrecondition,
        match=r"CA certificate expires at 2027-11-28T10:00:00Z, before the member certificate "
        r"would \(2027-11-29T10:00:00Z\)",
    ):
        _issue(ca, valid_for=timedelta(days=366))


def test_csr_naming_another_member_is_refused(ca: pki.CertificateAuthority) -> None:
    csr = pki.make_csr(pki.generate_tls_key(), "bank-b")
    with pytest.raises(
        InvalidInput,
        match="CSR names credence://member/bank-b, but the approved member is "
        "credence://member/bank-a",
    ):
        pki.issue_member_certificate(ca, csr, "bank-a", NOW)


def _csr_with_names(key: ec.EllipticCurvePrivateKey, uris: Sequence[str]) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bank-a")])
    )
    if uris:
        names = [x509.UniformResourceIdentifier(uri) for uri in uris]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize(
    ("uris", "named"),
    [
        ([], "no SAN URI"),
        (["credence://member/bank-a", "credence://member/bank-b"], "credence://member/bank-a, "),
        (
            ["credence://member/bank-a", "https://bank-a.example"],
            "credence://member/bank-a, https://bank-a.example, but",
        ),
    ],
)
def test_csr_must_name_exactly_the_approved_member(
    ca: pki.CertificateAuthority, uris: list[str], named: str
) -> None:
    csr = _csr_with_names(pki.generate_tls_key(), uris)
    with pytest.raises(InvalidInput, match=re.escape(f"CSR names {named}")):
        pki.issue_member_certificate(ca, csr, "bank-a", NOW)


def test_tampered_csr_is_refused(ca: pki.CertificateAuthority) -> None:
    # An attacker rewrites the member id in a CSR signed by someone else's key.
    csr = x509.load_pem_x509_csr(pki.make_csr(pki.generate_tls_key(), "bank-a"))
    der = csr.public_bytes(serialization.Encoding.DER)
    assert der.count(b"member/bank-a") == 1
    tampered = x509.load_der_x509_csr(der.replace(b"member/bank-a", b"member/bank-z"))
    tampered_pem = tampered.public_bytes(serialization.Encoding.PEM)
    with pytest.raises(InvalidInput, match="CSR signature does not verify"):
        pki.issue_member_certificate(ca, tampered_pem, "bank-z", NOW)


def test_garbage_csr_is_refused(ca: pki.CertificateAuthority) -> None:
    with pytest.raises(InvalidInput, match="not a readable PEM CSR"):
        pki.issue_member_certificate(ca, b"not a csr", "bank-a", NOW)


def test_csr_with_a_key_grpc_cannot_use_is_refused(ca: pki.CertificateAuthority) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bank-a")]))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier("credence://member/bank-a")]
            ),
            critical=False,
        )
        .sign(key, None)
        .public_bytes(serialization.Encoding.PEM)
    )
    with pytest.raises(InvalidInput, match=r"CSR key is Ed25519PublicKey.*needs an ECDSA P-256"):
        pki.issue_member_certificate(ca, csr, "bank-a", NOW)
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(InvalidInput, match=r"TLS key is secp384r1.*needs an ECDSA P-256"):
        pki.make_csr(p384, "bank-a")


# --- reading the member id --------------------------------------------------------


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (None, "certificate has no SAN"),
        ([x509.DNSName("bank-a.example")], "exactly one SAN URI .*, has 0"),
        (
            [
                x509.UniformResourceIdentifier("credence://member/bank-a"),
                x509.UniformResourceIdentifier("credence://member/bank-b"),
            ],
            "exactly one SAN URI .*, has 2",
        ),
        ([x509.UniformResourceIdentifier("spiffe://bank-a")], "'spiffe://bank-a' is not"),
        ([x509.UniformResourceIdentifier("credence://member/")], "'credence://member/' is not"),
        (
            [x509.UniformResourceIdentifier("credence://member/Bank-A")],
            "'credence://member/Bank-A' is not",
        ),
        (
            [x509.UniformResourceIdentifier("credence://member/a/b")],
            "'credence://member/a/b' is not",
        ),
    ],
)
def test_certificate_without_a_member_uri_is_refused(
    ca: pki.CertificateAuthority, names: list[x509.GeneralName] | None, message: str
) -> None:
    pem = _raw_cert(ca, names)
    with pytest.raises(CertificateRefused, match=message):
        pki.member_id_from_certificate(x509.load_pem_x509_certificate(pem))
    with pytest.raises(CertificateRefused, match=message):
        pki.verify_member_certificate(pem, ca.certificate, NOW, ())


# --- verifying member certificates ----------------------------------------------------


def test_foreign_ca_certificate_is_refused(ca: pki.CertificateAuthority) -> None:
    # Same name as the federation CA, different key: only the signature tells them apart.
    impostor = pki.create_ca("Credence Test CA", NOW, timedelta(days=365))
    _, cert = _issue(impostor, "bank-a")
    with pytest.raises(
        CertificateRefused,
        match="certificate of 'CN=bank-a' is not issued by the federation CA 'CN=Credence Test CA'",
    ):
        pki.verify_member_certificate(pki.certificate_pem(cert), ca.certificate, NOW, ())


def test_certificate_from_a_differently_named_ca_is_refused(ca: pki.CertificateAuthority) -> None:
    other = pki.create_ca("Other CA", NOW, timedelta(days=365))
    _, cert = _issue(other, "bank-a")
    with pytest.raises(CertificateRefused, match="is not issued by the federation CA"):
        pki.verify_member_certificate(pki.certificate_pem(cert), ca.certificate, NOW, ())


def test_expired_certificate_is_refused(ca: pki.CertificateAuthority) -> None:
    pem = pki.certificate_pem(_issue(ca)[1])
    last_valid = NOW + timedelta(days=30)
    assert pki.verify_member_certificate(pem, ca.certificate, last_valid, ()) == "bank-a"
    with pytest.raises(
        CertificateRefused,
        match=r"certificate expired at 2026-12-28T10:00:00Z \(now 2026-12-28T10:00:01Z\)",
    ):
        pki.verify_member_certificate(pem, ca.certificate, last_valid + timedelta(seconds=1), ())


def test_not_yet_valid_certificate_is_refused(ca: pki.CertificateAuthority) -> None:
    pem = pki.certificate_pem(_issue(ca)[1])
    assert pki.verify_member_certificate(pem, ca.certificate, NOW - SKEW, ()) == "bank-a"
    with pytest.raises(
        CertificateRefused,
        match=r"certificate is not valid before 2026-11-28T09:55:00Z \(now 2026-11-28T09:00:00Z\)",
    ):
        pki.verify_member_certificate(pem, ca.certificate, NOW - timedelta(hours=1), ())


def test_certificate_outliving_an_expired_ca_is_refused(ca: pki.CertificateAuthority) -> None:
    pem = _raw_cert(
        ca,
        [x509.UniformResourceIdentifier("credence://member/bank-a")],
        not_after=NOW + timedelta(days=400),
    )
    with pytest.raises(CertificateRefused, match="CA certificate expired at 2027-11-28T10:00:00Z"):
        pki.verify_member_certificate(pem, ca.certificate, NOW + timedelta(days=366), ())


def test_revoked_certificate_is_refused(ca: pki.CertificateAuthority) -> None:
    _, cert = _issue(ca, "bank-a", serial=0xC0FFEE)
    pem = pki.certificate_pem(cert)
    assert pki.verify_member_certificate(pem, ca.certificate, NOW, {1, 2}) == "bank-a"
    with pytest.raises(
        CertificateRefused, match=r"certificate of member 'bank-a' is revoked \(serial 0xc0ffee\)"
    ):
        pki.verify_member_certificate(pem, ca.certificate, NOW, {1, 0xC0FFEE})


def test_ca_certificate_cannot_pose_as_a_member(ca: pki.CertificateAuthority) -> None:
    with pytest.raises(CertificateRefused, match="a CA certificate cannot identify a member"):
        pki.verify_member_certificate(ca.certificate_pem, ca.certificate, NOW, ())
    sub_ca = _raw_cert(ca, [x509.UniformResourceIdentifier("credence://member/bank-a")], is_ca=True)
    with pytest.raises(CertificateRefused, match="a CA certificate cannot identify a member"):
        pki.verify_member_certificate(sub_ca, ca.certificate, NOW, ())


def test_unreadable_certificate_is_refused(ca: pki.CertificateAuthority) -> None:
    with pytest.raises(CertificateRefused, match="not a readable PEM certificate"):
        pki.verify_member_certificate(b"garbage", ca.certificate, NOW, ())


def test_verify_refuses_naive_time(ca: pki.CertificateAuthority) -> None:
    pem = pki.certificate_pem(_issue(ca)[1])
    with pytest.raises(ValueError, match="now must be timezone-aware"):
        pki.verify_member_certificate(pem, ca.certificate, datetime(2026, 11, 28), ())


def test_a_certificate_accepted_once_is_refused_under_another_ca(
    ca: pki.CertificateAuthority,
) -> None:
    """The CA signature is checked once per certificate and CA: another CA gets its own check."""
    pem = pki.certificate_pem(_issue(ca)[1])
    assert pki.verify_member_certificate(pem, ca.certificate, NOW, ()) == "bank-a"
    assert pki.verify_member_certificate(pem, ca.certificate, NOW, ()) == "bank-a"
    other = pki.create_ca("Credence Test CA", NOW, timedelta(days=365))
    with pytest.raises(CertificateRefused, match="is not issued by the federation CA"):
        pki.verify_member_certificate(pem, other.certificate, NOW, ())
