"""Housekeeping between batches: is the broker reachable, and how far behind is the consumer?"""

from __future__ import annotations

from dataclasses import dataclass, field

from stream_ae.kafka.ends import Source
from stream_ae.pipeline.ownership import PartitionOwnership
from stream_ae.telemetry.metrics import DaemonMetrics


@dataclass
class Housekeeping:
    """At most every ``interval_s`` seconds: the consumer-lag gauges (asking the client costs
    about 0.1 ms), and the broker connection check that keeps ``/readyz`` honest.

    Args:
        source: the consuming end (its ``lag`` and ``connected``).
        ownership: told whether the broker is reachable.
        metrics: the lag gauges.
        interval_s: seconds between rounds.
    """

    source: Source
    ownership: PartitionOwnership
    metrics: DaemonMetrics
    interval_s: float = 1.0
    _next: float = field(default=0.0, init=False)

    def tick(self, now: float) -> None:
        """Do a round if one is due at ``now`` (seconds, ``time.perf_counter``)."""
        if now < self._next:
            return
        self._next = now + self.interval_s
        for (topic, partition), lag in self.source.lag().items():
            self.metrics.consumer_lag.labels(topic, str(partition)).set(lag)
        self.ownership.broker_reachable(self.source.connected())
