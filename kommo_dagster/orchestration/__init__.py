"""The Dagster side: the resource wrapping the client, the IO manager writing the warehouse, and
the assets, checks, jobs, schedules, sensors, partitions and freshness policies built from the
settings and the table registry. `kommo_dagster.builder` wires them into definitions.

Not named ``defs``: ``dg`` treats ``<root module>.defs`` as a folder of component definitions.
"""
