"""Dev infrastructure: the local Kafka-compatible broker and the demo."""
