"""Vectorized operators over ``pyarrow.RecordBatch``."""
