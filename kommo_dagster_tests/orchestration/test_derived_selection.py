"""Which derived tables and views a selection of streams defines."""

from pathlib import Path

import dagster as dg

from kommo_dagster_tests.wiring import local_definitions


def test_only_the_selected_streams_get_derived_assets(tmp_path: Path):
    defs = local_definitions(tmp_path, streams=("pipelines", "statuses", "contacts"))
    keys = {a.key.path[-1] for a in defs.assets or [] if isinstance(a, dg.AssetsDefinition)}
    assert keys == {
        "pipelines",
        "statuses",
        "contacts",
        "contact_custom_field_values",
        "contacts_wide",
        "contact_companies",  # a link table, read from the contacts pages
    }
