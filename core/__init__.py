"""The pure core: the event contract, the decay fold, the real-time state and record
shapes with their codecs, the ranking maths, the model-artifact format and the settings.

Nothing here talks to Kafka or Qdrant; every other package builds on it.
"""
