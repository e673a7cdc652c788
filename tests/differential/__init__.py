"""Differential tests: flowsql vs DuckDB (and vs Python models) on generated data."""
