"""Prometheus metrics of the dataflow (exported by the API's /metrics when in-process)."""

from prometheus_client import Counter, Gauge, Histogram

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
    "Kafka record time to fold, of the oldest event in each user's micro-batch",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60),
)
STORE_WRITE_SECONDS = Histogram(
    "recsys_store_write_seconds", "Duration of one batched feature-store write", ["collection"]
)
STORE_WRITE_RETRIES = Counter(
    "recsys_store_write_retries_total",
    "Feature-store writes that failed and were tried again (the flow waits meanwhile)",
    ["collection"],
)
STORE_BATCH_SIZE = Histogram(
    "recsys_store_batch_points",
    "Points per batched feature-store write",
    ["collection"],
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000),
)

# --- micro-batches, bounded state ------------------------------------------------------
FOLD_SECONDS = Histogram(
    "recsys_fold_batch_seconds",
    "Time to fold one key's micro-batch (sampled: 1 batch in 8)",
    ["step"],
    buckets=(1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1),
)
FOLD_BATCH_EVENTS = Histogram(
    "recsys_fold_batch_events",
    "Events in one key's micro-batch, coalesced into one state write (sampled: 1 in 8)",
    ["step"],
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 1000),
)
SOURCE_BATCH_MESSAGES = Histogram(
    "recsys_source_batch_messages",
    "Messages per batch read from Kafka and parsed together",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500),
)
CONSUMER_LAG = Gauge(
    "recsys_consumer_lag_messages",
    "Messages on the broker the dataflow has not taken through its steps yet: end offset "
    "minus the flow's position, per partition (every kafka.probe_seconds, also while the "
    "flow is stuck or down)",
    ["topic", "partition"],
)
USERS_MIGRATED = Counter(
    "recsys_users_migrated_total",
    "Users moved to a new model's item space without an event (model switch)",
)
USERS_ERASED = Counter(
    "recsys_users_erased_total",
    "Erasure markers read: the user's state dropped, the erasure recorded in the store",
)
STATE_KEYS = Gauge("recsys_state_keys", "Keys held in the dataflow's memory", ["step"])
STATE_EXPIRED = Counter(
    "recsys_state_expired_total", "Keys dropped from memory after the idle TTL", ["step"]
)
EVENTS_LATE = Counter(
    "recsys_events_late_total",
    "Events older than their user's latest event: folded with their decayed weight",
)
RECOVERY_PRUNED = Counter(
    "recsys_recovery_pruned_total",
    "Deletion markers of expired keys removed from the recovery partitions",
)


# --- topic incarnations: offsets of a recreated topic --------------------------------
OFFSETS_RESET = Counter(
    "recsys_offsets_reset_total",
    "Keys whose remembered Kafka offsets were dropped: they came from an earlier "
    "incarnation of the events topic (recreated, or the in-memory dev broker restarted)",
    ["step"],
)


class StepMetrics:
    """The labelled children of one stateful step, resolved once (``labels()`` costs ~1 us)."""

    SAMPLE = 8
    """Fold time and batch size are observed for one key batch in SAMPLE."""

    def __init__(self, step: str) -> None:
        self.batches = 0
        self.fold_seconds = FOLD_SECONDS.labels(step)
        self.batch_events = FOLD_BATCH_EVENTS.labels(step)
        self.keys = STATE_KEYS.labels(step)
        self.expired = STATE_EXPIRED.labels(step)
        self.offsets_reset = OFFSETS_RESET.labels(step)
