"""Prometheus metrics of the dataflow (exported by the API's /metrics when in-process)."""

from prometheus_client import Counter, Histogram

EVENTS_IN = Counter("recsys_events_in_total", "Messages read from the events topic")
EVENTS_FOLDED = Counter("recsys_events_folded_total", "Events applied to a user's state")
EVENTS_DEAD_LETTERED = Counter(
    "recsys_events_dead_lettered_total", "Messages sent to the dead-letter topic", ["reason"]
)
EVENTS_DUPLICATE = Counter(
    "recsys_events_duplicate_total", "Replayed messages skipped (offset already applied)"
)
UNKNOWN_ITEMS = Counter(
    "recsys_events_unknown_item_total", "Events folded whose item has no vector in the model"
)
FOLD_LAG = Histogram(
    "recsys_fold_lag_seconds",
    "Kafka record time to fold",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60),
)
STORE_WRITE_SECONDS = Histogram(
    "recsys_store_write_seconds", "Duration of one batched feature-store write", ["collection"]
)
STORE_BATCH_SIZE = Histogram(
    "recsys_store_batch_points",
    "Points per batched feature-store write",
    ["collection"],
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000),
)
