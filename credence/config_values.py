"""Typed values out of a parsed TOML config, shared by ``node.toml`` and ``registry.toml``.

``tomllib`` gives untyped tables; these helpers check each value's type where
it is read, so a wrong value is refused with the file, the key and what it
should have been, never carried into the server as the wrong type.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from credence.errors import InvalidInput

__all__ = ["config_value"]


def config_value(
    source: str, table: Mapping[str, Any], key: str, kind: type | tuple[type, ...], default: Any
) -> Any:
    """``table[key]`` (or ``default`` when absent), refused unless it is a ``kind``.

    A TOML boolean is refused where a number is expected, although Python's
    ``bool`` is an ``int``: ``workers = true`` is a mistake, not one worker.

    Args:
        source: the config file's name, for the error message.
        table: the parsed TOML table holding ``key``.
        key: the key to read.
        kind: the type (or types) the value must have.
        default: the value when ``key`` is absent.

    Raises:
        InvalidInput: the value is not a ``kind``; the message names the key
            and the type it must have.
    """
    value = table.get(key, default)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        kinds = kind if isinstance(kind, tuple) else (kind,)
        wanted = " or ".join(item.__name__ for item in kinds)
        raise InvalidInput(f"{source}: '{key}' must be {wanted}, got {value!r}")
    return value
