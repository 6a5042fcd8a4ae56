"""The RPC metrics interceptor, the /metrics listener and the import's progress file, alone."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import grpc.aio
import pytest
from prometheus_client import REGISTRY
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from agency_node.import_progress import (
    clear_import_progress,
    running_import,
    write_import_progress,
)
from credence.cli import main
from credence.dev import federation as dev_federation
from credence.errors import InvalidInput
from credence.ops.metrics import (
    LatestServer,
    MetricsListener,
    RpcMetricsInterceptor,
    parse_listen,
)

SERVICE = "credence.test.Probe"


def _count(method: str, code: str) -> float:
    value = REGISTRY.get_sample_value(
        "credence_rpc_requests_total", {"method": f"/{SERVICE}/{method}", "code": code}
    )
    return value or 0.0


def _timed(method: str) -> float:
    value = REGISTRY.get_sample_value(
        "credence_rpc_duration_seconds_count", {"method": f"/{SERVICE}/{method}"}
    )
    return value or 0.0


async def _ok(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    return request


async def _denied(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    await context.abort(grpc.StatusCode.PERMISSION_DENIED, "not you")
    raise AssertionError("abort returned")  # pragma: no cover


async def _crash(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    raise RuntimeError("a bug")


async def _stream(
    request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
) -> AsyncIterator[bytes]:
    for _ in range(3):
        yield request


async def _calls() -> None:
    handlers: dict[str, grpc.RpcMethodHandler[bytes, bytes]] = {
        "Ok": grpc.unary_unary_rpc_method_handler(_ok),
        "Denied": grpc.unary_unary_rpc_method_handler(_denied),
        "Crash": grpc.unary_unary_rpc_method_handler(_crash),
        "Stream": grpc.unary_stream_rpc_method_handler(_stream),
    }
    server = grpc.aio.server(interceptors=[RpcMetricsInterceptor()])
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            ok: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
                f"/{SERVICE}/Ok"
            )
            assert await ok(b"x", timeout=30) == b"x"
            for method, code in (
                ("Denied", grpc.StatusCode.PERMISSION_DENIED),
                ("Crash", grpc.StatusCode.UNKNOWN),
                ("Missing", grpc.StatusCode.UNIMPLEMENTED),
            ):
                call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
                    f"/{SERVICE}/{method}"
                )
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await call(b"x", timeout=30)
                assert refused.value.code() == code
            stream: grpc.aio.UnaryStreamMultiCallable[bytes, bytes] = channel.unary_stream(
                f"/{SERVICE}/Stream"
            )
            streamed = [item async for item in stream(b"y", timeout=30)]
            assert streamed == [b"y"] * 3
    finally:
        await server.stop(None)


def test_every_handled_call_is_counted_by_method_and_status_and_timed() -> None:
    before = {
        (method, code): _count(method, code)
        for method, code in (
            ("Ok", "OK"),
            ("Denied", "PERMISSION_DENIED"),
            ("Crash", "UNKNOWN"),
            ("Stream", "OK"),
        )
    }
    timed = {method: _timed(method) for method in ("Ok", "Denied", "Crash", "Stream")}
    asyncio.run(_calls())
    for (method, code), count in before.items():
        assert _count(method, code) == count + 1, (method, code)
        assert _timed(method) == timed[method] + 1, method
    assert _count("Ok", "UNKNOWN") == 0
    # A method the server does not serve is the caller's free text: never a label.
    assert _count("Missing", "UNIMPLEMENTED") == 0
    assert _timed("Missing") == 0


def test_the_listener_serves_metrics_until_stopped() -> None:
    listener = MetricsListener("127.0.0.1:0")
    try:
        assert listener.url == f"http://127.0.0.1:{listener.port}/metrics"
        with urllib.request.urlopen(listener.url, timeout=30) as response:
            assert response.status == 200
            assert b"# TYPE credence_rpc_requests_total counter" in response.read()
    finally:
        listener.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(listener.url, timeout=5)


@pytest.mark.parametrize("address", ["9464", "localhost", "127.0.0.1:http", "127.0.0.1:70000"])
def test_a_listen_address_without_a_port_is_refused_with_an_example(address: str) -> None:
    with pytest.raises(InvalidInput, match=r"host:port, e\.g\. 127\.0\.0\.1:9464"):
        parse_listen(address)


def test_listen_addresses_parse_with_ipv6_brackets_removed() -> None:
    assert parse_listen("[::1]:9464") == ("::1", 9464)
    assert parse_listen("127.0.0.1:0") == ("127.0.0.1", 0)


def test_import_progress_is_seen_while_its_process_runs_and_never_after(tmp_path: Path) -> None:
    assert running_import(tmp_path) is None
    write_import_progress(tmp_path, bytes_done=10, bytes_total=100, rows_done=3)
    progress = running_import(tmp_path)
    assert progress is not None
    assert (progress["pid"], progress["bytes_done"], progress["rows_done"]) == (os.getpid(), 10, 3)
    clear_import_progress(tmp_path)
    assert running_import(tmp_path) is None
    # An import killed mid-way leaves its file: a process that no longer runs is no import.
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    (tmp_path / "progress.json").write_text(f'{{"pid": {int(ended.stdout)}, "bytes_done": 1}}')
    assert running_import(tmp_path) is None


class _Figure:
    def __init__(self, value: float) -> None:
        self.value = value

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("probe_figure", "A figure.", value=self.value)


def _collected(latest: LatestServer) -> list[float]:
    return [sample.value for family in latest.collect() for sample in family.samples]


def test_figures_come_from_the_server_started_last_until_it_stops() -> None:
    latest = LatestServer()
    assert _collected(latest) == []
    detach_first = latest.attach(_Figure(1))
    detach_second = latest.attach(_Figure(2))
    assert _collected(latest) == [2]
    detach_second()
    assert _collected(latest) == [1]
    detach_second()  # twice is harmless
    detach_first()
    assert _collected(latest) == []


def test_dev_up_prints_every_metrics_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    agencies = [
        {"member_id": name, "address": f"127.0.0.1:{port}", "kinds": ["court_judgment"],
         "metrics_url": f"http://127.0.0.1:{port + 1}/metrics"}
        for name, port in (("court", 7711), ("bank", 7721))
    ]  # fmt: skip
    federation = {
        "registry": {
            "address": "127.0.0.1:7700", "public_address": "127.0.0.1:7702",
            "http_url": "https://127.0.0.1:7780", "console_url": "https://127.0.0.1:7790/",
            "admin_token": str(tmp_path / "admin.token"),
            "metrics_url": "https://127.0.0.1:7790/metrics",
        },
        "agencies": agencies,
        "samples": {"listed_organisation": ["reg:CN:ORG000001"]},
    }  # fmt: skip
    monkeypatch.setattr(dev_federation, "is_stopped", lambda _directory: False)
    monkeypatch.setattr(dev_federation, "up", lambda *_args, **_kwargs: federation)
    assert main(["dev", "up", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "  metrics   https://127.0.0.1:7790/metrics (registry)" in out
    for agency in agencies:
        assert f"  metrics   {agency['metrics_url']} ({agency['member_id']})" in out
