"""The CLI's direct paths: the model registry in the store, and the Kafka topics.

Used when no service runs (``recsys models --store``, or the API did not answer) and by
``recsys init`` in a deployment's init job. The logic is ``featurestore.publish``'s and the
store's own; this module only adds one-line errors for the operator.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from api.routes.admin import overview_of
from client.models import ModelsOverview
from core.artifacts import latest_version
from core.settings import Settings
from eventlog import admin
from featurestore.backend import StoreError, StoreLocked
from featurestore.publish import publish_model_dir
from featurestore.store import FeatureStore
from infra.cli.remote import CliError


@contextmanager
def open_store(settings: Settings) -> Iterator[FeatureStore]:
    if settings.embedded:
        assert settings.qdrant.path is not None
        if not settings.qdrant.path.exists():
            raise CliError(
                f"no embedded store at {settings.qdrant.path} (set RECSYS_STATE_DIR, or "
                "RECSYS_QDRANT_URL for a Qdrant server)"
            )
    try:
        store = FeatureStore.open(settings)
    except StoreLocked as e:
        raise CliError(f"{e}: a running service holds it; ask it through --api-url") from None
    except Exception as e:  # a Qdrant server that does not answer, a broken store
        raise CliError(f"cannot open the store: {e}") from None
    try:
        yield store
    finally:
        store.close()


def overview(store: FeatureStore) -> ModelsOverview:
    """The store's model registry, typed as GET /models answers it."""
    return ModelsOverview.model_validate(overview_of(store.models_overview()).model_dump())


def activate(store: FeatureStore, version: str) -> ModelsOverview:
    try:
        store.activate(version)
    except StoreError as e:
        raise CliError(f"{e}; published: {[m.version for m in store.list_models()]}") from None
    return overview(store)


def publish(
    store: FeatureStore, settings: Settings, version: str | None, activate: bool
) -> ModelsOverview:
    assert settings.model_dir is not None
    version = version or latest_version(settings.model_dir)
    if version is None or not (settings.model_dir / version).is_dir():
        raise CliError(
            f"no trained model {version!r} under {settings.model_dir}; run `recsys train`"
        )
    publish_model_dir(store, settings.model_dir / version, activate, show_progress=True)
    return overview(store)


def ensure_live_model(settings: Settings, train_if_missing: bool) -> str:
    """What ``recsys init`` does after the topics: a model is active when it returns."""
    assert settings.model_dir is not None
    with open_store_creating(settings) as store:
        active = store.active_version()
        if active is not None:
            return f"model {active} is active; left as it is"
        version = latest_version(settings.model_dir)
        if version is not None:
            publish_model_dir(store, settings.model_dir / version, True, show_progress=True)
            return f"published and activated model {version}"
    if not train_if_missing:
        raise CliError(f"no trained model under {settings.model_dir}; run `recsys train`")
    from training.train import main as train  # torch: loaded only when init must train

    code = train([])  # publishes and activates at its end (featurestore.publish)
    if code:
        raise CliError(f"training failed (exit {code})")
    return f"trained, published and activated model {latest_version(settings.model_dir)}"


@contextmanager
def open_store_creating(settings: Settings) -> Iterator[FeatureStore]:
    """The store, created if new (a deployment's first start)."""
    if settings.embedded:
        assert settings.qdrant.path is not None
        settings.qdrant.path.mkdir(parents=True, exist_ok=True)
    with open_store(settings) as store:
        yield store


def create_topics(
    settings: Settings, partitions: int | None, replication_factor: int
) -> dict[str, int]:
    """Create the engine's topics if missing: name -> partitions created (0: existed)."""
    bootstrap = settings.kafka.bootstrap_servers
    if not admin.broker_answers(bootstrap, timeout=5):
        raise CliError(f"no Kafka broker answers at {bootstrap} (RECSYS_KAFKA_BOOTSTRAP_SERVERS)")
    n = partitions or settings.kafka.topic_partitions
    names = [
        settings.kafka.events_topic,
        settings.kafka.items_topic,
        settings.kafka.dead_letter_topic,
        settings.kafka.impressions_topic,
    ]
    try:
        return admin.create_topics(
            bootstrap, dict.fromkeys(names, n), replication_factor, timeout=30
        )
    except admin.TopicNotCreated as e:
        raise CliError(str(e)) from None
