"""FastAPI service: real-time recommendations from the feature store."""
