"""A registry initialised as its operator would, served in this process.

``credence registry init`` on loopback ports (0: the kernel picks), then
``registry.toml`` keys replaced, so a suite can tighten a limit or shorten a
deadline without writing a configuration of its own.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from central_registry.server import RegistryThread
from credence.cli import main

# No console unless a test asks for one (RegistryThread(console_listen=...)).
LOOPBACK = (
    "--listen", "127.0.0.1:0", "--public-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
    "--console-listen", "",
)  # fmt: skip


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run(*args: str | Path) -> None:
    """``credence ARGS`` in this process; fails the test unless it exits 0."""
    code = main([str(arg) for arg in args])
    assert code == 0, f"credence {' '.join(map(str, args))} exited {code}"


def _toml(value: object) -> str:
    # Numbers as written (``1e-05`` stays a float), strings and booleans as TOML.
    if isinstance(value, bool | str):
        return json.dumps(value)
    return str(value)


def set_config(config: Path, values: Mapping[str, object], *, table: str | None = None) -> None:
    """Replace ``key = ...`` lines of ``config`` (each must occur once, in ``table`` if given)."""
    text = config.read_text()
    head, body = "", text
    if table is not None:
        head, marker, body = text.partition(f"[{table}]\n")
        assert marker, f"{config} has no [{table}] table"
        head += marker
        # Only up to the next table: the same key may be set elsewhere.
        body, nxt, rest = body.partition("\n[")
        rest = nxt + rest
    else:
        rest = ""
    for key, value in values.items():
        body, count = re.subn(rf"(?m)^{key} = .*$", f"{key} = {_toml(value)}", body)
        assert count == 1, f"{key} not in {config}" + (f" [{table}]" if table else "")
    config.write_text(head + body + rest)


def init_registry(
    directory: Path,
    settings: Mapping[str, object] | None = None,
    *,
    public: Mapping[str, object] | None = None,
) -> Path:
    """``credence registry init`` on loopback, ``settings`` and ``[public]`` keys replaced."""
    run("registry", "init", "--dir", directory, *LOOPBACK)
    config = directory / "registry.toml"
    # Witnessing rounds often enough that a node started by a test answers soon.
    set_config(config, {"witness_interval_seconds": 0.5, **(settings or {})})
    if public:
        set_config(config, public, table="public")
    return directory


@contextmanager
def running_registry(directory: Path) -> Iterator[RegistryThread]:
    """The registry of ``directory`` in a background thread, stopped afterwards."""
    registry = RegistryThread(directory)
    try:
        yield registry
    finally:
        registry.stop()
