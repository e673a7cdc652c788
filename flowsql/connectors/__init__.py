"""Sources and sinks: generator, memory, file, kafka; plus serde and dead letters."""
