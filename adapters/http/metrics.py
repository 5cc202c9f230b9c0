"""Prometheus metrics (``/metrics``): the ledger's tables read at scrape time, and the API's
own requests. Each app has its own ``CollectorRegistry``.

From the tables: tasks per queue, type and state; queue depth (ready now), scheduled and
running attempts per queue; paused queues; live workers; projection lag behind the log;
finished tasks per queue, type and outcome (throughput is their rate); and histograms of
queue wait, run time and end-to-end latency per queue and type. The task-view parts scan
that table once per scrape.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from execution_ledger.adapters.ledger_reads import LedgerReads

CONTENT_TYPE = CONTENT_TYPE_LATEST
DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]
DURATION_BUCKETS += [60.0, 300.0, 900.0, 3600.0]
TERMINAL = ("succeeded", "failed", "cancelled", "skipped")
WORKER_ALIVE_SECONDS = 60.0
DURATION_HELP = {
    "queue_wait": "Seconds from enqueue to the last start of finished tasks",
    "run": "Seconds the last attempt of finished tasks ran",
    "latency": "Seconds from enqueue to finish of finished tasks",
}


class LedgerTables:
    """A collector that reads the read models when Prometheus scrapes."""

    def __init__(self, reads: LedgerReads, queues: Iterable[str]) -> None:
        self.reads = reads
        self.queues = tuple(queues)

    def collect(self) -> Iterator[Metric]:
        yield from self._tasks()
        yield from self._queues()
        yield from self._workers_and_log()
        yield from self._durations()

    def _tasks(self) -> Iterator[Metric]:
        tasks = GaugeMetricFamily(
            "ledger_tasks", "Tasks per queue, type and state", labels=["queue", "type", "state"]
        )
        finished = CounterMetricFamily(
            "ledger_tasks_finished",
            "Tasks that ended, per queue, type and outcome",
            labels=["queue", "type", "state"],
        )
        for row in self.reads.task_counts():
            labels = [row["queue"], row["type_name"], row["state"]]
            tasks.add_metric(labels, row["n"])
            if row["state"] in TERMINAL:
                finished.add_metric(labels, row["n"])
        yield tasks
        yield finished

    def _queues(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "ledger_queue_depth", "Tasks ready to start now", labels=["queue"]
        )
        scheduled = GaugeMetricFamily(
            "ledger_queue_scheduled", "Tasks scheduled for later", labels=["queue"]
        )
        running = GaugeMetricFamily("ledger_running", "Attempts running", labels=["queue"])
        paused = GaugeMetricFamily(
            "ledger_queue_paused", "1 if the queue is paused", labels=["queue"]
        )
        by_queue = self.reads.queue_counts()
        empty = {"ready": 0, "scheduled": 0, "running": 0, "paused": False}
        for queue in sorted({*self.queues, *by_queue}):
            counts = by_queue.get(queue, empty)
            depth.add_metric([queue], counts["ready"])
            scheduled.add_metric([queue], counts["scheduled"])
            running.add_metric([queue], counts["running"])
            paused.add_metric([queue], 1.0 if counts["paused"] else 0.0)
        yield from (depth, scheduled, running, paused)

    def _workers_and_log(self) -> Iterator[Metric]:
        workers = self.reads.worker_nodes()
        alive = sum(1 for w in workers if w["seconds_since_seen"] <= WORKER_ALIVE_SECONDS)
        yield GaugeMetricFamily(
            "ledger_workers", f"Worker nodes seen in the last {WORKER_ALIVE_SECONDS:g} s", alive
        )
        head = self.reads.head_position()
        yield GaugeMetricFamily("ledger_log_head", "Position of the last event of the log", head)
        lag = GaugeMetricFamily(
            "ledger_projection_lag", "Events a projection has yet to read", labels=["projection"]
        )
        for name, position in sorted(self.reads.projection_positions().items()):
            lag.add_metric([name], max(0, head - position))
        yield lag

    def _durations(self) -> Iterator[Metric]:
        families = {
            measure: HistogramMetricFamily(
                f"ledger_task_{measure}_seconds", help_text, labels=["queue", "type"]
            )
            for measure, help_text in DURATION_HELP.items()
        }
        for row in self.reads.task_duration_buckets(DURATION_BUCKETS):
            buckets = [(f"{b:g}", n) for b, n in zip(DURATION_BUCKETS, row["le"], strict=True)]
            buckets.append(("+Inf", row["count"]))
            families[row["measure"]].add_metric(
                [row["queue"], row["type_name"]], buckets, sum_value=row["sum"]
            )
        yield from families.values()


class HttpMetrics:
    """The registry of one app: table collectors plus request counters and latencies."""

    def __init__(self, reads: LedgerReads, queues: Iterable[str]) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(LedgerTables(reads, queues))
        self.requests = Counter(
            "ledger_http_requests",
            "HTTP requests, per route, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "ledger_http_request_seconds",
            "Seconds to answer an HTTP request (to the first byte for streams)",
            ["route", "method"],
            registry=self.registry,
        )
        self.denied = Counter(
            "ledger_http_denied",
            "Requests refused with 401 or 403, per route",
            ["route", "status"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        """The exposition text (reads the database: call it from a thread)."""
        return generate_latest(self.registry)
