"""Prometheus metrics (``prometheus_client``, one registry per app so that several apps - tests - do not mix):
requests by route and status, request latency, queue wait, inference time per model call, batch sizes and the
queue depth; and what the protocol does before a request reaches the app (``protocol``, ``connections``): open
connections, connections refused or evicted at the cap, requests timed out by phase, malformed requests.
``MetricsMiddleware`` sits outside everything else, so refusals made by other middleware (401,
413) are counted too. Routes are labelled by their path template, never the raw path (bounded labels)."""

from __future__ import annotations

import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .batching import BatchStats

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("detzoo_requests", "HTTP requests by route, method and status",
                                ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("detzoo_request_seconds", "time from request to response, by route",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.queue_wait = Histogram("detzoo_queue_wait_seconds", "time a request waited for the model",
                                    buckets=LATENCY_BUCKETS, registry=self.registry)
        self.inference = Histogram("detzoo_inference_seconds", "time of one model call (a batch)",
                                   buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_images = Histogram("detzoo_batch_images", "images per model call",
                                      buckets=BATCH_BUCKETS, registry=self.registry)
        self.queue_depth = Gauge("detzoo_queue_depth", "requests waiting for the model",
                                 registry=self.registry)
        self.images = Counter("detzoo_images", "images detected", registry=self.registry)
        self.connections_open = Gauge("detzoo_connections_open", "open client connections",
                                      registry=self.registry)
        self.connections_refused = Counter(
            "detzoo_connections_refused", "connections refused at the connection cap: 503 after the request "
            "head (overflow), or 503 before it and closed (accept)", ["how"], registry=self.registry)
        self.connections_evicted = Counter(
            "detzoo_connections_evicted", "connections whose client was silent, closed to make room at the cap",
            registry=self.registry)
        self.request_timeouts = Counter(
            "detzoo_request_timeouts", "requests timed out: headers or body too slow (408), or the answer not "
            "read (closed)", ["phase"], registry=self.registry)
        self.malformed_requests = Counter("detzoo_malformed_requests", "malformed HTTP requests answered by the "
                                          "protocol (400, 414, 431)", ["status"], registry=self.registry)
        for how in ("overflow", "accept"):  # shown at 0 before the first one
            self.connections_refused.labels(how)
        for phase in ("headers", "body", "send"):
            self.request_timeouts.labels(phase)

    def batch_stats(self) -> BatchStats:
        def on_batch(images: int, seconds: float) -> None:
            self.batch_images.observe(images)
            self.inference.observe(seconds)
            self.images.inc(images)

        return BatchStats(on_queue_wait=self.queue_wait.observe, on_batch=on_batch, on_depth=self.queue_depth.set)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts every HTTP request by route template and status, and times it. ``routes`` label requests that
    middleware refused before the router saw them."""

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: list[BaseRoute]):
        self.app = app
        self.metrics = metrics
        self.routes = routes

    def route_label(self, scope: Scope) -> str:
        route = scope.get("route")
        if route is None:
            route = next((r for r in self.routes if r.matches(scope)[0] is Match.FULL), None)
        return getattr(route, "path", None) or "(unmatched)"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app fails before answering

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            label = self.route_label(scope)
            self.metrics.requests.labels(label, scope["method"], str(status)).inc()
            self.metrics.latency.labels(label).observe(time.perf_counter() - started)
