"""The log as C2SP tiles: ``python -m bench.bench_tiles --entries 70000``.

Fills a registry database (SQLite in a temporary directory, or
``--database-url``) with ``--entries`` log entries through the append path,
then prints, for the level-0 tiles and entry bundles of that tree:

* reads per second and process CPU per read straight from SQL (``read_tile``);
* the same through :class:`central_registry.tiles.LogFiles` once its cache of
  full tiles is warm;
* GETs per second over HTTPS from the HTTP side, one TLS connection per GET
  and all over one kept-alive connection (client and server in this process:
  wall clock, noisy on a shared machine);
* signing and verifying a checkpoint (note signature over the body).

CPU figures are ``time.process_time`` per operation, the steadier figure on a
busy machine.
"""

from __future__ import annotations

import argparse
import http.client
import secrets
import ssl
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from central_registry.database import create_engine_for, sqlite_url_for, upgrade_schema
from central_registry.http_side import HttpSide
from central_registry.log.entries import append_entries
from central_registry.log.rows import LogRow, dispatched_row
from central_registry.tiles import LogFiles, read_tile
from credence.dev.offline_federation import Federation
from credence.keys import KeySet, SigningKey
from credence.storage import session_factory
from credence.transparency import log_promise
from credence.transparency.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from credence.transparency.tiles import TILE_WIDTH, TileRef

ORIGIN = "credence/bench/log"


def _rows(count: int, now: datetime) -> list[LogRow]:
    rows = []
    for n in range(count):
        salt = log_promise.new_salt()
        rows.append(
            dispatched_row(
                query_id=f"q-{n:09d}", requester="bench", subject_type=1,
                subject_ref=secrets.token_bytes(32), purpose=2, kinds=(1,), grant_id="",
                basis="public register", embargo_until=None, issued_at=now, salt=salt,
                commitment=secrets.token_bytes(32),
            )
        )  # fmt: skip
    return rows


def _rate(label: str, count: int, run: Callable[[], object]) -> None:
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(
        f"{label:<34} {count / wall:>10,.0f} /s wall   {cpu / count * 1e6:>8.1f} us CPU each"
        f"   ({count:,} in {wall:.2f} s)"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--entries", type=int, default=70_000)
    parser.add_argument("--database-url", default="")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-tiles-") as scratch:
        directory = Path(scratch)
        engine = create_engine_for(args.database_url or sqlite_url_for(directory))
        upgrade_schema(engine)
        sessions = session_factory(engine)
        rows = _rows(args.entries, datetime.now(UTC))
        started = time.perf_counter()
        for first in range(0, len(rows), 1_000):
            with sessions.begin() as session:
                append_entries(session, rows[first : first + 1_000])
        print(f"filled {args.entries:,} entries in {time.perf_counter() - started:.1f} s")
        full = args.entries // TILE_WIDTH
        hashes = [TileRef(0, n, TILE_WIDTH) for n in range(full)]
        bundles = [TileRef(0, n, TILE_WIDTH, entries=True) for n in range(full)]

        def from_sql(refs: list[TileRef]) -> Callable[[], None]:
            def run() -> None:
                with sessions() as session:
                    for ref in refs:
                        read_tile(session, ref)

            return run

        _rate("hash tiles from SQL", full, from_sql(hashes))
        _rate("entry bundles from SQL", full, from_sql(bundles))
        files = LogFiles(
            engine, log_key=SigningKey.generate(), origin=ORIGIN, clock=lambda: datetime.now(UTC)
        )
        for ref in hashes:
            files.tile(ref)
        _rate("hash tiles, LogFiles cache warm", full, lambda: [files.tile(r) for r in hashes])

        federation = Federation.create()
        registry = federation.members["registry"]
        (directory / "http.crt").write_bytes(registry.cert_pem)
        (directory / "http.key").write_bytes(registry.tls_key_pem)
        envelope = federation.manifest_envelope(now=datetime.now(UTC))
        side = HttpSide(
            "127.0.0.1:0", tls_cert=directory / "http.crt", tls_key=directory / "http.key",
            manifest=lambda: envelope, jwks=lambda: KeySet([federation.registry_key.public]),
            checkpoint=files.checkpoint, tile=files.tile,
        )  # fmt: skip
        side.start()
        context = ssl.create_default_context(cadata=federation.ca.certificate_pem.decode())

        def over_https(refs: list[TileRef], *, keep_alive: bool) -> Callable[[], None]:
            def run() -> None:
                connection = None
                for ref in refs:
                    if connection is None:
                        connection = http.client.HTTPSConnection(
                            "127.0.0.1", side.port, context=context, timeout=60
                        )
                    connection.request("GET", "/" + ref.path)
                    response = connection.getresponse()
                    if response.status != 200 or len(response.read()) == 0:
                        raise SystemExit(f"GET /{ref.path}: {response.status}")
                    if not keep_alive:
                        connection.close()
                        connection = None
                if connection is not None:
                    connection.close()

            return run

        try:
            _rate("hash tiles over HTTPS (cached)", full, over_https(hashes, keep_alive=False))
            _rate("entry bundles over HTTPS", full, over_https(bundles, keep_alive=False))
            _rate("hash tiles, one kept-alive HTTPS", full, over_https(hashes, keep_alive=True))
        finally:
            side.stop()

        key = SigningKey.generate()
        checkpoint = Checkpoint(ORIGIN, args.entries, secrets.token_bytes(32))
        signed = sign_checkpoint(checkpoint, key)
        rounds = 2_000
        _rate(
            "checkpoint sign",
            rounds,
            lambda: [sign_checkpoint(checkpoint, key) for _ in range(rounds)],
        )
        public = key.public.raw()
        _rate("checkpoint open (verify)", rounds,
              lambda: [open_checkpoint(signed, ORIGIN, public) for _ in range(rounds)])  # fmt: skip
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
