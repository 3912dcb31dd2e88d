"""Benchmarks of slsfwd; see bench/README.md."""
