"""Benchmark tasks and suites."""
