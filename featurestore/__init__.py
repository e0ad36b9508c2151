"""The feature store: Qdrant collections, and the embedded (Qdrant Edge) and server
(qdrant-client) adapters behind one interface. Imports only ``core``."""

from featurestore.backend import StoreError, StoreLocked
from featurestore.store import FeatureStore

__all__ = ["FeatureStore", "StoreError", "StoreLocked"]
