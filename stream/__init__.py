"""slowburn shell: decoders, sources, sinks, Kafka runtime, metrics and the command line."""
