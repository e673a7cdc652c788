"""Frozen logical plan nodes and expressions (the contract between sql and exec)."""
