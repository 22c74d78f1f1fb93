"""Liveness, readiness and the HTTP server (:mod:`stream_ae.telemetry.health`): ``/metrics``,
``/healthz`` (503 once the loop stalls), ``/readyz`` (follows ``HealthState.ready``) and 404
elsewhere, on a real socket (port 0)."""

from __future__ import annotations

import time
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, Counter

from stream_ae.telemetry.health import HealthState, MetricsServer


def get(port: int, path: str) -> tuple[int, bytes, str]:
    """Status, body and content type of ``GET path`` (an error status is returned, not raised)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status, reply.read(), reply.headers.get("Content-Type", "")
    except urllib.error.HTTPError as error:
        return error.code, error.read(), error.headers.get("Content-Type", "")


@pytest.fixture(scope="module")
def running():
    """One started server on a free port for the module (stopping one takes half a second),
    its registry holding one counter at 3, and its health state."""
    registry = CollectorRegistry()
    Counter("stream_ae_test_events_total", "events", registry=registry).inc(3)
    health = HealthState(stall_after_s=1.0)
    server = MetricsServer(registry, health, "127.0.0.1", 0).start()
    yield server, health
    server.stop()


@pytest.fixture
def served(running):
    """The module's server with its health state as new: live, not ready."""
    server, health = running
    health.ready = False
    health.tick()
    return server, health


def test_port_zero_binds_a_free_port_and_metrics_are_served_in_the_prometheus_format(served):
    server, _ = served
    assert server.port > 0
    status, body, content_type = get(server.port, "/metrics")
    assert status == 200 and content_type.startswith("text/plain")
    assert b"stream_ae_test_events_total 3.0" in body


def test_healthz_is_200_while_the_loop_ticks_and_503_once_it_stalls(served):
    server, health = served
    health.tick()
    assert get(server.port, "/healthz")[:2] == (200, b"ok\n")
    time.sleep(1.2)  # longer than stall_after_s
    assert not health.live
    assert get(server.port, "/healthz")[:2] == (503, b"stalled\n")
    health.tick()
    assert get(server.port, "/healthz")[0] == 200, "a tick makes it live again"


def test_readyz_follows_the_ready_flag(served):
    server, health = served
    assert get(server.port, "/readyz")[:2] == (503, b"not ready\n"), "not ready until the daemon says so"
    health.ready = True
    assert get(server.port, "/readyz")[:2] == (200, b"ready\n")
    assert get(server.port, "/readyz?verbose=1")[0] == 200, "a query string is ignored"
    health.ready = False
    assert get(server.port, "/readyz")[0] == 503


@pytest.mark.parametrize("path", ["/", "/metric", "/healthz/x", "/favicon.ico"])
def test_any_other_path_is_404(served, path):
    server, _ = served
    assert get(server.port, path)[:2] == (404, b"not found\n")


def test_stop_closes_the_socket():
    server = MetricsServer(CollectorRegistry(), HealthState(), "127.0.0.1", 0).start()
    port = server.port
    assert get(port, "/healthz")[0] == 200
    server.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)


def test_binding_a_taken_port_raises_oserror(served):
    server, _ = served
    with pytest.raises(OSError):
        MetricsServer(CollectorRegistry(), HealthState(), "127.0.0.1", server.port)
