"""slowburn core: pure computation over canonical records (no I/O, no Kafka, no clocks)."""

__version__ = "0.1.0"
