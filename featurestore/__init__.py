"""Feature store: Qdrant collections, payload schemas, and the embedded/server adapters."""

from core.settings import Settings, get_settings
from featurestore.backend import StoreError, StoreLocked
from featurestore.store import FeatureStore

__all__ = ["FeatureStore", "Settings", "StoreError", "StoreLocked", "get_settings"]
