"""The shared library never loads a server package.

``credence`` is what requesters, subjects and auditors install; the node and
the registry build on it, never the reverse. Every module of the package is
imported in a fresh interpreter and ``sys.modules`` is read afterwards, so an
import hidden inside a module (``import_module("agency_node...")`` at load
time, or through another module) is caught too.
"""

from __future__ import annotations

import json
import subprocess
import sys

SERVERS = ("agency_node", "central_registry")

_PROBE = """
import json, pkgutil, sys
import credence
names = sorted(m.name for m in pkgutil.walk_packages(credence.__path__, "credence."))
for name in names:
    if name.endswith("__main__"):
        continue  # runs the command line when imported
    __import__(name)
for name in json.loads(sys.argv[2]):
    __import__(name)
servers = sorted({m.split(".")[0] for m in sys.modules} & set(json.loads(sys.argv[1])))
print(json.dumps({"modules": names, "servers": servers}))
"""


def _probe(*, also: tuple[str, ...] = ()) -> dict[str, list[str]]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(SERVERS), json.dumps(also)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, list[str]] = json.loads(done.stdout)
    return result


def test_importing_every_credence_module_loads_no_server() -> None:
    result = _probe()
    # The walk reached the packages, the command line included.
    assert {"credence.cli.app", "credence.cli.audit", "credence.grants.tokens"} <= set(
        result["modules"]
    )
    assert result["servers"] == []


def test_the_probe_sees_a_server_module_once_one_is_imported() -> None:
    # What a stray `import_module("agency_node.audit")` in the library would do.
    result = _probe(also=("agency_node.audit",))
    assert result["servers"] == ["agency_node"]
