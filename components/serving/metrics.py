"""Prometheus metrics of the predictor, on the registry KServe's `/metrics` route already exposes."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter("duogen_requests", "HTTP requests by route and status code", ["route", "status"])
LATENCY = Histogram(
    "duogen_request_seconds",
    "Whole-request latency by route (streamed requests: until the last event)",
    ["route"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
FIRST_EVENT = Histogram(
    "duogen_first_event_seconds",
    "Time to the first streamed event",
    ["route"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
IMAGES = Counter("duogen_images_drawn", "Pictures drawn by the DiT")
TOKENS = Counter("duogen_tokens", "Tokens by kind", ["kind"])  # prompt / completion
QUEUE_DEPTH = Gauge("duogen_queue_depth", "Requests admitted and waiting for a generation slot")
RUNNING = Gauge("duogen_running_requests", "Requests generating now")
REJECTED = Counter("duogen_rejected", "Requests refused with 429 because the queue was full")
DIT_BATCH = Histogram(
    "duogen_dit_batch_requests", "Requests per packed DiT forward", buckets=(1, 2, 4, 8, 16, 32)
)
DECODE_BATCH = Histogram(
    "duogen_decode_batch_requests",
    "Requests per batched MLLM decode step",
    buckets=(1, 2, 4, 8, 16, 32),
)
