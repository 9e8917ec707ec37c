"""Benchmark: our export against the transport floor and the usual alternatives (see README, Performance)."""
