"""Benchmark harness: trio_stream against Redis pub/sub and NATS (see benchmarks/README.md)."""
