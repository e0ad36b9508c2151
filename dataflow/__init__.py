"""Bytewax dataflow: Kafka events -> validated -> per-user decayed fold -> feature store."""
