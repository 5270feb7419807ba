"""Reports: the Call Identification Center's DuckDB queries over the trace rows."""
