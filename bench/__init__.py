"""Benchmarks: throughput against peers, dedupe memory."""
