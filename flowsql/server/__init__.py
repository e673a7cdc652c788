"""flowsql.server."""
