"""The model a replay serves: a two-tower trained on the events before the cutoff, the
way ``training.train`` trains it, plus the co-visitation published with it and the
session model trained after it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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

    def record(self) -> ModelRecord:
        return ModelRecord(self.version, self.vectors.shape[1], "1970-01-01T00:00:00Z", self.head)


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
) -> Bundle:
    """Train on ``train`` only; items absent from it keep the shared id row (cold items
    placed by their text and categories alone). ``session`` None: no session model."""
    seed_everything(seed, settings.train_threads)
    rng = np.random.default_rng(seed)
    item_ids = [i.item_id for i in items]
    weights = settings.fold.event_weights
    model = TwoTower(
        text, category_matrix(items)[0], id_index(train, item_ids), model_cfg or ModelConfig()
    )
    examples = build_examples(train, item_ids, weights, fit_cfg.history, fit_cfg.half_life)
    fit(model, examples, item_log_q(train, item_ids), fit_cfg, rng, quiet=quiet)
    vectors, head = model.item_vectors(), model.head.export()
    bundle = assemble(train, items, vectors, head, settings, covisit, version)
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
