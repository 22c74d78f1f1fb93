"""Liveness and readiness, and the HTTP server for ``/metrics``, ``/healthz`` and ``/readyz``.

Usage::

    health = HealthState()
    server = MetricsServer(registry, health, "127.0.0.1", 0).start()   # port 0: any free port
    health.ready = True          # the daemon says when
    server.stop()
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


class HealthState:
    """Liveness and readiness, set by the daemon and read by the HTTP server.

    ``live`` while the loop has ticked within ``stall_after_s`` seconds; ``ready`` when the
    daemon says so (model loaded, partitions assigned).
    """

    def __init__(self, stall_after_s: float = 60.0) -> None:
        self.stall_after_s = stall_after_s
        self.last_tick = time.monotonic()
        self.ready = False

    def tick(self) -> None:
        """The main loop is alive."""
        self.last_tick = time.monotonic()

    @property
    def live(self) -> bool:
        """True while the loop has ticked within ``stall_after_s`` seconds."""
        return time.monotonic() - self.last_tick < self.stall_after_s


class MetricsServer:
    """Serves ``/metrics`` (Prometheus text format), ``/healthz`` and ``/readyz`` from a thread.

    Args:
        registry: the metrics to expose (``DaemonMetrics.registry``).
        health: liveness and readiness.
        host, port: where to bind; port 0 picks a free port (see ``port`` after ``start``).

    Raises:
        OSError: the address cannot be bound (the port is taken).
    """

    def __init__(self, registry: CollectorRegistry, health: HealthState, host: str, port: int) -> None:

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._reply(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    ok = health.live
                    self._reply(200 if ok else 503, b"ok\n" if ok else b"stalled\n")
                elif path == "/readyz":
                    ok = health.ready
                    self._reply(200 if ok else 503, b"ready\n" if ok else b"not ready\n")
                else:
                    self._reply(404, b"not found\n")

            def _reply(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="metrics-http",
                                       daemon=True)

    @property
    def port(self) -> int:
        """The bound port."""
        return self.server.server_address[1]

    def start(self) -> MetricsServer:
        """Serve from a daemon thread."""
        self.thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.server.shutdown()
        self.server.server_close()
