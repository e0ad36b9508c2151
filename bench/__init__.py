"""Benchmarks (`just bench`): ``bench.flow`` (dataflow throughput and freshness),
``bench.serving`` (the service under load), and ``bench.synthetic``, the synthetic world
they load."""
