"""Benchmarks: pytest-benchmark suites (bench_*.py) and the end-to-end throughput harness."""
