"""flowsql.bench."""
