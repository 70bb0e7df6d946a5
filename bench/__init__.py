"""Benchmarks: run by hand, report figures; never timed assertions in the test suite."""
