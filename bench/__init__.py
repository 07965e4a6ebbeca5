"""Benchmarks: run on purpose (`make bench`), never part of `make test`'s pass or fail."""
