"""The server's Prometheus metrics (`GET /metrics`), on a registry of its own per app."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# seconds: a CPU server's first token takes tens of milliseconds to seconds, a step milliseconds
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 20, 60)
ITL_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2, 5)


class Metrics:
    """Counters, histograms and gauges the app and the scheduler update (prometheus_client is
    thread-safe: the scheduler thread writes them while the event loop serves /metrics)."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter(
            "lmforge_requests",
            "HTTP requests by endpoint and status code",
            ["endpoint", "status"],
            registry=r,
        )
        self.sequences = Counter(
            "lmforge_sequences_finished",
            "generated sequences by how they ended: stop, length, cancelled (client gone) or error",
            ["reason"],
            registry=r,
        )
        self.prompt_tokens = Counter("lmforge_prompt_tokens", "prompt tokens prefilled", registry=r)
        self.generation_tokens = Counter("lmforge_generation_tokens", "tokens generated", registry=r)
        self.ttft = Histogram(
            "lmforge_time_to_first_token_seconds",
            "from a request's arrival to its first generated token",
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.inter_token = Histogram(
            "lmforge_inter_token_latency_seconds",
            "between successive tokens of one sequence",
            buckets=ITL_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "lmforge_queue_depth", "sequences waiting for a row of the batch", registry=r
        )
        self.running = Gauge(
            "lmforge_running_sequences", "sequences decoding in the running batch", registry=r
        )
        self.max_batch = Gauge("lmforge_max_batch", "rows of the running batch", registry=r)
        self.kv_cache_usage = Gauge(
            "lmforge_kv_cache_usage_ratio",
            "KV-cache slots holding running sequences / slots allocated",
            registry=r,
        )
        self.kv_cache_bytes = Gauge("lmforge_kv_cache_bytes", "KV-cache memory allocated", registry=r)
        self.steps = Counter("lmforge_batch_steps", "decode steps of the running batch", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
