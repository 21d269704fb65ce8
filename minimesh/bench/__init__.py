"""Benchmarks (`minimesh bench ...`): each module exposes `run(...) -> dict` and `main()`."""
