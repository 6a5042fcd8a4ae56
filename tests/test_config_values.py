"""One typed reader for both servers' TOML configs: the same refusals in either file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agency_node import config as node_config
from central_registry import config as registry_config
from credence.config_values import config_value
from credence.errors import InvalidInput


def test_a_present_value_of_the_right_type_is_returned_and_an_absent_one_defaults() -> None:
    table = {"workers": 4, "rate": 2.5}
    assert config_value("x.toml", table, "workers", int, 8) == 4
    assert config_value("x.toml", table, "rate", (int, float), 1) == 2.5
    assert config_value("x.toml", table, "missing", int, 8) == 8


@pytest.mark.parametrize(
    ("value", "kind", "message"),
    [
        ("8", int, "x.toml: 'key' must be int, got '8'"),
        (True, int, "x.toml: 'key' must be int, got True"),
        (True, (int, float), "x.toml: 'key' must be int or float, got True"),
        (3, str, "x.toml: 'key' must be str, got 3"),
    ],
)
def test_a_value_of_the_wrong_type_is_refused_naming_the_key_and_the_type(
    value: Any, kind: type | tuple[type, ...], message: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        config_value("x.toml", {"key": value}, "key", kind, None)
    assert str(caught.value) == message


def test_a_boolean_is_still_a_boolean() -> None:
    assert config_value("x.toml", {"flag": False}, "flag", bool, True) is False


def test_both_servers_refuse_a_boolean_where_a_number_goes(tmp_path: Path) -> None:
    node_toml = '[node]\nmember_id = "court-1"\ngrace_seconds = true\n'
    with pytest.raises(InvalidInput, match=r"node\.toml: 'grace_seconds' must be int or float"):
        node_config.parse_config(node_toml, tmp_path, environ={})
    registry_toml = "[registry]\ngrace_seconds = true\n"
    with pytest.raises(InvalidInput, match=r"registry\.toml: 'grace_seconds' must be int or float"):
        registry_config.parse_config(registry_toml, tmp_path, environ={})
