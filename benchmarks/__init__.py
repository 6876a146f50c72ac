"""Benchmarks: `python -m benchmarks` (full fleet) or `python -m benchmarks --quick`."""
