"""kommo-dagster: a Dagster code location that extracts a Kommo CRM account into DuckDB."""
