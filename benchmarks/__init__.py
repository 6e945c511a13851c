"""Benchmarks: orchestration of the real commands, each script writing its section of RESULTS.md. Run them from the
repository root as modules, e.g. ``python -m benchmarks.compare --help``."""
