"""Kafka connectors: clients, sources, sinks, dead letters, the repartition topic."""
