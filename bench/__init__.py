"""Benchmarks of the turn path (``make bench``; see bench/README.md). Never part of the tests."""
