"""Benchmark: protocols, reproducible splits, results files, figures and leaderboards."""
