"""Benchmarks (scripts, not tests): ``python -m exfuse_keras.bench.<name> --help``."""
