"""Benchmarks (not part of the test suite): ``python bench/ota.py --help``."""
