"""Ingest benchmark: `python -m bench.ingest` (see docs/benchmark.md)."""
