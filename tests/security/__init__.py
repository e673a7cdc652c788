"""Hostile input: attacks on the job server and the engine, each shown refused."""
