"""The one settings object for every process (API, dataflow, training, demo), grouped by
component. Every default is defined here and nowhere else.

Each field reads from an environment variable named ``RECSYS_<GROUP>_<FIELD>``
(``fold.half_life_seconds`` <- ``RECSYS_FOLD_HALF_LIFE_SECONDS``,
``kafka.bootstrap_servers`` <- ``RECSYS_KAFKA_BOOTSTRAP_SERVERS``); the fields at the top
(paths, training threads, log format) read ``RECSYS_<FIELD>`` (``RECSYS_STATE_DIR``,
``RECSYS_LOG_JSON``). A
``.env`` file works too. Dict, list and set fields take JSON:
``RECSYS_FOLD_EVENT_WEIGHTS='{"view": 1, "purchase": 10}'``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[1]

DEFAULT_EVENT_WEIGHTS: dict[str, float] = {
    "view": 1.0,
    "click": 2.0,
    "add_to_cart": 4.0,
    "purchase": 8.0,
    "rating": 3.0,
}


class _Group(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class KafkaSettings(_Group):
    bootstrap_servers: str = Field(
        "127.0.0.1:9092",
        description="Comma-separated host:port list. Left unset, `recsys serve` and the demo "
        "start the dev broker (tansu) on loopback.",
    )
    events_topic: str = "events"
    items_topic: str = Field(
        "items",
        description="Catalogue writes (POST/PATCH/DELETE /items), keyed by item id; the "
        "dataflow folds them into the live catalogue.",
    )
    dead_letter_topic: str = "events.dlq"
    impressions_topic: str = Field(
        "impressions",
        description="What each response served (request_id, user, items, positions, scores, "
        "model version, variant), for joining later clicks to impressions.",
    )
    topic_partitions: int = Field(4, ge=1, description="Partitions created for new topics.")
    start_offset: Literal["earliest", "latest"] = Field(
        "earliest",
        description="Where the dataflow starts reading a partition it has no position for. "
        "Re-reading is safe: each user's state remembers the last offset it applied.",
    )
    fetch_wait_ms: int = Field(
        20,
        ge=0,
        description="librdkafka fetch.wait.max.ms: how long the broker may hold a fetch "
        "waiting for data. 500 adds ~140 ms on the dev broker; 5 makes it spin (1-1.5 "
        "cores); 20 measured p99 19 ms at 5k events/s.",
    )
    poll_batch: int = Field(
        5_000,
        ge=1,
        description="Most events the dataflow takes from one partition at a time (its "
        "micro-batch). Live, a batch is what arrived since the last poll; behind, batches "
        "grow to this and fold each user's burst into one store write (1,000 wrote 0.22 "
        "states per event catching up, 5,000 0.18, 50,000 0.10). A batch of every partition "
        "a worker reads must fold well within dataflow.stall_seconds.",
    )
    consumer_config: dict[str, str | int] = Field(
        default_factory=dict, description="Extra librdkafka consumer settings (JSON)."
    )
    probe_seconds: float = Field(
        1.0,
        gt=0,
        description="How often the API and the in-process dataflow probe the cluster and the "
        "events topic's end offsets (for /readyz, a fast 503 on POST /events, consumer lag "
        "and noticing a recreated topic).",
    )


class QdrantSettings(_Group):
    url: str | None = Field(
        None, description="Qdrant server URL. Unset: embedded Qdrant Edge under state_dir."
    )
    api_key: str | None = None
    path: Path | None = Field(
        None, description="Qdrant Edge directory (embedded mode). Default: <state_dir>/qdrant."
    )


class FoldSettings(_Group):
    """The event contract's limits and the real-time fold's maths."""

    event_weights: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS),
        description="Weight of each accepted event_type; other types are dead-lettered.",
    )
    half_life_seconds: float = Field(
        60.0,
        gt=0,
        description="Half-life of the decayed user embedding and category counts; training "
        "pools histories with the same value (MovieLens users rate page after page, seconds "
        "apart: the last page or two predict the next pick best).",
    )
    recent_items: int = Field(20, ge=1, le=500, description="Recent items kept per user.")
    seen_cap: int = Field(
        5000,
        ge=0,
        le=100_000,
        description="Items each user's state remembers as interacted with, so that "
        "recommendations leave them out (`exclude_seen`): at least the most recent this "
        "many distinct catalogue items, 4 bytes each, at most a quarter more between "
        "compactions (MovieLens 100K's longest history is 737 items, ML-1M's 2,314). Older "
        "ones may be recommended again; 0 remembers none (only the recent items and the "
        "training history are left out then).",
    )
    session_gap_seconds: float = Field(
        1800.0, gt=0, description="Inactivity that starts a new session when events carry none."
    )
    trending_half_life_seconds: float = Field(
        86400.0, gt=0, description="Half-life of the per-item event counts behind trending."
    )
    trending_enabled: bool = Field(
        True,
        description='Count "trending now": a decayed event count per item, which cold starts '
        "and the popularity term read. Off, the dataflow keeps no per-item count and the API "
        "uses the catalogue's popularity alone. Each count is a store write of its own, at "
        "most once a second per item: with a large catalogue that is about one write per "
        "event, the flow's largest cost (docs/benchmarks.md).",
    )
    trending_min_users: int = Field(
        3,
        ge=1,
        description='An item counts as "trending now" only once this many distinct users '
        "had an event on it since it last went one trending half-life without events (one "
        "user's burst is not a trend). Items not in the active model's catalogue never count.",
    )
    max_future_seconds: float = Field(
        300.0, ge=0, description="Events stamped further ahead of the wall clock are rejected."
    )
    max_event_bytes: int = Field(16_384, ge=256, description="Larger messages are dead-lettered.")
    min_timestamp: datetime = Field(
        datetime(2000, 1, 1, tzinfo=UTC),
        description="Events stamped before this time are rejected as `too_old` (dead-lettered "
        "by the dataflow, 422 at POST /events): a 0 or a date in 1970 is a producer's bug, not "
        "an event. RFC 3339; without a timezone, UTC.",
    )

    @field_validator("min_timestamp")
    @classmethod
    def _utc_if_naive(cls, v: datetime) -> datetime:
        return v if v.tzinfo is not None else v.replace(tzinfo=UTC)

    @field_validator("event_weights")
    @classmethod
    def _weights_positive(cls, v: dict[str, float]) -> dict[str, float]:
        if not v:
            raise ValueError("event_weights must name at least one event type")
        bad = {k: w for k, w in v.items() if not w > 0}
        if bad:
            raise ValueError(f"event weights must be > 0, got {bad}")
        return v


class DataflowSettings(_Group):
    inprocess: bool | None = Field(
        None,
        description="Run the dataflow inside the API process. Default: yes for the embedded "
        "store (one process may open it), no with a Qdrant server.",
    )
    state_ttl_seconds: float = Field(
        3600.0,
        gt=0,
        description="A user (or item) with no event for this long leaves the dataflow's "
        "memory; its features stay in the store and are read back on its next event.",
    )
    state_shards: int = Field(
        32,
        ge=1,
        le=4096,
        description="Shards each stateful step spreads its users (items) over: the unit "
        "Bytewax distributes across workers and snapshots. A few per worker is enough; the "
        "cost of an epoch grows with shards, not with users. Changing it moves keys to other "
        "shards: users lose nothing (the store holds them), trend counts not written yet "
        "(up to trend_emit_seconds) may be.",
    )
    trend_emit_seconds: float = Field(
        1.0,
        ge=0,
        description="An item's trending count is written at most this often (hours-long "
        "half-life: a second's delay does not matter, the writes do).",
    )
    model_migrate_seconds: float = Field(
        60.0,
        gt=0,
        description="After a model switch, users held by the dataflow move to the new item "
        "space within this time, event or not (others move at their next event or read). "
        "Each shard of the flow checks the active version once per interval.",
    )
    stall_seconds: float = Field(
        3.0,
        gt=0,
        description="The in-process dataflow counts as stalled (/readyz answers 503) when "
        "events wait on a partition and the flow's position on it has not moved for this long.",
    )
    exit_at_end: bool = Field(
        False,
        description="Stop the dataflow once every partition is read to its end (backfills, "
        "tests) instead of waiting for new events.",
    )


class RecoverySettings(_Group):
    enabled: bool = Field(
        True,
        description="Bytewax recovery: snapshot state and Kafka offsets each epoch, resume "
        "from them after a crash or restart. Off only for throwaway runs.",
    )
    dir: Path | None = Field(
        None, description="Recovery partitions (SQLite). Default: <state_dir>/recovery."
    )
    partitions: int = Field(
        1, ge=1, description="Recovery partitions created when the recovery dir is new."
    )
    prune_seconds: float = Field(
        30.0,
        gt=0,
        description="How often the deletion markers Bytewax keeps for expired keys are "
        "removed from the recovery partitions. Bytewax keeps one per key ever discarded, "
        "and every epoch close scans them all, so without this the close grows slower "
        "with every user ever seen.",
    )
    epoch_seconds: float = Field(
        1.0,
        gt=0,
        description="Bytewax epoch length: state snapshots and offsets are committed at each "
        "epoch close; a crash replays at most this much input. Each close stalls the worker "
        "for the keys touched in the epoch plus a scan of all held snapshots "
        "(docs/benchmarks.md, What bounds freshness).",
    )


class RankingSettings(_Group):
    """Retrieval and re-ranking. The ``weight_*`` to ``weight_sequence`` fields are
    the per-request ranking parameters (``core.ranking.RankParams``); A/B ``variants``
    override them by these same names."""

    candidates: int = Field(300, ge=10, le=5000, description="ANN candidates before re-ranking.")
    covisit_candidates: int = Field(
        100, ge=0, le=5000, description="Co-visited items added to the ANN candidates."
    )
    blend_mass: float = Field(
        1.0,
        gt=0,
        description="Real-time weight in the query is m/(m+blend_mass), m = decayed event weight.",
    )
    min_realtime_mass: float = Field(
        1e-4,
        ge=0,
        description="A real-time vector whose decayed event weight, as of the user's last "
        "event, is below this (its items were followed by long silence and unknown items) "
        "counts as absent, as a zero or non-finite one does: the query is the long-term "
        "profile, or cold start. 1e-4 is where the fold drops category shares too.",
    )
    weight_ann: float = Field(1.0, description="Weight of the query-item cosine.")
    weight_category: float = Field(
        0.0, description="Weight of the user's share of activity in the item's categories."
    )
    weight_recent: float = Field(
        0.0, description="Weight of the similarity to the user's most recent items."
    )
    weight_popularity: float = Field(
        0.4, description="Weight of max(catalogue popularity, trending now)."
    )
    recent_similarity_half_life_seconds: float = Field(
        86400.0, gt=0, description="How fast 'because you just watched X' fades."
    )
    recent_position_decay: float = Field(
        0.7, gt=0, le=1, description="Each older recent item counts this much less than the next."
    )
    weight_covisit: float = Field(
        0.4,
        ge=0,
        description="Weight of the co-visitation term (items picked right after the user's "
        "last ones, published with the model). 0 turns it off.",
    )
    covisit_items: int = Field(
        20, ge=1, le=100, description="Newest recent items whose co-visited items count."
    )
    covisit_half_life_seconds: float = Field(
        30 * 86400.0, gt=0, description="How fast a recent item's co-visitation pull fades."
    )
    covisit_position_decay: float = Field(
        0.9, gt=0, le=1, description="Each older recent item's co-visitation counts this much less."
    )
    weight_new_item: float = Field(
        0.2,
        ge=0,
        description="Boost for items with no training events (new or held out), which have "
        "no popularity or co-visitation to lift them. 0 turns it off.",
    )
    weight_session: float = Field(
        0.8,
        ge=0,
        description="Weight of the session term: cosine of the item to the user head applied "
        "to the user's recent items pooled by position (not time), so a pause does not "
        "erase the session the way the time-decayed query's real-time side fades. 0 turns "
        "it off.",
    )
    session_position_decay: float = Field(
        0.8,
        gt=0,
        le=1,
        description="Each older recent item counts this much less in the session term.",
    )
    weight_sequence: float = Field(
        0.0,
        ge=0,
        description="Weight of the learned session model's term: how likely the item is to "
        "come next after the user's recent items and the time gaps between them (a "
        "self-attention encoder trained with each model version, session.npz in its model "
        "directory). 0, or a version without one, turns it off.",
    )
    mmr_lambda: float = Field(
        1.0,
        ge=0,
        le=1,
        description="Diversity by maximal marginal relevance: 1 = off (pure relevance), "
        "lower = less similar items in one list.",
    )
    mmr_pool: int = Field(50, ge=1, le=1000, description="Re-ranked items MMR picks from.")
    similar_weight_covisit: float = Field(
        0.5,
        ge=0,
        description="Similar items (GET /items/{id}/similar): weight of the co-visitation "
        "weight (0..1, published with the model) added to the cosine of the two items' "
        "vectors. 0 ranks by the cosine alone.",
    )
    variants: dict[str, dict[str, float]] = Field(
        default_factory=lambda: {"default": dict[str, float]()},
        description="Named ranking configurations: overrides of the per-request ranking "
        'parameters by their names here (e.g. {"control": {}, "fresh": {"weight_recent": '
        "1.2}}). With two or more, each user is bucketed deterministically by a hash of "
        "ab_salt and the user id.",
    )
    ab_salt: str = Field("ab1", description="Change it to re-shuffle users between variants.")

    @field_validator("variants")
    @classmethod
    def _some_variant(cls, v: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        if not v:
            raise ValueError("variants must name at least one variant")
        return v


class ApiSettings(_Group):
    # RECSYS_API_URL and RECSYS_API_KEY are the CLI's (where to reach the API), not fields.
    model_config = ConfigDict(extra="ignore", validate_default=True)

    host: str = "127.0.0.1"
    port: int = 8000
    max_k: int = Field(100, ge=1, le=1000)
    model_poll_seconds: float = Field(
        2.0, gt=0, description="How often serving checks for a newly published model."
    )
    auto_publish_latest: bool = Field(
        True,
        description="Embedded store: serving publishes and activates <model_dir>/LATEST when "
        "training could not (the serving process holds the store).",
    )
    write_keys: set[str] = Field(
        default_factory=set,
        description="Keys accepted in X-API-Key for POST /events and every other write "
        "(admin keys work too). Once any key (read, write or admin) is configured, writes "
        "need one of these or an admin key; with no key at all, writes are open "
        "(development; the start-up log warns).",
    )
    admin_keys: set[str] = Field(
        default_factory=set,
        description="Keys for the /admin endpoints (publish, activate, reload). Empty: the "
        "admin endpoints answer 403.",
    )
    read_keys: set[str] = Field(
        default_factory=set,
        description="Keys for the read endpoints (recommendations, users, items); write and "
        "admin keys work too. Empty: reads are open.",
    )
    ready_requires_kafka: bool = Field(
        True,
        description="/readyz answers 503 while Kafka is unreachable. Set false on API replicas "
        "that should keep serving reads through a Kafka outage (POST /events answers 503 "
        "meanwhile).",
    )
    max_request_bytes: int = Field(
        1 << 20, ge=1024, description="Larger request bodies get 413 before they are read."
    )
    max_filter_categories: int = Field(
        50, ge=1, description="At most this many categories per include/exclude filter."
    )
    impressions_enabled: bool = True
    access_log: Literal["all", "errors_and_slow", "off"] = Field(
        "errors_and_slow",
        description="JSON access-log lines: every request, or only 4xx/5xx answers and "
        "requests slower than access_log_slow_ms (a line per request costs ~15 % of "
        "recommendation throughput), or none.",
    )
    access_log_slow_ms: float = Field(100.0, ge=0)


class CatalogSettings(_Group):
    warm_encoder: bool = Field(
        True,
        description="Load the text encoder in the background when the dataflow starts (a "
        "few seconds, about 300 MB), so the first catalogue write is as fast as the rest; "
        "false: at the first catalogue write (which then waits for it).",
    )
    catalog_refresh_seconds: float = Field(
        0.2,
        gt=0,
        description="How often the API and the dataflow look for catalogue writes in the "
        "store (one point read when nothing changed): the most a new item waits to be "
        "recommendable after the dataflow wrote it.",
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RECSYS_",
        env_nested_delimiter="_",
        env_nested_max_split=1,
        env_file=".env",
        extra="ignore",
        validate_default=True,
    )

    state_dir: Path = Field(PROJECT_ROOT / "var", description="Store and model directories.")
    model_dir: Path | None = Field(
        None, description="Versioned model directories. Default: <state_dir>/models."
    )
    data_dir: Path = Field(
        PROJECT_ROOT.parent / "shared" / "data" / "ml-100k",
        description="MovieLens 100K in RecBole atomic format (.inter, .item).",
    )
    train_threads: int = Field(
        1,
        ge=1,
        description="Threads of torch (intra-op; inter-op is 1) and numpy's BLAS in "
        "training. One keeps training steady when other jobs share the cores (two threads "
        "on two shared cores wait on each other: an epoch took 5x longer, "
        "docs/benchmarks.md) and results the same from run to run for a seed; raise it on "
        "a machine with idle cores.",
    )
    log_json: bool | None = Field(
        None,
        description="Log JSON lines (true) or readable text (false). Unset: text on a "
        "terminal, JSON lines otherwise (containers, CI, files, log shippers).",
    )
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    qdrant: QdrantSettings = Field(default_factory=QdrantSettings)
    fold: FoldSettings = Field(default_factory=FoldSettings)
    dataflow: DataflowSettings = Field(default_factory=DataflowSettings)
    recovery: RecoverySettings = Field(default_factory=RecoverySettings)
    ranking: RankingSettings = Field(default_factory=RankingSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    catalog: CatalogSettings = Field(default_factory=CatalogSettings)

    @model_validator(mode="after")
    def _derive_paths(self) -> Settings:
        if self.model_dir is None:
            self.model_dir = self.state_dir / "models"
        if self.qdrant.path is None:
            self.qdrant.path = self.state_dir / "qdrant"
        if self.recovery.dir is None:
            self.recovery.dir = self.state_dir / "recovery"
        if self.dataflow.inprocess is None:
            self.dataflow.inprocess = self.qdrant.url is None
        return self

    def value(self, name: str) -> object:
        """A field's value by its name (see ``nested``)."""
        group = FIELD_GROUPS[name]
        return getattr(self if group is None else getattr(self, group), name)

    def with_values(self, **values: object) -> Settings:
        """A validated copy with fields changed by name (see ``nested``); paths left to
        derive (``None``) are derived again."""
        data = self.model_dump()
        for key, value in nested(values).items():
            if isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        return Settings(**data)

    @property
    def embedded(self) -> bool:
        return self.qdrant.url is None

    @property
    def kafka_configured(self) -> bool:
        """True when the operator named a broker, so no dev broker should be started."""
        return "bootstrap_servers" in self.kafka.model_fields_set


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def _field_groups() -> dict[str, str | None]:
    groups: dict[str, str | None] = {}
    for name, info in Settings.model_fields.items():
        model = info.annotation
        if isinstance(model, type) and issubclass(model, _Group):
            for field in model.model_fields:
                groups[field] = name
            groups[name] = None
        else:
            groups[name] = None
    return groups


FIELD_GROUPS = _field_groups()
"""Each field's group by its name (None: top level); a name is unique across groups."""


def nested(values: dict[str, object]) -> dict[str, object]:
    """Field values by name (``epoch_seconds=0.2``, ``weight_recent=1.0``) in the nested
    shape ``Settings`` takes (``{"recovery": {"epoch_seconds": 0.2}, ...}``). A group's name
    with a dict passes through."""
    out: dict[str, object] = {}
    for name, value in values.items():
        if name not in FIELD_GROUPS:
            raise ValueError(f"unknown setting {name!r}")
        group = FIELD_GROUPS[name]
        if group is None:
            prev = out.get(name)
            out[name] = (
                {**prev, **value} if isinstance(prev, dict) and isinstance(value, dict) else value
            )
        else:
            grouped = out.setdefault(group, {})
            if not isinstance(grouped, dict):
                raise ValueError(f"setting {name!r} given with its group {group!r} not a dict")
            grouped[name] = value
    return out


ENV_NAMES = frozenset(
    f"RECSYS_{name if group is None else f'{group}_{name}'}".upper()
    for name, group in FIELD_GROUPS.items()
    if group is not None or not isinstance(getattr(Settings(), name), _Group)
)
"""Every environment variable a setting reads."""
