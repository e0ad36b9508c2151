"""What operators run: the `recsys` CLI (``infra.cli``), the composition root that serves the
whole product in one process (``infra.serve``), the dev Kafka broker (``infra.broker``), log
replay (``infra.replay``), the demo (``infra.demo``), starting and stopping the service for
the demo, benchmarks and tests (``infra.process``), and deployment files (``infra/deploy``)."""
