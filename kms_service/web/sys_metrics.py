"""/v1/sys/metrics: the server's metrics, in Prometheus' text format (``?format=prometheus``) or Vault's JSON
form (the default, as in Vault). Needs a token whose policy allows ``read`` on ``sys/metrics`` (root does).

``Metrics`` is one registry per application (never the process-wide default, so several servers in one
process, as in the tests, each count their own). The request metrics are observed by ``web/app.py:handle``
for every request; the service's counters (cache lookups, database errors) are read at scrape time.
Labels are bounded: a route is the path table's template (``transit/encrypt/:name``), never a key name.

With ``serve --workers N`` every worker's metrics are the totals of all workers, whichever worker a scrape
reaches: prometheus-client's multiprocess mode (the parent makes a ``PROMETHEUS_MULTIPROC_DIR`` before it
starts the workers and removes it at exit; each worker's values live in files there, and a scrape merges
them). The service's plain counters are copied into those files every second (``sync``) and at each scrape,
so another worker's cache lookups and database errors lag by a second at most. ``kms_worker_http_requests``
counts each worker's requests on its own (label ``worker``). The expiring-tokens gauge is a database fact:
the scraping worker counts it with one query, at most every ``TOKEN_GAUGE_MAX_AGE`` seconds; no transit
request ever queries for it.

Metric names (docs/operations.md lists them too):

- ``kms_http_requests_total{route, method, status}``
- ``kms_http_request_duration_seconds{route, method}`` (histogram)
- ``kms_crypto_operations_total{key_type, operation}``: each successful item of encrypt, decrypt, rewrap,
  sign, verify, hmac and datakey
- ``kms_cache_lookups_total{cache, result}``: cache ``key`` or ``token``, result ``hit`` or ``miss``
- ``kms_database_errors_total{error}``: errors the database raised, by SQLAlchemy's class name
- ``kms_database_available``: 1, or 0 during a database outage (``--stale-while-down``)
- ``kms_database_outages_total``: outages this process has seen begin
- ``kms_tokens_expiring{within}``: live tokens that expire within ``within`` (``30d``)
- ``kms_worker_http_requests_total{worker}``: requests each worker answered (``serve --workers N`` only)
- ``kms_build_info{version}``: always 1
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import os
import time
from collections import Counter as Tally
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from kms_service import __version__
from kms_service.errors import DatabaseUnavailable, InvalidRequest
from kms_service.outage import DatabaseState
from kms_service.storage.database import unavailable_reason
from kms_service.web.framework import Call, Field, Operation, Path
from kms_service.web.framework import FieldType as T
from kms_service.web.replies import Reply

if TYPE_CHECKING:
    from kms_service.service import KMS

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Methods counted by name; anything else is "OTHER" (a client must not be able to mint label values).
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "LIST", "PATCH", "OPTIONS"})
UNMATCHED_ROUTE = "unmatched"
# From 0.5 ms (a warm encrypt) to 10 s (an RSA-4096 key generation).
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
# The expiring-tokens gauge: its window, and how old its count may be before a scrape counts again.
TOKEN_GAUGE_WINDOW = timedelta(days=30)
TOKEN_GAUGE_MAX_AGE = 60.0
# How often a worker copies its plain counters into the shared files.
SYNC_INTERVAL = 1.0


RECENT_MINUTES = 60


class RecentRequests:
    """Requests of the last hour, minute by minute (the console's overview): count, server errors, the
    latency sum and histogram. This process's own requests (with --workers, the answering worker's)."""

    def __init__(self) -> None:
        # minute (epoch seconds // 60) → [requests, 5xx, latency sum, per-bucket counts (the last: +Inf)]
        self.minutes: dict[int, list[Any]] = {}

    def observe(self, status: int, seconds: float) -> None:
        minute = int(time.time() // 60)
        slot = self.minutes.get(minute)
        if slot is None:
            slot = self.minutes[minute] = [0, 0, 0.0, [0] * (len(LATENCY_BUCKETS) + 1)]
            for old in [m for m in self.minutes if m <= minute - RECENT_MINUTES]:
                del self.minutes[old]
        slot[0] += 1
        slot[1] += status >= 500
        slot[2] += seconds
        slot[3][bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1

    def report(self) -> list[dict[str, Any]]:
        """One entry per minute of the last hour that saw a request, oldest first; p95 is the upper bound of
        the latency bucket holding the 95th percentile (None: past the last bound)."""
        now = int(time.time() // 60)
        result = []
        for minute in sorted(m for m in self.minutes if m > now - RECENT_MINUTES):
            count, errors, total, buckets = self.minutes[minute]
            rank, seen, p95 = 0.95 * count, 0, None
            for bound, in_bucket in zip((*LATENCY_BUCKETS, None), buckets, strict=True):
                seen += in_bucket
                if seen >= rank:
                    p95 = bound
                    break
            result.append(
                {
                    "Minute": datetime.fromtimestamp(minute * 60, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "Requests": count,
                    "ServerErrors": errors,
                    "MeanSeconds": total / count,
                    "P95Seconds": p95,
                }
            )
        return result


class Metrics:
    """The application's registry and the metrics it observes directly."""

    def __init__(self, worker: int | None = None) -> None:
        # What a scrape reads. One process: requests are counted in plain dictionaries (the event loop is
        # the only writer) and handed to Prometheus' formats at scrape time, since a ``prometheus_client``
        # counter or histogram takes a lock on every increment. With --workers, the request metrics are
        # prometheus_client's in another registry (their values go to the shared files) and the scrape reads
        # every worker's files instead.
        self.registry = CollectorRegistry()
        shared_dir = os.environ.get(MULTIPROC_DIR_ENV) if worker is not None else None
        # (route, method, status) → requests; (route, method) → [per-bucket counts (the last: +Inf), sum];
        # (key type, operation) → items.
        self.requests: dict[tuple[str, str, int], int] = {}
        self.latency: dict[tuple[str, str], list[Any]] = {}
        self.crypto: dict[tuple[str, str], int] = {}
        self._shared: _SharedRequestMetrics | None = None
        self._shared_service_counters: tuple[Any, Any] | None = None
        self._synced: Tally[tuple[str, ...]] = Tally()
        if shared_dir:
            MultiProcessCollector(self.registry, shared_dir)
            own = CollectorRegistry()
            self._shared = _SharedRequestMetrics(own, str(worker))
            self._shared_service_counters = (
                Counter("kms_cache_lookups", _CACHE_HELP, ["cache", "result"], registry=own),
                Counter("kms_database_errors", _DATABASE_ERRORS_HELP, ["error"], registry=own),
            )
            build = Gauge(
                "kms_build_info", "This server's version.", ["version"], registry=own, multiprocess_mode="livemax"
            )
        else:
            self.registry.register(_RequestCollector(self))
            build = Gauge("kms_build_info", "This server's version.", ["version"], registry=self.registry)
        build.labels(__version__).set(1)
        self._kms: KMS | None = None
        self._expiring: tuple[float, int] | None = None  # (monotonic time counted, count)
        self.recent = RecentRequests()
        self._counting = asyncio.Lock()

    def watch(self, kms: KMS) -> None:
        """Expose the service's own counters (called once the service is open)."""
        self._kms = kms
        if self._shared_service_counters is None:
            self.registry.register(_ServiceCollector(kms))
        self.registry.register(_ExpiringTokens(self))

    def sync(self) -> None:
        """With --workers: add what the service's plain counters gained since the last call to the shared files."""
        if self._shared_service_counters is None or self._kms is None:
            return
        cache, errors = self._shared_service_counters
        now: Tally[tuple[str, ...]] = Tally()
        for name, stats in (("key", self._kms.key_cache_stats), ("token", self._kms.tokens.cache_stats)):
            now["cache", name, "hit"] = stats.hits
            now["cache", name, "miss"] = stats.misses
        for error, count in self._kms.database_errors.items():
            now["error", error] = count
        for labels, count in now.items():
            if gained := count - self._synced[labels]:
                (cache if labels[0] == "cache" else errors).labels(*labels[1:]).inc(gained)
        self._synced = now

    async def count_expiring_tokens(self) -> None:
        """Count the tokens expiring within the window, unless the last count is recent (one query at most
        every TOKEN_GAUGE_MAX_AGE seconds, whatever the scrape rate)."""
        if self._kms is None:
            return
        async with self._counting:
            if self._expiring is not None and time.monotonic() - self._expiring[0] < TOKEN_GAUGE_MAX_AGE:
                return
            try:
                count = await self._kms.tokens.count_expiring(TOKEN_GAUGE_WINDOW)
            except Exception as exc:
                # A database outage must not take the scrape down with it (the outage's own gauges are
                # what an operator wants then): the last count stays.
                if isinstance(exc, DatabaseUnavailable) or unavailable_reason(exc) is not None:
                    return
                raise
            self._expiring = (time.monotonic(), count)

    async def sync_forever(self) -> None:
        while True:
            await asyncio.sleep(SYNC_INTERVAL)
            self.sync()

    def observe(self, route: str | None, method: str, status: int, seconds: float, call: Call | None) -> None:
        route = route or UNMATCHED_ROUTE
        method = method if method in METHODS else "OTHER"
        self.recent.observe(status, seconds)
        crypto = None
        if call is not None and call.crypto_count and call.key_type and call.operation and call.operation.crypto:
            crypto = (call.key_type, call.operation.crypto)
        if self._shared is not None:
            self._shared.observe(route, method, status, seconds, crypto, call.crypto_count if crypto else 0)
            return
        key = (route, method, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        latency = self.latency.get((route, method))
        if latency is None:
            latency = self.latency[(route, method)] = [[0] * (len(LATENCY_BUCKETS) + 1), 0.0]
        latency[0][bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1  # the first bucket with seconds <= le
        latency[1] += seconds
        if crypto is not None:
            self.crypto[crypto] = self.crypto.get(crypto, 0) + call.crypto_count

    def prometheus(self) -> bytes:
        return generate_latest(self.registry)

    def vault_json(self) -> dict[str, Any]:
        """Vault's JSON form (go-metrics' in-memory sink): Gauges, Counters and Samples (histograms), each
        with Name and Labels. Counters carry Count and Sum (both the total); Samples Count, Sum and Mean.
        Rate, Min, Max and Stddev are not kept here, so they are left out."""
        gauges, counters, samples = [], [], []
        for family in self.registry.collect():
            by_labels: dict[tuple[tuple[str, str], ...], dict[str, float]] = {}
            for sample in family.samples:
                if sample.name.endswith("_created"):
                    continue
                labels = {k: v for k, v in sample.labels.items() if k != "le"}
                suffix = sample.name[len(family.name) :]
                by_labels.setdefault(tuple(sorted(labels.items())), {})[suffix] = sample.value
            for labels, values in by_labels.items():
                name = family.name.replace("_", ".")
                if family.type == "counter":
                    total = values.get("_total", 0.0)
                    counters.append({"Name": name, "Count": total, "Sum": total, "Labels": dict(labels)})
                elif family.type == "histogram":
                    count, total = values.get("_count", 0.0), values.get("_sum", 0.0)
                    mean = total / count if count else 0.0
                    samples.append({"Name": name, "Count": count, "Sum": total, "Mean": mean, "Labels": dict(labels)})
                else:
                    gauges.append({"Name": name, "Value": values.get("", 0.0), "Labels": dict(labels)})
        return {
            "Timestamp": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S +0000 UTC"),
            "Gauges": gauges,
            "Points": [],
            "Counters": counters,
            "Samples": samples,
        }


class _RequestCollector(Collector):
    """The request metrics ``Metrics.observe`` counts, as Prometheus families."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "kms_http_requests",
            "HTTP requests answered, by route template, method and status.",
            labels=["route", "method", "status"],
        )
        for (route, method, status), count in list(self._metrics.requests.items()):
            requests.add_metric([route, method, str(status)], float(count))
        yield requests
        latency = HistogramMetricFamily(
            "kms_http_request_duration_seconds",
            "Time from receiving a request to having its answer, by route template and method.",
            labels=["route", "method"],
        )
        for (route, method), (counts, total) in list(self._metrics.latency.items()):
            cumulative = list(itertools.accumulate(counts))
            bounds = [floatToGoString(b) for b in LATENCY_BUCKETS] + ["+Inf"]
            latency.add_metric([route, method], list(zip(bounds, cumulative, strict=True)), total)
        yield latency
        crypto = CounterMetricFamily(
            "kms_crypto_operations",
            "Successful crypto operations (each batch item counts), by key type and operation.",
            labels=["key_type", "operation"],
        )
        for (key_type, operation), count in list(self._metrics.crypto.items()):
            crypto.add_metric([key_type, operation], float(count))
        yield crypto


class _SharedRequestMetrics:
    """With --workers: the request metrics as prometheus_client's, whose values live in the shared files."""

    def __init__(self, registry: CollectorRegistry, worker: str) -> None:
        self.requests = Counter(
            "kms_http_requests",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "kms_http_request_duration_seconds",
            "Time from receiving a request to having its answer, by route template and method.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.crypto = Counter(
            "kms_crypto_operations",
            "Successful crypto operations (each batch item counts), by key type and operation.",
            ["key_type", "operation"],
            registry=registry,
        )
        self.worker_requests = Counter(
            "kms_worker_http_requests", "HTTP requests this worker answered.", ["worker"], registry=registry
        ).labels(worker)
        # The labelled children by (route, method, status): .labels() costs a few microseconds a request.
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(
        self, route: str, method: str, status: int, seconds: float, crypto: tuple[str, str] | None, items: int
    ) -> None:
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.requests.labels(route, method, str(status)),
                self.latency.labels(route, method),
            )
        children[0].inc()
        children[1].observe(seconds)
        self.worker_requests.inc()
        if crypto is not None:
            self.crypto.labels(*crypto).inc(items)


_CACHE_HELP = "Lookups in the in-memory caches, answered from memory (hit) or from the database (miss)."
_DATABASE_ERRORS_HELP = "Errors the database raised, by SQLAlchemy's class for them."


class _ExpiringTokens(Collector):
    """The last count of tokens expiring soon (absent until a scrape has counted once)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            "kms_tokens_expiring",
            "Live tokens that expire within the window (counted at most once a minute).",
            labels=["within"],
        )
        if self._metrics._expiring is not None:
            gauge.add_metric([f"{TOKEN_GAUGE_WINDOW.days}d"], self._metrics._expiring[1])
        yield gauge


class _ServiceCollector(Collector):
    """Counters the service keeps as plain integers, read at scrape time."""

    def __init__(self, kms: KMS) -> None:
        self._kms = kms

    def collect(self) -> Iterator[Metric]:
        cache = CounterMetricFamily("kms_cache_lookups", _CACHE_HELP, labels=["cache", "result"])
        for name, stats in (("key", self._kms.key_cache_stats), ("token", self._kms.tokens.cache_stats)):
            cache.add_metric([name, "hit"], stats.hits)
            cache.add_metric([name, "miss"], stats.misses)
        yield cache
        errors = CounterMetricFamily("kms_database_errors", _DATABASE_ERRORS_HELP, labels=["error"])
        for error, count in sorted(self._kms.database_errors.items()):
            errors.add_metric([error], count)
        yield errors
        watch = self._kms.watch
        yield GaugeMetricFamily(
            "kms_database_available",
            "1 while the database answers; 0 during an outage (serving from memory, then failing closed).",
            value=1 if watch.state() is DatabaseState.AVAILABLE else 0,
        )
        yield CounterMetricFamily(
            "kms_database_outages", "Database outages this process has seen begin.", value=watch.outages
        )


METRICS_KEY = "metrics"  # the app's Metrics


async def metrics(call: Call, args: dict[str, Any]) -> Reply:
    registry = call.request.app[METRICS_KEY]
    await registry.count_expiring_tokens()
    registry.sync()
    fmt = args["format"] or ""
    if fmt == "prometheus":
        return Reply(body=registry.prometheus(), content_type=PROMETHEUS_CONTENT_TYPE)
    if fmt not in ("", "json"):
        raise InvalidRequest(f'metric response format "{fmt}" unknown')
    body = registry.vault_json()
    if args["recent"]:
        body["Recent"] = registry.recent.report()  # beyond Vault: the last hour by minute (this process's)
    return Reply(body, bare=True)


PATHS = (
    Path(
        "sys/metrics",
        "The server's metrics: Vault's JSON form, or Prometheus' text format with ?format=prometheus.",
        fields=(
            Field("format", T.STRING, "'prometheus' for Prometheus' text format; '' or 'json' for Vault's JSON."),
            Field(
                "recent",
                T.BOOL,
                "Beyond Vault: add 'Recent' to the JSON form, this process's requests of the last hour by minute "
                "(Requests, ServerErrors, MeanSeconds, P95Seconds).",
            ),
        ),
        operations={"GET": Operation(metrics, bare=True, media_types=("application/json", PROMETHEUS_CONTENT_TYPE))},
    ),
)
