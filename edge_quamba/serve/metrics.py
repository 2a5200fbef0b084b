"""Prometheus metrics (text exposition format, served at /metrics), in a registry of the app's own.

    edge_quamba_requests_total{endpoint, status}      HTTP answers by route and status code (499: client went away)
    edge_quamba_errors_total{endpoint, type}          error answers by OpenAI error type (and "cancelled")
    edge_quamba_queue_depth                           requests waiting for the sequence slot
    edge_quamba_active_sequences                      sequences being generated (0 or 1)
    edge_quamba_time_to_first_token_seconds           request arrival -> first token chosen (queueing included)
    edge_quamba_time_per_output_token_seconds         mean decode time per token after the first, per request
    edge_quamba_prompt_tokens_total / _generation_tokens_total   tokens prefilled / generated

Endpoint labels are the server's routes (anything else is "other"), so a scan of random paths cannot grow the
label set.
"""

from __future__ import annotations

from typing import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
TPOT_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1)


class Metrics:
    def __init__(self, routes: tuple[str, ...], waiting: Callable[[], int], active: Callable[[], int]):
        self.routes = routes
        self.registry = registry = CollectorRegistry()
        self.requests = Counter("edge_quamba_requests", "HTTP requests answered, by route and status code",
                                ["endpoint", "status"], registry=registry)
        self.errors = Counter("edge_quamba_errors", "Error answers, by route and OpenAI error type",
                              ["endpoint", "type"], registry=registry)
        Gauge("edge_quamba_queue_depth", "Requests waiting for the sequence slot",
              registry=registry).set_function(waiting)
        Gauge("edge_quamba_active_sequences", "Sequences being generated (one at most)",
              registry=registry).set_function(active)
        self.ttft = Histogram("edge_quamba_time_to_first_token_seconds",
                              "Request arrival to first token chosen, queueing included", buckets=TTFT_BUCKETS,
                              registry=registry)
        self.tpot = Histogram("edge_quamba_time_per_output_token_seconds",
                              "Mean decode time per generated token after the first, one sample per request",
                              buckets=TPOT_BUCKETS, registry=registry)
        self.prompt_tokens = Counter("edge_quamba_prompt_tokens", "Prompt tokens prefilled", registry=registry)
        self.generation_tokens = Counter("edge_quamba_generation_tokens", "Tokens generated", registry=registry)

    def endpoint(self, path: str) -> str:
        return path if path in self.routes else "other"

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class RequestCounter:
    """ASGI middleware: counts every HTTP answer by route and status (the status of the response started, 499 when
    the handler saw the client leave)."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = 500

        async def record(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            self.metrics.requests.labels(self.metrics.endpoint(scope["path"]), str(status)).inc()
