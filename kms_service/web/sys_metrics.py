"""/v1/sys/metrics: the server's metrics, in Prometheus' text format (``?format=prometheus``) or Vault's JSON
form (the default, as in Vault). Needs a token whose policy allows ``read`` on ``sys/metrics`` (root does).

``Metrics`` is one registry per application (never the process-wide default, so several servers in one
process, as in the tests, each count their own). The request metrics are observed by ``web/app.py:handle``
for every request; the service's counters (cache lookups, database errors) are read at scrape time.
Labels are bounded: a route is the path table's template (``transit/encrypt/:name``), never a key name.

Metric names (the README lists them too):

- ``kms_http_requests_total{route, method, status}``
- ``kms_http_request_duration_seconds{route, method}`` (histogram)
- ``kms_crypto_operations_total{key_type, operation}``: each successful item of encrypt, decrypt, rewrap,
  sign, verify, hmac and datakey
- ``kms_cache_lookups_total{cache, result}``: cache ``key`` or ``token``, result ``hit`` or ``miss``
- ``kms_database_errors_total{error}``: errors the database raised, by SQLAlchemy's class name
- ``kms_build_info{version}``: always 1
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from kms_service import __version__
from kms_service.errors import InvalidRequest
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


class Metrics:
    """The application's registry and the metrics it observes directly. Requests are counted in plain
    dictionaries (the event loop is the only writer) and handed to Prometheus' formats at scrape time: a
    ``prometheus_client`` counter or histogram takes a lock on every increment, on every request."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        build = Gauge("kms_build_info", "This server's version.", ["version"], registry=self.registry)
        build.labels(__version__).set(1)
        # (route, method, status) → requests; (route, method) → [per-bucket counts (the last: +Inf), sum];
        # (key type, operation) → items.
        self.requests: dict[tuple[str, str, int], int] = {}
        self.latency: dict[tuple[str, str], list[Any]] = {}
        self.crypto: dict[tuple[str, str], int] = {}
        self.registry.register(_RequestCollector(self))

    def watch(self, kms: KMS) -> None:
        """Expose the service's own counters (called once the service is open)."""
        self.registry.register(_ServiceCollector(kms))

    def observe(self, route: str | None, method: str, status: int, seconds: float, call: Call | None) -> None:
        route = route or UNMATCHED_ROUTE
        method = method if method in METHODS else "OTHER"
        key = (route, method, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        latency = self.latency.get((route, method))
        if latency is None:
            latency = self.latency[(route, method)] = [[0] * (len(LATENCY_BUCKETS) + 1), 0.0]
        latency[0][bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1  # the first bucket with seconds <= le
        latency[1] += seconds
        if call is not None and call.crypto_count and call.key_type and call.operation and call.operation.crypto:
            crypto_key = (call.key_type, call.operation.crypto)
            self.crypto[crypto_key] = self.crypto.get(crypto_key, 0) + call.crypto_count

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


class _ServiceCollector(Collector):
    """Counters the service keeps as plain integers, read at scrape time."""

    def __init__(self, kms: KMS) -> None:
        self._kms = kms

    def collect(self) -> Iterator[Metric]:
        cache = CounterMetricFamily(
            "kms_cache_lookups",
            "Lookups in the in-memory caches, answered from memory (hit) or from the database (miss).",
            labels=["cache", "result"],
        )
        for name, stats in (("key", self._kms.key_cache_stats), ("token", self._kms.tokens.cache_stats)):
            cache.add_metric([name, "hit"], stats.hits)
            cache.add_metric([name, "miss"], stats.misses)
        yield cache
        errors = CounterMetricFamily(
            "kms_database_errors", "Errors the database raised, by SQLAlchemy's class for them.", labels=["error"]
        )
        for error, count in sorted(self._kms.database_errors.items()):
            errors.add_metric([error], count)
        yield errors


METRICS_KEY = web.AppKey("metrics", Metrics)


async def metrics(call: Call, args: dict[str, Any]) -> Reply:
    registry = call.request.app[METRICS_KEY]
    fmt = args["format"] or ""
    if fmt == "prometheus":
        return Reply(body=registry.prometheus(), content_type=PROMETHEUS_CONTENT_TYPE)
    if fmt not in ("", "json"):
        raise InvalidRequest(f'metric response format "{fmt}" unknown')
    return Reply(registry.vault_json(), bare=True)


PATHS = (
    Path(
        "sys/metrics",
        "The server's metrics: Vault's JSON form, or Prometheus' text format with ?format=prometheus.",
        fields=(Field("format", T.STRING, "'prometheus' for Prometheus' text format; '' or 'json' for Vault's JSON."),),
        operations={"GET": Operation(metrics, bare=True, media_types=("application/json", PROMETHEUS_CONTENT_TYPE))},
    ),
)
