"""Named SQL of the derived relations, package data read by `kommo_dagster.tables.sql_text`."""
