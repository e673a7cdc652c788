"""Golden SQL files with expected output, run through the `flowsql run` command."""
