"""flowsql.state."""
