"""The model a replay serves: a two-tower trained on the events before the cutoff, the
way ``training.train`` trains it, plus the co-visitation published with it, the
session model trained after it and the item tower's head (what places items written
at run time). Held-out items are not in its trained catalogue: the replay adds each at
its first event, through the catalogue path (``evaluation.arrivals``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from core.items import ItemHead
from core.records import ItemRecord, ModelRecord, Profile, UserHead
from core.session import SessionModel
from core.settings import Settings
from training.covisit import CovisitConfig, covisit_matrix, with_covisit
from training.data import Interactions
from training.fit import FitConfig, build_examples, fit, item_log_q, seed_everything
from training.model import ModelConfig, TwoTower, category_matrix, id_index
from training.popularity import with_popularity
from training.profiles import SEEN_CAP, pooled_histories, seen_items, user_vectors
from training.sequence import SESSION, SeqConfig, train_session_model


@dataclass(slots=True)
class Bundle:
    """Everything ``FeatureStore.publish_model`` needs for one model version."""

    version: str
    items: list[ItemRecord]
    vectors: np.ndarray
    head: UserHead
    profiles: list[Profile]
    session: SessionModel | None = None
    item_head: ItemHead | None = None
    held_out: list[ItemRecord] = field(default_factory=list)
    """Items outside the trained catalogue: they enter the product's at their first event."""
    held_out_text: np.ndarray | None = None
    """(len(held_out), text_dim) their text vectors, as the encoder gives them."""

    def record(self) -> ModelRecord:
        return ModelRecord(self.version, self.vectors.shape[1], "1970-01-01T00:00:00Z", self.head)

    def catalogue(self) -> list[ItemRecord]:
        """Every item a replay may meet, by the replay's row: trained, then held out."""
        return self.items + self.held_out


def train_bundle(
    train: Interactions,
    items: list[ItemRecord],
    text: np.ndarray,
    settings: Settings,
    seed: int,
    fit_cfg: FitConfig,
    model_cfg: ModelConfig | None = None,
    covisit: CovisitConfig | None = None,
    version: str = "eval",
    quiet: bool = False,
    session: SeqConfig | None = SESSION,
    held_out: frozenset[str] = frozenset(),
) -> Bundle:
    """Train on ``train`` only; items absent from it keep the shared id row (placed by
    their text and categories alone). Items in ``held_out`` (no event of theirs may be
    in ``train``) are left out of the trained catalogue altogether and kept apart with
    their text vectors. ``session`` None: no session model."""
    seed_everything(seed, settings.train_threads)
    rng = np.random.default_rng(seed)
    kept = np.array([i.item_id not in held_out for i in items], dtype=bool)
    trained = [i for i, k in zip(items, kept, strict=True) if k]
    item_ids = [i.item_id for i in trained]
    weights = settings.fold.event_weights
    categories, category_names = category_matrix(trained)
    model = TwoTower(text[kept], categories, id_index(train, item_ids), model_cfg or ModelConfig())
    examples = build_examples(train, item_ids, weights, fit_cfg.history, fit_cfg.half_life)
    fit(model, examples, item_log_q(train, item_ids), fit_cfg, rng, quiet=quiet)
    vectors, head = model.item_vectors(), model.head.export()
    bundle = assemble(train, trained, vectors, head, settings, covisit, version)
    bundle.item_head = model.items.export_head(category_names)
    bundle.held_out = [i for i, k in zip(items, kept, strict=True) if not k]
    bundle.held_out_text = text[~kept]
    if session is not None:
        bundle.session, _ = train_session_model(train, item_ids, session, seed, vectors)
    return bundle


def assemble(
    train: Interactions,
    items: list[ItemRecord],
    vectors: np.ndarray,
    head: UserHead,
    settings: Settings,
    covisit: CovisitConfig | None = None,
    version: str = "eval",
) -> Bundle:
    """Profiles, seen lists, popularity and co-visitation from ``train``, as training
    publishes them."""
    item_ids = [i.item_id for i in items]
    users, pooled = pooled_histories(
        train, item_ids, vectors, settings.fold.event_weights, settings.fold.half_life_seconds
    )
    seen = seen_items(train, SEEN_CAP)
    profiles = [
        Profile(u, v, seen.get(u, []))
        for u, v in zip(users.tolist(), user_vectors(head, pooled), strict=True)
    ]
    covisit = covisit or CovisitConfig()
    published = with_covisit(
        with_popularity(items, train), covisit_matrix(train, item_ids, covisit)
    )
    return Bundle(version, published, vectors, head, profiles)
