"""flowsql.runtime: everything that runs a statement (processors V1/V2, drivers, failure policies)."""
