"""Named SQL of the derived relations, package data read by
`kommo_dagster.warehouse.tables.sql_text`."""
