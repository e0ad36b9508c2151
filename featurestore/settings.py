"""The one settings object for every process (API, dataflow, training, demo).

Every field reads from an environment variable with the ``RECSYS_`` prefix
(``half_life_seconds`` <- ``RECSYS_HALF_LIFE_SECONDS``), or from a ``.env`` file.
Dict fields take JSON: ``RECSYS_EVENT_WEIGHTS='{"view": 1, "purchase": 10}'``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[1]

DEFAULT_EVENT_WEIGHTS: dict[str, float] = {
    "view": 1.0,
    "click": 2.0,
    "add_to_cart": 4.0,
    "purchase": 8.0,
    "rating": 3.0,
}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RECSYS_", env_file=".env", extra="ignore", validate_default=True
    )

    # --- Kafka -------------------------------------------------------------
    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092",
        description="Comma-separated host:port list. Left unset, `just serve` and the demo "
        "start the dev broker (tansu) on loopback.",
    )
    events_topic: str = "events"
    dead_letter_topic: str = "events.dlq"
    topic_partitions: int = Field(4, ge=1, description="Partitions created for new topics.")
    start_offset: Literal["earliest", "latest"] = Field(
        "earliest",
        description="Where the dataflow starts reading a partition it has no position for. "
        "Re-reading is safe: each user's state remembers the last offset it applied.",
    )
    max_event_bytes: int = Field(16_384, ge=256, description="Larger messages are dead-lettered.")

    # --- Storage -----------------------------------------------------------
    qdrant_url: str | None = Field(
        None, description="Qdrant server URL. Unset: embedded Qdrant Edge under state_dir."
    )
    qdrant_api_key: str | None = None
    state_dir: Path = Field(PROJECT_ROOT / "var", description="Store and model directories.")
    store_path: Path | None = Field(None, description="Qdrant Edge directory (embedded mode).")
    model_dir: Path | None = Field(None, description="Versioned model directories.")
    data_dir: Path = Field(
        PROJECT_ROOT.parent / "shared" / "data" / "ml-100k",
        description="MovieLens 100K in RecBole atomic format (.inter, .item).",
    )

    # --- Real-time fold ----------------------------------------------------
    half_life_seconds: float = Field(
        3600.0, gt=0, description="Half-life of the decayed user embedding and category counts."
    )
    event_weights: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS),
        description="Weight of each accepted event_type; other types are dead-lettered.",
    )
    recent_items: int = Field(20, ge=1, le=500, description="Recent items kept per user.")
    session_gap_seconds: float = Field(
        1800.0, gt=0, description="Inactivity that starts a new session when events carry none."
    )
    max_future_seconds: float = Field(
        300.0, ge=0, description="Events stamped further ahead of the wall clock are rejected."
    )
    trending_half_life_seconds: float = Field(86400.0, gt=0)  # issue 3: 6 h -> 1 day, tuned

    # --- Serving -----------------------------------------------------------
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    candidates: int = Field(300, ge=10, le=5000, description="ANN candidates before re-ranking.")
    max_k: int = Field(100, ge=1, le=1000)
    blend_mass: float = Field(
        3.0,
        gt=0,
        description="Real-time weight in the query is m/(m+blend_mass), m = decayed event weight.",
    )
    weight_ann: float = 1.0
    weight_category: float = 0.0  # issue 3: 0.3 -> 0.0 and popularity 0.15 -> 0.6, tuned
    weight_recent: float = 0.8
    weight_popularity: float = 0.6
    recent_similarity_half_life_seconds: float = Field(
        86400.0,  # issue 3: 30 min -> 1 day, tuned on the validation slice
        gt=0,
        description="How fast 'because you just watched X' fades.",
    )
    recent_position_decay: float = Field(
        0.7, gt=0, le=1, description="Each older recent item counts this much less than the next."
    )
    model_poll_seconds: float = Field(
        2.0, gt=0, description="How often serving checks for a newly published model."
    )
    auto_publish_latest: bool = Field(
        True,
        description="Embedded store: serving publishes and activates <model_dir>/LATEST when "
        "training could not (the serving process holds the store).",
    )
    inprocess_dataflow: bool | None = Field(
        None,
        description="Run the dataflow inside the API process. Default: yes for the embedded "
        "store (one process may open it), no with a Qdrant server.",
    )

    # --- Ranking knobs added with the streaming evaluation (issue 3) ------------
    # Chosen on the validation slice by `python -m training.evaluate --tune`; see the report.
    weight_covisit: float = Field(
        0.5,
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
    covisit_candidates: int = Field(
        100, ge=0, le=5000, description="Co-visited items added to the ANN candidates."
    )
    mmr_lambda: float = Field(
        1.0,
        ge=0,
        le=1,
        description="Diversity by maximal marginal relevance: 1 = off (pure relevance), "
        "lower = less similar items in one list.",
    )
    mmr_pool: int = Field(50, ge=1, le=1000, description="Re-ranked items MMR picks from.")
    weight_new_item: float = Field(
        0.4,
        ge=0,
        description="Boost for items with no training events (new or held out), which have "
        "no popularity or co-visitation to lift them. 0 turns it off.",
    )

    @field_validator("event_weights")
    @classmethod
    def _weights_positive(cls, v: dict[str, float]) -> dict[str, float]:
        if not v:
            raise ValueError("event_weights must name at least one event type")
        bad = {k: w for k, w in v.items() if not w > 0}
        if bad:
            raise ValueError(f"event weights must be > 0, got {bad}")
        return v

    @model_validator(mode="after")
    def _derive_paths(self) -> Settings:
        if self.store_path is None:
            self.store_path = self.state_dir / "qdrant"
        if self.model_dir is None:
            self.model_dir = self.state_dir / "models"
        if self.inprocess_dataflow is None:
            self.inprocess_dataflow = self.qdrant_url is None
        return self

    @property
    def embedded(self) -> bool:
        return self.qdrant_url is None

    @property
    def kafka_configured(self) -> bool:
        """True when the operator named a broker, so no dev broker should be started."""
        return "kafka_bootstrap_servers" in self.model_fields_set


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
