"""Prometheus metrics of one sender process (``GET /metrics``, text exposition format)."""

from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

#: Latency buckets in seconds (0.1 ms … 2.5 s).
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """Counters and histograms on a private registry (several apps per process in tests)."""

    def __init__(self, queue_depths: Callable[[], dict[str, int]] | None = None):
        self.registry = CollectorRegistry()
        r = self.registry
        self.events = Counter("omnisim_events_total", "Inbound events by outcome", ["status"], registry=r)
        self.decisions = Counter("omnisim_decisions_total", "Decisions by channel", ["channel"], registry=r)
        self.sends = Counter("omnisim_sends_total", "Deliveries by channel and status",
                             ["channel", "status"], registry=r)
        self.decision_latency = Histogram("omnisim_decision_latency_seconds",
                                          "Time to decide one event and store its results (s)",
                                          buckets=BUCKETS, registry=r)
        self.request_latency = Histogram("omnisim_request_latency_seconds",
                                         "HTTP request latency by route (s)", ["route"],
                                         buckets=BUCKETS, registry=r)
        self.queue = Gauge("omnisim_queue_depth", "Open timers, queued messages, quarantine",
                           ["queue"], registry=r)
        self._depths = queue_depths

    def render(self) -> bytes:
        """The exposition text, with queue depths read now."""
        if self._depths is not None:
            for name, value in self._depths().items():
                self.queue.labels(name).set(value)
        return generate_latest(self.registry)
