"""Kafka clients shared by the API, the CLI and the benchmarks: the producer and the
admin calls. The dataflow's own source and sinks live in ``dataflow/``.
"""
