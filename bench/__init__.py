"""Benchmarks and checks of speed and precision: each runnable as `python -m bench.<name>` (see `make help`)."""
