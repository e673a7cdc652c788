"""flowsql.sql."""
