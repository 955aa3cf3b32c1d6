"""Synthetic usage streams for the demo, the load generator, the tests and the benchmark."""
