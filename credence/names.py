"""Text names of the wire enums, as tokens, configs and logs spell them.

Tokens and configuration files name purposes and verdict kinds in lower case
(``counterparty_verification``, ``blacklist``); the wire uses the proto enums.
"""

from __future__ import annotations

from credence.errors import InvalidInput
from credence.v1 import common_pb2


def _table(prefix: str, items: list[tuple[str, int]]) -> dict[int, str]:
    return {
        value: name.removeprefix(prefix).lower()
        for name, value in items
        if not name.endswith("_UNSPECIFIED")
    }


_PURPOSES = _table("PURPOSE_", list(common_pb2.Purpose.items()))
_KINDS = _table("VERDICT_KIND_", list(common_pb2.VerdictKind.items()))
_PURPOSE_VALUES = {name: value for value, name in _PURPOSES.items()}
_KIND_VALUES = {name: value for value, name in _KINDS.items()}

PURPOSE_NAMES = frozenset(_PURPOSE_VALUES)
KIND_NAMES = frozenset(_KIND_VALUES)
#: Enum numbers with a name (everything but UNSPECIFIED and unknown numbers).
PURPOSE_VALUES = frozenset(_PURPOSES)
KIND_VALUES = frozenset(_KINDS)


def purpose_name(value: int) -> str:
    """``PURPOSE_CREDIT_ASSESSMENT`` -> ``"credit_assessment"``.

    Raises:
        InvalidInput: unspecified or unknown purpose.
    """
    try:
        return _PURPOSES[value]
    except KeyError:
        raise InvalidInput(f"purpose {value} is unspecified or unknown") from None


def purpose_value(name: str) -> common_pb2.Purpose.ValueType:
    """``"credit_assessment"`` -> ``PURPOSE_CREDIT_ASSESSMENT``.

    Raises:
        InvalidInput: unknown name.
    """
    try:
        return common_pb2.Purpose.ValueType(_PURPOSE_VALUES[name])
    except KeyError:
        raise InvalidInput(f"unknown purpose {name!r} (known: {sorted(PURPOSE_NAMES)})") from None


def kind_name(value: int) -> str:
    """``VERDICT_KIND_BLACKLIST`` -> ``"blacklist"``.

    Raises:
        InvalidInput: unspecified or unknown kind.
    """
    try:
        return _KINDS[value]
    except KeyError:
        raise InvalidInput(f"verdict kind {value} is unspecified or unknown") from None


def kind_value(name: str) -> common_pb2.VerdictKind.ValueType:
    """``"blacklist"`` -> ``VERDICT_KIND_BLACKLIST``.

    Raises:
        InvalidInput: unknown name.
    """
    try:
        return common_pb2.VerdictKind.ValueType(_KIND_VALUES[name])
    except KeyError:
        raise InvalidInput(f"unknown verdict kind {name!r} (known: {sorted(KIND_NAMES)})") from None
