r"""Subjects: identifier normalisation and pseudonymous subject references.

A subject is a person or an organisation. Outside the federation it is named by
a scheme-qualified identifier, ``<scheme>:<value>``, so that numbers from
different countries and registers never collide:

=========== ============ ======================================================
scheme      subject      value
=========== ============ ======================================================
``cn-rid``  person       Chinese resident identity number (GB 11643): 17 digits
                         and an ISO 7064 MOD 11-2 check character (0-9 or X);
                         positions 7-14 are a real birth date YYYYMMDD
``nin``     person       generic national identity number: 4 to 32 of A-Z 0-9
``cn-uscc`` organisation Unified Social Credit Code (GB 32100-2015): 18
                         characters of 0-9 A-H J-N P-R T-U W-Y, the last a check
                         character under weights 3^(i-1) mod 31
``lei``     organisation Legal Entity Identifier (ISO 17442): 20 of A-Z 0-9,
                         the last two ISO 7064 MOD 97-10 check digits
``reg``     organisation generic company register, ``<country>:<number>``: an
                         ISO 3166 alpha-2 code and 1 to 32 of A-Z 0-9
=========== ============ ======================================================

Normalisation rules, applied in this order by :func:`normalise`:

1. Unicode NFKC, so full-width digits, letters and colons typed with an East
   Asian input method become their ASCII forms.
2. Strip whitespace around the identifier.
3. Split at the first ``:`` into scheme and value; an identifier without one
   is refused.
4. Strip and lowercase the scheme; it must be one of the known schemes.
5. Remove every whitespace character, hyphen (``-`` and U+2010) and dot from
   the value (never from the scheme: ``cn-rid`` keeps its hyphen).
6. The value must now be non-empty ASCII: Unicode case mapping could
   otherwise turn a non-ASCII letter into an ASCII one (dotless i, U+0131,
   into ``I``) and let two unrelated spellings name one subject.
7. Uppercase the value.
8. Apply the scheme's own rules (length, alphabet, birth date, check
   characters); positions in messages count from 1 in the normalised value.

An identifier that breaks a rule raises :class:`~credence.errors.InvalidIdentifier`
whose message names the scheme and the broken rule and never repeats the whole
identifier, which is personal data; at most one character, the check
character or the birth date appears.

Inside the federation a subject is a :class:`SubjectRef`: HMAC-SHA256 under
the federation's :class:`PseudonymisationKey` of::

    b"credence-subject-v1\x00" + canonical.encode()

where ``canonical`` is ``<scheme>:<value>`` after normalisation. The prefix
separates these MACs from any other use of the same key, and its version
lets a future rule change produce references that cannot be mistaken for
these. The scheme is inside the MAC, so the same value under two schemes gives
two references, and since a scheme fixes the subject type the type needs no
bytes of its own.
"""

from __future__ import annotations

import datetime
import enum
import functools
import hashlib
import hmac
import operator
import re
import secrets
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from credence.errors import InvalidIdentifier, InvalidInput

__all__ = [
    "SCHEME_SUBJECT_TYPES",
    "SUBJECT_REF_DOMAIN",
    "NormalisedId",
    "PseudonymisationKey",
    "SubjectRef",
    "SubjectType",
    "normalise",
    "ref_for",
    "subject_ref",
]

SUBJECT_REF_DOMAIN = b"credence-subject-v1\x00"
"""Domain-separation prefix of every subject reference MAC input."""

KEY_BYTES = 32
REF_BYTES = 32


class SubjectType(enum.Enum):
    """Whether a subject is a natural person or an organisation."""

    PERSON = "person"
    ORGANISATION = "organisation"


@dataclass(frozen=True, slots=True)
class NormalisedId:
    """An identifier in canonical form; build it with :func:`normalise`.

    The value is personal data, so it is left out of ``repr`` to keep it out
    of logs and tracebacks.
    """

    scheme: str
    value: str = field(repr=False)
    subject_type: SubjectType

    @property
    def canonical(self) -> str:
        """``<scheme>:<value>``, the exact text a subject reference is computed over."""
        return f"{self.scheme}:{self.value}"


# --- scheme rules ----------------------------------------------------------

_ALNUM = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_ALNUM_RE = re.compile(r"[0-9A-Z]+")

# GB 11643 / ISO 7064 MOD 11-2: weight 2^(18-i) mod 11 for position i, and the
# check character indexed by the weighted sum mod 11.
_RID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_RID_CHECK = "10X98765432"
_RID_BODY_RE = re.compile(r"[0-9]{17}")
# Weighted sums are taken over the ASCII codes, C-speed: each code's offset
# from its value (48 for a digit) adds this much, removed mod 11.
_RID_OFFSET = 48 * sum(_RID_WEIGHTS)

# GB 32100-2015: 31 characters (no I, O, S, V, Z), valued by their index, and
# weight 3^(i-1) mod 31 for position i.
_USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_VALUES = {char: index for index, char in enumerate(_USCC_ALPHABET)}
_USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
_USCC_BODY_RE = re.compile(r"[0-9A-HJ-NP-RTUWXY]{17}")

# ISO 7064 MOD 97-10 as ISO 17442 uses it: letters become 10..35.
_LEI_EXPAND = str.maketrans({chr(ord("A") + i): str(10 + i) for i in range(26)})

#: The 249 officially assigned ISO 3166-1 alpha-2 country codes (Debian
#: iso-codes 4.x, which follows the ISO 3166 Maintenance Agency). User-assigned
#: codes (AA, QM-QZ, XA-XZ, ZZ) and reserved ones are not countries.
ISO_3166_ALPHA_2 = frozenset(
    (  # noqa: SIM905 - 249 codes read better as text than as a list
        "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN "
        "BO BQ BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ "
        "DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL "
        "GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM "
        "JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME "
        "MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP "
        "NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD "
        "SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO "
        "TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW"
    ).split()
)
_ASCII = frozenset(chr(code) for code in range(128))
_HEX_RE = re.compile(r"[0-9a-fA-F]+")

# Rule 5; whitespace is removed separately with str.split().
_SEPARATORS = str.maketrans("", "", "-\u2010.")
# A value that is already canonical (the common case in bulk imports) is
# ASCII letters and digits, an uppercase letter or a digit first, and maybe
# reg's colon: nothing to strip, remove or uppercase.
_CANONICAL_VALUE_RE = re.compile(r"[0-9A-Z:]+")
# Birth dates repeat across millions of identifiers; a date is checked once.
_DATE_MEMO = 65_536


def _require_length(scheme: str, value: str, low: int, high: int) -> None:
    if not low <= len(value) <= high:
        wanted = str(low) if low == high else f"{low} to {high}"
        raise InvalidIdentifier(
            f"{scheme} must be {wanted} characters after normalisation, got {len(value)}"
        )


def _bad_character(scheme: str, value: str, allowed: frozenset[str], wanted: str) -> None:
    """Raise for the first character of ``value`` outside ``allowed``, if any."""
    for position, char in enumerate(value, start=1):
        if char not in allowed:
            raise InvalidIdentifier(f"{scheme} character {position} is {char!r}, expected {wanted}")


def _check_cn_rid(value: str) -> str:
    _require_length("cn-rid", value, 18, 18)
    body = value[:17]
    if not _RID_BODY_RE.fullmatch(body):
        _bad_character("cn-rid", body, frozenset("0123456789"), "a digit")
    birth = body[6:14]
    if not _real_date(birth):
        raise InvalidIdentifier(f"cn-rid birth date {birth} is not a real date")
    total = sum(map(operator.mul, body.encode(), _RID_WEIGHTS)) - _RID_OFFSET
    expected = _RID_CHECK[total % 11]
    if value[17] != expected:
        raise InvalidIdentifier(f"cn-rid check character is {value[17]}, expected {expected}")
    return value


@functools.lru_cache(maxsize=_DATE_MEMO)
def _real_date(digits: str) -> bool:
    """Whether eight digits YYYYMMDD name a real date."""
    try:
        datetime.date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
    except ValueError:
        return False
    return True


def _check_nin(value: str) -> str:
    _require_length("nin", value, 4, 32)
    if not _ALNUM_RE.fullmatch(value):
        _bad_character("nin", value, _ALNUM, "A-Z or 0-9")
    return value


def _check_cn_uscc(value: str) -> str:
    _require_length("cn-uscc", value, 18, 18)
    values = _USCC_VALUES
    body = value[:17]
    # The check character is left to the comparison below, whose message
    # names the expected character.
    if not _USCC_BODY_RE.fullmatch(body):
        _bad_character("cn-uscc", body, frozenset(values), "one of 0-9 A-H J-N P-R T-U W-Y")
    total = sum(map(operator.mul, map(values.__getitem__, body), _USCC_WEIGHTS))
    expected = _USCC_ALPHABET[-total % 31]
    if value[17] != expected:
        raise InvalidIdentifier(f"cn-uscc check character is {value[17]}, expected {expected}")
    return value


def _check_lei(value: str) -> str:
    _require_length("lei", value, 20, 20)
    if not _ALNUM_RE.fullmatch(value):
        _bad_character("lei", value, _ALNUM, "A-Z or 0-9")
    # The check digits make the whole expanded number 1 mod 97 (ISO 7064 MOD 97-10).
    expected = f"{98 - int((value[:18] + '00').translate(_LEI_EXPAND)) % 97:02d}"
    if value[18:] != expected:
        raise InvalidIdentifier(f"lei check digits are {value[18:]}, expected {expected}")
    return value


def _check_reg(value: str) -> str:
    country, sep, number = value.partition(":")
    if not sep:
        raise InvalidIdentifier(
            "reg value must be '<country>:<number>' with an ISO 3166 alpha-2 country code"
        )
    if country not in ISO_3166_ALPHA_2:
        shown = f"{country!r}" if len(country) <= 2 else f"{len(country)} characters"
        raise InvalidIdentifier(
            "reg country must be an ISO 3166 alpha-2 code (an assigned country such as "
            f"CN, DE or GB), got {shown}"
        )
    if not 1 <= len(number) <= 32:
        raise InvalidIdentifier(
            f"reg number must be 1 to 32 characters after normalisation, got {len(number)}"
        )
    if not _ALNUM_RE.fullmatch(number):
        _bad_character("reg number", number, _ALNUM, "A-Z or 0-9")
    return value


@dataclass(frozen=True, slots=True)
class _Scheme:
    subject_type: SubjectType
    check: Callable[[str], str]


_SCHEMES: dict[str, _Scheme] = {
    "cn-rid": _Scheme(SubjectType.PERSON, _check_cn_rid),
    "nin": _Scheme(SubjectType.PERSON, _check_nin),
    "cn-uscc": _Scheme(SubjectType.ORGANISATION, _check_cn_uscc),
    "lei": _Scheme(SubjectType.ORGANISATION, _check_lei),
    "reg": _Scheme(SubjectType.ORGANISATION, _check_reg),
}
_KNOWN = ", ".join(_SCHEMES)
# A scheme is echoed in a message only if it looks like a scheme name; a
# mistyped identifier such as "110105:..." would otherwise leak its digits.
_SCHEME_NAME_RE = re.compile(r"[a-z][a-z0-9-]{0,15}")

SCHEME_SUBJECT_TYPES: Mapping[str, SubjectType] = MappingProxyType(
    {name: scheme.subject_type for name, scheme in _SCHEMES.items()}
)
"""Each known scheme and the subject type it names."""


def normalise(identifier: str) -> NormalisedId:
    """Bring an identifier to canonical form and check it against its scheme.

    Args:
        identifier: ``<scheme>:<value>``, e.g. ``cn-uscc:91350100M000100Y43``.

    Returns:
        The canonical identifier with its subject type.

    Raises:
        InvalidIdentifier: a rule of the module docstring is broken; the
            message says which, without repeating the identifier.
    """
    scheme_name, value, scheme = _canonical(identifier)
    return NormalisedId(scheme_name, value, scheme.subject_type)


def _canonical(identifier: str) -> tuple[str, str, _Scheme]:
    """(scheme name, checked canonical value, scheme) of a raw identifier.

    Raises:
        InvalidIdentifier: as :func:`normalise`.
    """
    # NFKC leaves ASCII text as it is.
    text = (
        identifier if identifier.isascii() else unicodedata.normalize("NFKC", identifier)
    ).strip()
    scheme_part, sep, raw_value = text.partition(":")
    if not sep:
        raise InvalidIdentifier(
            f"identifier has no scheme; write it as '<scheme>:<value>' (known: {_KNOWN})"
        )
    scheme_name = scheme_part.strip().lower()
    scheme = _SCHEMES.get(scheme_name)
    if scheme is None:
        if _SCHEME_NAME_RE.fullmatch(scheme_name):
            raise InvalidIdentifier(f"unknown scheme {scheme_name!r} (known: {_KNOWN})")
        raise InvalidIdentifier(f"the part before ':' is not a known scheme (known: {_KNOWN})")
    if _CANONICAL_VALUE_RE.fullmatch(raw_value):
        # Rules 5 to 7 would leave it as it is.
        return scheme_name, scheme.check(raw_value), scheme
    value = "".join(raw_value.split()).translate(_SEPARATORS)
    if not value:
        raise InvalidIdentifier(f"{scheme_name} value is empty")
    if not value.isascii():
        _bad_character(scheme_name, value, _ASCII, "an ASCII letter or digit")
    return scheme_name, scheme.check(value.upper()), scheme


# --- references ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PseudonymisationKey:
    """The federation's secret key for subject references (at least 32 bytes)."""

    secret: bytes = field(repr=False)
    # HMAC state after the domain prefix, copied per reference: cheaper than
    # keying a fresh HMAC for every one of millions of identifiers.
    _prefixed: hmac.HMAC = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.secret) < KEY_BYTES:
            raise InvalidInput(
                f"a pseudonymisation key is at least {KEY_BYTES} bytes, got {len(self.secret)}"
            )
        object.__setattr__(
            self, "_prefixed", hmac.new(self.secret, SUBJECT_REF_DOMAIN, hashlib.sha256)
        )

    @classmethod
    def generate(cls) -> PseudonymisationKey:
        """A fresh 32-byte key from the operating system's random source."""
        return cls(secrets.token_bytes(KEY_BYTES))

    @classmethod
    def from_bytes(cls, secret: bytes | bytearray | memoryview) -> PseudonymisationKey:
        """Wrap key bytes received from the registry.

        Raises:
            InvalidInput: fewer than 32 bytes.
        """
        return cls(bytes(secret))

    def _mac(self, canonical: bytes) -> bytes:
        mac = self._prefixed.copy()
        mac.update(canonical)
        return mac.digest()

    def __repr__(self) -> str:
        return f"PseudonymisationKey(<{len(self.secret)} secret bytes>)"


@dataclass(frozen=True, slots=True)
class SubjectRef:
    """A subject inside the federation: its type and a 32-byte keyed hash."""

    subject_type: SubjectType
    ref: bytes

    def __post_init__(self) -> None:
        if len(self.ref) != REF_BYTES:
            raise InvalidInput(f"a subject reference is {REF_BYTES} bytes, got {len(self.ref)}")

    def hex(self) -> str:
        """The reference as 64 lowercase hex digits."""
        return self.ref.hex()

    @classmethod
    def from_hex(cls, subject_type: SubjectType, text: str) -> SubjectRef:
        """Read a reference written by :meth:`hex`.

        Raises:
            InvalidInput: not exactly 64 hex digits.
        """
        if len(text) != 2 * REF_BYTES or not _HEX_RE.fullmatch(text):
            raise InvalidInput(
                f"a subject reference is {2 * REF_BYTES} hex digits, got {len(text)} characters"
                " of 0-9 a-f"
            )
        return cls(subject_type, bytes.fromhex(text))


def subject_ref(key: PseudonymisationKey, normalised: NormalisedId) -> SubjectRef:
    """The federation-internal reference of a normalised identifier.

    Returns:
        HMAC-SHA256(key, ``SUBJECT_REF_DOMAIN`` + canonical) with the subject type.
    """
    return SubjectRef(normalised.subject_type, key._mac(normalised.canonical.encode()))


def ref_for(key: PseudonymisationKey, identifier: str) -> SubjectRef:
    """Normalise a raw identifier and return its subject reference.

    Raises:
        InvalidIdentifier: the identifier breaks a normalisation rule.
    """
    scheme_name, value, scheme = _canonical(identifier)
    return SubjectRef(scheme.subject_type, key._mac(f"{scheme_name}:{value}".encode()))
