"""Tests for credence.subjects: normalisation, scheme rules, subject references."""

from __future__ import annotations

import hashlib

import pytest

from credence.errors import InvalidIdentifier, InvalidInput
from credence.subjects import (
    SCHEME_SUBJECT_TYPES,
    SUBJECT_REF_DOMAIN,
    NormalisedId,
    PseudonymisationKey,
    SubjectRef,
    SubjectType,
    normalise,
    ref_for,
    subject_ref,
)

KEY = PseudonymisationKey.from_bytes(bytes(range(32)))
OTHER_KEY = PseudonymisationKey.from_bytes(bytes(range(1, 33)))


def _hmac_sha256(key: bytes, message: bytes) -> bytes:
    """RFC 2104 HMAC built from hashlib alone, independent of the hmac module."""
    block = key.ljust(64, b"\x00")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in block) + message).digest()
    return hashlib.sha256(bytes(b ^ 0x5C for b in block) + inner).digest()


def _fullwidth(text: str) -> str:
    """The full-width forms (U+FF01..U+FF5E) an East Asian input method types."""
    return "".join(chr(ord(char) + 0xFEE0) for char in text)


# --- valid identifiers -----------------------------------------------------

# Each group: the canonical form, then spellings that must normalise to it.
VALID = [
    # GB 11643-1999's own example number (Beijing, born 1949-12-31, check X).
    (
        "cn-rid:11010519491231002X",
        SubjectType.PERSON,
        [
            "cn-rid:11010519491231002X",
            "  CN-RID : 110105 19491231 002x  ",
            "cn-rid:110105-19491231-002X",
            "Cn-Rid:110.105.1949.1231.002.x",
            # Full-width forms from an East Asian input method, NFKC folds them.
            _fullwidth("cn-rid:11010519491231002X"),
            "cn-rid:\t110105\u300019491231\u00a0002X\n",
        ],
    ),
    # Constructed: a numeric check character and a 29 February birth date.
    (
        "cn-rid:440306200002290180",
        SubjectType.PERSON,
        ["cn-rid:440306200002290180", "CN-RID:440306-20000229-0180"],
    ),
    (
        "nin:AB1234CD",
        SubjectType.PERSON,
        ["nin:AB1234CD", "NIN: ab 12-34.cd", "nin:ab\u20101234cd"],
    ),
    ("nin:A" + "1" * 31, SubjectType.PERSON, ["nin:a" + "1" * 31]),
    # GB 32100-2015's worked example (the standard computes check character 3).
    (
        "cn-uscc:91350100M000100Y43",
        SubjectType.ORGANISATION,
        [
            "cn-uscc:91350100M000100Y43",
            "CN-USCC: 9135 0100 M000 100Y 43",
            "cn-uscc:91350100m000100y43",
            "cn-uscc:913501-00M000-100Y43",
        ],
    ),
    # Constructed: weighted sum divisible by 31, whose check character is 0.
    ("cn-uscc:91350100M0000090Y0", SubjectType.ORGANISATION, ["cn-uscc:91350100m0000090y0"]),
    # Published LEIs: R checkstring's is_lei example, the Eurofiling XBRL
    # example, and the test vectors of the iso7064 crate.
    (
        "lei:7H6GLXDRUGQFU57RNE97",
        SubjectType.ORGANISATION,
        ["lei:7H6GLXDRUGQFU57RNE97", "LEI: 7h6g lxdr ugqf u57r ne97"],
    ),
    ("lei:KGCEPHLVVKVRZYO1T647", SubjectType.ORGANISATION, ["lei:kgcephlvvkvrzyo1t647"]),
    ("lei:969500KSV493XWY0PS33", SubjectType.ORGANISATION, ["lei:969500-KSV493-XWY0PS-33"]),
    ("lei:5493001KJTIIGC8Y1R12", SubjectType.ORGANISATION, ["lei:5493001KJTIIGC8Y1R12"]),
    (
        "reg:GB:01234567",
        SubjectType.ORGANISATION,
        [
            "reg:GB:01234567",
            "REG: gb : 0123-4567",
            "reg:gb:0123.4567",
            _fullwidth("reg:GB:") + "01234567",
        ],
    ),
    ("reg:DE:HRB12345", SubjectType.ORGANISATION, ["reg:de:HRB 12345"]),
    ("reg:FR:1", SubjectType.ORGANISATION, ["reg:fr:1"]),
]

SPELLINGS = [
    pytest.param(spelling, canonical, subject_type, id=f"{canonical}<-{index}")
    for canonical, subject_type, spellings in VALID
    for index, spelling in enumerate(spellings)
]


@pytest.mark.parametrize(("spelling", "canonical", "subject_type"), SPELLINGS)
def test_spellings_normalise_to_the_canonical_form(
    spelling: str, canonical: str, subject_type: SubjectType
) -> None:
    normalised = normalise(spelling)
    assert normalised.canonical == canonical
    assert normalised.subject_type is subject_type
    assert f"{normalised.scheme}:{normalised.value}" == canonical


@pytest.mark.parametrize(("canonical", "subject_type", "spellings"), VALID)
def test_spellings_give_one_ref(
    canonical: str, subject_type: SubjectType, spellings: list[str]
) -> None:
    refs = {ref_for(KEY, spelling) for spelling in spellings}
    assert refs == {subject_ref(KEY, normalise(canonical))}
    (ref,) = refs
    assert ref.subject_type is subject_type


def test_normalisation_is_idempotent() -> None:
    for canonical, _, spellings in VALID:
        for spelling in spellings:
            assert normalise(normalise(spelling).canonical).canonical == canonical


def test_scheme_subject_types_are_fixed() -> None:
    assert dict(SCHEME_SUBJECT_TYPES) == {
        "cn-rid": SubjectType.PERSON,
        "nin": SubjectType.PERSON,
        "cn-uscc": SubjectType.ORGANISATION,
        "lei": SubjectType.ORGANISATION,
        "reg": SubjectType.ORGANISATION,
    }
    with pytest.raises(TypeError):
        SCHEME_SUBJECT_TYPES["passport"] = SubjectType.PERSON  # type: ignore[index]


def test_subject_type_values() -> None:
    assert SubjectType("person") is SubjectType.PERSON
    assert SubjectType("organisation") is SubjectType.ORGANISATION


def test_normalised_id_repr_hides_the_value() -> None:
    normalised = normalise("cn-rid:11010519491231002X")
    assert "11010519491231002X" not in repr(normalised)
    assert "cn-rid" in repr(normalised)


# --- broken rules ----------------------------------------------------------

INVALID = [
    ("11010519491231002X", r"^identifier has no scheme; write it as '<scheme>:<value>' \(known: "),
    ("foo:12345", r"^unknown scheme 'foo' \(known: cn-rid, nin, cn-uscc, lei, reg\)$"),
    ("PASSPORT:12345", r"^unknown scheme 'passport' \("),
    # Something that is not a scheme name (here digits) is not echoed.
    ("110105:19491231002X", r"^the part before ':' is not a known scheme \(known: "),
    (":12345", r"^the part before ':' is not a known scheme"),
    ("nin: - . ", r"^nin value is empty$"),
    ("cn-rid:", r"^cn-rid value is empty$"),
    # Dotless i would uppercase to I; refused rather than aliased.
    ("nin:AB\u0131C1234", r"^nin character 3 is '\u0131', expected an ASCII letter or digit$"),
    ("nin:AB\u00e9C1234", r"^nin character 3 is '\u00e9', expected an ASCII letter or digit$"),
    ("cn-rid:11010519491231002", r"^cn-rid must be 18 characters after normalisation, got 17$"),
    ("cn-rid:110105491231002", r"^cn-rid must be 18 characters after normalisation, got 15$"),
    ("cn-rid:11010519491231002XX", r"^cn-rid must be 18 characters after normalisation, got 19$"),
    ("cn-rid:1101051949123100AX", r"^cn-rid character 17 is 'A', expected a digit$"),
    ("cn-rid:X10105194912310025", r"^cn-rid character 1 is 'X', expected a digit$"),
    ("cn-rid:11010519491231_02X", r"^cn-rid character 15 is '_', expected a digit$"),
    ("cn-rid:11010519491231018X", r"^cn-rid check character is X, expected 5$"),
    ("cn-rid:110105194912310020", r"^cn-rid check character is 0, expected X$"),
    ("cn-rid:11010519491331002X", r"^cn-rid birth date 19491331 is not a real date$"),
    ("cn-rid:11010519490229002X", r"^cn-rid birth date 19490229 is not a real date$"),
    ("cn-rid:11010500001231002X", r"^cn-rid birth date 00001231 is not a real date$"),
    ("cn-rid:11010519491200002X", r"^cn-rid birth date 19491200 is not a real date$"),
    ("nin:AB1", r"^nin must be 4 to 32 characters after normalisation, got 3$"),
    ("nin:A" + "1" * 32, r"^nin must be 4 to 32 characters after normalisation, got 33$"),
    ("nin:AB_12345", r"^nin character 3 is '_', expected A-Z or 0-9$"),
    ("nin:AB12:345", r"^nin character 5 is ':', expected A-Z or 0-9$"),
    ("cn-uscc:91350100M000100Y4", r"^cn-uscc must be 18 characters after normalisation, got 17$"),
    (
        "cn-uscc:91350100M000100I43",
        r"^cn-uscc character 16 is 'I', expected one of 0-9 A-H J-N P-R T-U W-Y$",
    ),
    ("cn-uscc:O1350100M000100Y43", r"^cn-uscc character 1 is 'O', expected one of"),
    ("cn-uscc:91350100S000100Y43", r"^cn-uscc character 9 is 'S', expected one of"),
    # GB 32100-2015's own counter-example: Z where the check character is 3.
    ("cn-uscc:91350100M000100Y4Z", r"^cn-uscc check character is Z, expected 3$"),
    ("cn-uscc:91350100M000100Y44", r"^cn-uscc check character is 4, expected 3$"),
    ("cn-uscc:91350100M0000090YY", r"^cn-uscc check character is Y, expected 0$"),
    ("lei:7H6GLXDRUGQFU57RNE9", r"^lei must be 20 characters after normalisation, got 19$"),
    ("lei:7H6GLXDRUGQFU57R_E97", r"^lei character 17 is '_', expected A-Z or 0-9$"),
    ("lei:969500KSV493XWY0PS34", r"^lei check digits are 34, expected 33$"),
    ("lei:969500KSV493XWY0SP33", r"^lei check digits are 33, expected \d\d$"),
    ("lei:969500KSV493XWY0PS3A", r"^lei check digits are 3A, expected 33$"),
    (
        "reg:01234567",
        r"^reg value must be '<country>:<number>' with an ISO 3166 alpha-2 country code$",
    ),
    ("reg:GBR:01234567", r"^reg country must be an ISO 3166 alpha-2 code .*, got 3 characters$"),
    ("reg:G1:01234567", r"^reg country must be an ISO 3166 alpha-2 code .*, got 'G1'$"),
    ("reg::01234567", r"^reg country must be an ISO 3166 alpha-2 code .*, got ''$"),
    # Two letters, but no country: unassigned and user-assigned codes.
    ("reg:XX:123", r"^reg country must be an ISO 3166 alpha-2 code .*, got 'XX'$"),
    ("reg:ZZ:123", r"^reg country must be an ISO 3166 alpha-2 code .*, got 'ZZ'$"),
    ("reg:UK:123", r"^reg country must be an ISO 3166 alpha-2 code .*, got 'UK'$"),
    ("reg:GB:", r"^reg number must be 1 to 32 characters after normalisation, got 0$"),
    ("reg:GB:" + "1" * 33, r"^reg number must be 1 to 32 characters after normalisation, got 33$"),
    ("reg:GB:0123_4567", r"^reg number character 5 is '_', expected A-Z or 0-9$"),
    ("reg:GB:0123:4567", r"^reg number character 5 is ':', expected A-Z or 0-9$"),
]


@pytest.mark.parametrize(("identifier", "message"), INVALID)
def test_each_broken_rule_is_named(identifier: str, message: str) -> None:
    with pytest.raises(InvalidIdentifier, match=message) as caught:
        ref_for(KEY, identifier)
    # The error maps to INVALID_ARGUMENT through the InvalidInput branch.
    assert isinstance(caught.value, InvalidInput)


@pytest.mark.parametrize(("identifier", "message"), INVALID)
def test_messages_never_repeat_the_identifier(identifier: str, message: str) -> None:
    with pytest.raises(InvalidIdentifier, match=message) as caught:
        normalise(identifier)
    text = str(caught.value)
    _, _, value = identifier.partition(":")
    squeezed = "".join(value.split()).replace("-", "").replace(".", "").upper()
    for secret in {identifier.strip(), value.strip(), squeezed} - {""}:
        if len(secret) >= 4:
            assert secret not in text
            assert secret.lower() not in text


def test_wrong_check_characters_are_refused_at_every_value() -> None:
    # A substituted check character never validates: the check is exact.
    body = "11010519491231002"
    for char in "0123456789":
        with pytest.raises(InvalidIdentifier, match="check character"):
            normalise(f"cn-rid:{body}{char}")
    for char in "0124ABCDEFGHJKLMNPQRTUWXY":
        with pytest.raises(InvalidIdentifier, match="check character"):
            normalise(f"cn-uscc:91350100M000100Y4{char}")


def test_single_substitutions_in_a_lei_are_caught() -> None:
    valid = "969500KSV493XWY0PS33"
    for position in range(18):
        original = valid[position]
        replacement = "7" if original != "7" else "8"
        mutated = valid[:position] + replacement + valid[position + 1 :]
        with pytest.raises(InvalidIdentifier, match=r"^lei check digits are 33, expected"):
            normalise(f"lei:{mutated}")


# --- subject references ----------------------------------------------------


def test_hmac_helper_matches_rfc_4231_test_case_2() -> None:
    assert _hmac_sha256(b"Jefe", b"what do ya want for nothing?").hex() == (
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )


def test_known_reference_value() -> None:
    key_bytes = bytes(range(32))
    message = b"credence-subject-v1\x00" + b"cn-rid:11010519491231002X"
    expected = _hmac_sha256(key_bytes, message)
    assert expected.hex() == "18f6aa4cbce637fca5510f28063891f4e7ecb2ebaa0ad30aa6411331241df124"
    ref = ref_for(PseudonymisationKey.from_bytes(key_bytes), " cn-rid:110105-19491231-002x ")
    assert ref == SubjectRef(SubjectType.PERSON, expected)
    assert SUBJECT_REF_DOMAIN == b"credence-subject-v1\x00"


def test_reference_matches_independent_hmac_for_every_scheme() -> None:
    for canonical, subject_type, _ in VALID:
        ref = subject_ref(KEY, normalise(canonical))
        assert ref.ref == _hmac_sha256(bytes(range(32)), SUBJECT_REF_DOMAIN + canonical.encode())
        assert ref.subject_type is subject_type


def test_refs_differ_across_keys() -> None:
    identifier = "cn-uscc:91350100M000100Y43"
    assert ref_for(KEY, identifier) != ref_for(OTHER_KEY, identifier)
    assert ref_for(KEY, identifier).ref != ref_for(OTHER_KEY, identifier).ref


def test_refs_differ_across_schemes_with_the_same_value() -> None:
    person = ref_for(KEY, "cn-rid:11010519491231002X")
    generic = ref_for(KEY, "nin:11010519491231002X")
    assert person.subject_type is generic.subject_type is SubjectType.PERSON
    assert person.ref != generic.ref
    # The same register number in two countries is two subjects.
    assert ref_for(KEY, "reg:GB:01234567").ref != ref_for(KEY, "reg:IE:01234567").ref


def test_refs_of_different_subjects_differ() -> None:
    refs = {subject_ref(KEY, normalise(canonical)).ref for canonical, _, _ in VALID}
    assert len(refs) == len(VALID)


def test_a_key_is_reusable_across_many_refs() -> None:
    # The key keeps a prefixed HMAC state; every reference must start from it afresh.
    first = ref_for(KEY, "nin:AB1234CD")
    for _ in range(3):
        ref_for(KEY, "lei:969500KSV493XWY0PS33")
    assert ref_for(KEY, "nin:AB1234CD") == first


def test_subject_ref_hex_round_trip() -> None:
    ref = ref_for(KEY, "lei:969500KSV493XWY0PS33")
    text = ref.hex()
    assert len(text) == 64
    assert text == text.lower()
    assert SubjectRef.from_hex(SubjectType.ORGANISATION, text) == ref
    assert SubjectRef.from_hex(SubjectType.ORGANISATION, text.upper()) == ref


@pytest.mark.parametrize(
    "text",
    [
        "",
        "ab" * 31,
        "ab" * 33,
        "zz" * 32,
        "ab " * 21 + "a",
        " " + "ab" * 31 + "a",
        "0x" + "ab" * 31,
    ],
)
def test_subject_ref_from_hex_is_strict(text: str) -> None:
    with pytest.raises(InvalidInput, match=r"^a subject reference is 64 hex digits, got \d+ "):
        SubjectRef.from_hex(SubjectType.PERSON, text)


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_subject_ref_must_be_32_bytes(size: int) -> None:
    with pytest.raises(InvalidInput, match=f"^a subject reference is 32 bytes, got {size}$"):
        SubjectRef(SubjectType.PERSON, bytes(size))


# --- pseudonymisation key --------------------------------------------------


@pytest.mark.parametrize("size", [0, 16, 31])
def test_short_key_is_refused(size: int) -> None:
    with pytest.raises(
        InvalidInput, match=f"^a pseudonymisation key is at least 32 bytes, got {size}$"
    ):
        PseudonymisationKey.from_bytes(bytes(size))
    with pytest.raises(InvalidInput, match="at least 32 bytes"):
        PseudonymisationKey(bytes(size))


def test_key_of_32_bytes_or_more_is_accepted() -> None:
    assert PseudonymisationKey.from_bytes(bytearray(32)).secret == bytes(32)
    assert len(PseudonymisationKey.from_bytes(bytes(64)).secret) == 64


def test_generated_keys_are_fresh_32_bytes() -> None:
    first, second = PseudonymisationKey.generate(), PseudonymisationKey.generate()
    assert len(first.secret) == 32
    assert first.secret != second.secret
    assert ref_for(first, "nin:AB1234CD") != ref_for(second, "nin:AB1234CD")


def test_key_repr_hides_the_secret() -> None:
    key = PseudonymisationKey.from_bytes(bytes(range(32)))
    text = repr(key)
    assert text == "PseudonymisationKey(<32 secret bytes>)"
    assert key.secret.hex() not in text
    assert repr(key.secret) not in text
    assert str(key) == text


def test_keys_compare_by_secret() -> None:
    assert PseudonymisationKey.from_bytes(bytes(range(32))) == KEY
    assert KEY != OTHER_KEY


def test_normalised_id_fields() -> None:
    normalised = normalise("reg: de : hrb 12345")
    assert normalised == NormalisedId("reg", "DE:HRB12345", SubjectType.ORGANISATION)
