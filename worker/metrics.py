"""WorkerMetrics: the Prometheus metrics of one worker, in a registry of its own.

The pool reports what happened (a batch ran, results were stored, a record was
rejected); gauges that describe the present (in-flight requests, oldest request age,
consumer lag) are computed when Prometheus scrapes, from functions the pool provides.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from inferpool.protocol import Priority, ResultRecord
from worker.histograms import BulkHistogram
from worker.service_rates import ServiceRates

LATENCY_BUCKETS_S = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 256)

TOKEN_LATENCY_BUCKETS_S = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)

LagFunction = Callable[[], dict[tuple[str, int], int]]


class GenerationMetrics:
    """The step engine's: sequences running and waiting, KV cache use, time to first
    token, inter-token latency, generated tokens, finish reasons (per model)."""

    def __init__(self, r: CollectorRegistry) -> None:
        self.running = Gauge("inferpool_running_sequences",
                             "Generations decoding or prefilling", ["model"], registry=r)
        self.waiting = Gauge("inferpool_waiting_sequences",
                             "Generations admitted and not started", ["model"], registry=r)
        self.kv_cache_usage = Gauge("inferpool_kv_cache_usage_ratio",
                                    "KV cache positions in use over those allocated",
                                    ["model"], registry=r)
        self.kv_cache_bytes = Gauge("inferpool_kv_cache_bytes", "KV cache memory allocated",
                                    ["model"], registry=r)
        self.time_to_first_token = Histogram(
            "inferpool_time_to_first_token_seconds", "A generation's start to its first token",
            ["model"], buckets=LATENCY_BUCKETS_S, registry=r)
        self.inter_token = Histogram(
            "inferpool_inter_token_latency_seconds", "Between two tokens of one generation",
            ["model"], buckets=TOKEN_LATENCY_BUCKETS_S, registry=r)
        self.tokens = Counter("inferpool_generated_tokens", "Tokens generated", ["model"],
                              registry=r)
        self.finished = Counter("inferpool_generations_finished",
                                "Generations ended, by finish reason", ["model", "reason"],
                                registry=r)
        self.guard = Gauge("inferpool_model_agreement_tokens",
                           "Agreement of a generative model's served precision with fp32",
                           ["model", "precision", "stat"], registry=r)
        self.steps = Counter("inferpool_generation_steps", "Decode/prefill steps run",
                             ["model"], registry=r)
        self.compute = Counter("inferpool_generation_compute_seconds",
                               "Model time of the steps, by phase", ["model", "phase"],
                               registry=r)

    def step(self, model: str, running: int, waiting: int, used: int, capacity: int,
             allocated_bytes: int) -> None:
        self.steps.labels(model).inc()
        self.running.labels(model).set(running)
        self.waiting.labels(model).set(waiting)
        self.kv_cache_usage.labels(model).set(used / capacity if capacity else 0.0)
        self.kv_cache_bytes.labels(model).set(allocated_bytes)

    def computed(self, model: str, prefill_s: float, decode_s: float) -> None:
        self.compute.labels(model, "prefill").inc(prefill_s)
        self.compute.labels(model, "decode").inc(decode_s)

    def token(self, model: str, first_token_s: float | None, gap_s: float | None) -> None:
        self.tokens.labels(model).inc()
        if first_token_s is not None:
            self.time_to_first_token.labels(model).observe(first_token_s)
        if gap_s is not None:
            self.inter_token.labels(model).observe(gap_s)

    def finish(self, model: str, reason: str) -> None:
        self.finished.labels(model, reason).inc()


class _LagCollector(Collector):
    def __init__(self, lag: LagFunction) -> None:
        self._lag = lag

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "inferpool_consumer_lag",
            "Records in the partition not yet committed by the group",
            labels=["topic", "partition"],
        )
        for (topic, partition), lag in sorted(self._lag().items()):
            family.add_metric([topic, str(partition)], lag)
        yield family


class WorkerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "inferpool_requests",
            "Requests answered, by model and status",
            ["model", "status"],
            registry=r,
        )
        self.errors = Counter(
            "inferpool_errors", "Error results, by stable error code", ["code"], registry=r
        )
        self.dead_letters = Counter(
            "inferpool_dead_letters",
            "Records sent to the dead-letter topic, by error code",
            ["code"],
            registry=r,
        )
        self.batches = Counter(
            "inferpool_batches",
            "Batches run, by why they were closed",
            ["model", "reason"],
            registry=r,
        )
        self.batch_size = Histogram(
            "inferpool_batch_size",
            "Requests per batch",
            ["model"],
            buckets=BATCH_SIZE_BUCKETS,
            registry=r,
        )
        self.queue_wait = BulkHistogram(
            "inferpool_queue_wait_seconds",
            "Submit to fetched by a worker",
            ["model"],
            LATENCY_BUCKETS_S,
            r,
        )
        self.batch_wait = BulkHistogram(
            "inferpool_batch_wait_seconds",
            "Fetched to its batch starting",
            ["model"],
            LATENCY_BUCKETS_S,
            r,
        )
        self.inference = Histogram(
            "inferpool_inference_seconds",
            "Model time per batch",
            ["model"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.end_to_end = BulkHistogram(
            "inferpool_end_to_end_seconds",
            "Submit to result stored",
            ["model"],
            LATENCY_BUCKETS_S,
            r,
        )
        self.dead_letter_retries = Counter(
            "inferpool_dead_letter_retries",
            "Dead-letter copies sent again because the broker did not acknowledge",
            registry=r,
        )
        self.dead_letter_failures = Counter(
            "inferpool_dead_letter_failures",
            "Dead-letter copies given up (the topic missing, refused or down; the queue full)",
            ["reason"],
            registry=r,
        )
        self.fetch_errors = Counter(
            "inferpool_fetch_errors",
            "Fetches that failed for another reason than a lost connection, by error",
            ["error"],
            registry=r,
        )
        self.commit_failures = Counter(
            "inferpool_commit_failures",
            "Offset commits that failed (rebalance, broker unreachable)",
            registry=r,
        )
        self.store_retries = Counter(
            "inferpool_result_store_retries",
            "Result writes retried because Redis was unavailable",
            registry=r,
        )
        self.model_load = Gauge(
            "inferpool_model_load_seconds",
            "Time to load (and check) a model",
            ["model"],
            registry=r,
        )
        self.agreement = Gauge(
            "inferpool_model_agreement_cosine",
            "Agreement of the served precision with fp32 at load time",
            ["model", "precision", "stat"],
            registry=r,
        )
        self.agreement_by_category = Gauge(
            "inferpool_model_agreement_cosine_by_category",
            "Agreement with fp32 at load time, per category of the guard's check set, for "
            "the served precision and every refused one",
            ["model", "precision", "category", "stat"],
            registry=r,
        )
        self.retrieval_agreement = Gauge(
            "inferpool_model_retrieval_agreement",
            "Retrieval agreement with fp32 rankings at load time (top1, top10, overlap10)",
            ["model", "precision", "stat"],
            registry=r,
        )
        self.inflight = Gauge(
            "inferpool_inflight_requests", "Fetched requests not yet answered", registry=r
        )
        self.oldest_age = Gauge(
            "inferpool_oldest_unprocessed_age_seconds",
            "Age since submit of the oldest request this worker holds",
            registry=r,
        )
        self.ready = Gauge("inferpool_ready", "1 when the worker is ready to serve", registry=r)
        self.lane_requests = Counter(
            "inferpool_lane_requests",
            "Requests answered, by the lane (topic) they came in and status",
            ["lane", "status"],
            registry=r,
        )
        self.lane_end_to_end = BulkHistogram(
            "inferpool_lane_end_to_end_seconds",
            "Submit to result stored, by lane",
            ["lane"],
            LATENCY_BUCKETS_S,
            r,
        )
        self.generation = GenerationMetrics(r)
        self.service_rates = ServiceRates()  # read by the load summaries

    def watch(
        self,
        inflight: Callable[[], float],
        oldest_age: Callable[[], float],
        ready: Callable[[], bool],
        lag: LagFunction,
    ) -> None:
        """Gauges read at scrape time."""
        self.inflight.set_function(inflight)
        self.oldest_age.set_function(oldest_age)
        self.ready.set_function(lambda: 1.0 if ready() else 0.0)
        self.registry.register(_LagCollector(lag))

    def model_loaded(self, model: Any) -> None:
        load_seconds = getattr(model, "load_seconds", None)
        if load_seconds is not None:
            self.model_load.labels(model.name).set(load_seconds)
        choice = getattr(model, "choice", None)
        figures = getattr(choice, "figures", None)  # a generative model's guard figures
        if figures is not None:
            precision = choice.precision.value  # type: ignore[union-attr]
            self.generation.guard.labels(model.name, precision, "top1").set(figures.top1_agreement)
            self.generation.guard.labels(model.name, precision, "greedy_prefix").set(
                figures.greedy_prefix
            )
        if choice is not None and getattr(choice, "agreement", None) is not None:
            precision = choice.precision.value
            self.agreement.labels(model.name, precision, "mean").set(choice.agreement.mean_cosine)
            self.agreement.labels(model.name, precision, "min").set(choice.agreement.min_cosine)
        if choice is not None:
            self._guard_figures(model.name, choice)

    def _guard_figures(self, name: str, choice: Any) -> None:
        measured = [(choice.precision, getattr(choice, "by_category", None) or {},
                     getattr(choice, "retrieval", None))]
        for mode, figures in getattr(choice, "refused_measured", ()):
            measured.append((mode, figures.by_category, figures.retrieval))
        for mode, by_category, retrieval in measured:
            for category, result in by_category.items():
                labels = (name, mode.value, category)
                self.agreement_by_category.labels(*labels, "mean").set(result.mean_cosine)
                self.agreement_by_category.labels(*labels, "min").set(result.min_cosine)
            if retrieval is not None:
                for stat in ("top1", "top10", "overlap10"):
                    self.retrieval_agreement.labels(name, mode.value, stat).set(
                        getattr(retrieval, stat))

    def batch_ran(
        self, model: str, size: int, reason: str, inference_s: float, batch_waits_s: Iterable[float]
    ) -> None:
        self.service_rates.batch_ran(model, size, inference_s)
        self.batches.labels(model, reason).inc()
        self.batch_size.labels(model).observe(size)
        self.inference.labels(model).observe(inference_s)
        self.batch_wait.observe_many((model,), batch_waits_s)

    def answered(self, records: Iterable[ResultRecord]) -> None:
        """Count stored results; label lookups are done once per (model, status) per call."""
        counts: dict[tuple[str, str], int] = defaultdict(int)
        end_to_end: dict[str, list[float]] = defaultdict(list)
        queue_wait: dict[str, list[float]] = defaultdict(list)
        for record in records:
            model = record.model or "unknown"
            counts[(model, record.status.value)] += 1
            if record.error is not None:
                self.errors.labels(record.error.code).inc()
            if record.timings.end_to_end_ms:
                end_to_end[model].append(record.timings.end_to_end_ms / 1000)
            if record.timings.queue_wait_ms:
                queue_wait[model].append(record.timings.queue_wait_ms / 1000)
        for (model, status), count in counts.items():
            self.requests.labels(model, status).inc(count)
        for histogram, samples in ((self.end_to_end, end_to_end), (self.queue_wait, queue_wait)):
            for model, values in samples.items():
                histogram.observe_many((model,), values)

    def answered_in_lanes(self, answers: Iterable[tuple[Priority, ResultRecord]]) -> None:
        counts: dict[tuple[str, str], int] = defaultdict(int)
        latencies: dict[str, list[float]] = defaultdict(list)
        for lane, record in answers:
            counts[(lane.value, record.status.value)] += 1
            if record.timings.end_to_end_ms:
                latencies[lane.value].append(record.timings.end_to_end_ms / 1000)
        for (name, status), count in counts.items():
            self.lane_requests.labels(name, status).inc(count)
        for name, values in latencies.items():
            self.lane_end_to_end.observe_many((name,), values)

    def exposition(self) -> bytes:
        return bytes(generate_latest(self.registry))
