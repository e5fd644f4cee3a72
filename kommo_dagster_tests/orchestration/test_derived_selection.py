"""Which derived tables and views a selection of streams defines."""

from datetime import date
from pathlib import Path

import dagster as dg

from kommo_dagster.definitions import build_definitions
from kommo_dagster.settings import Settings


def _defs(tmp_path: Path, **overrides) -> dg.Definitions:
    settings = Settings(
        start_date=date(2026, 10, 1), duckdb_path=tmp_path / "crm.duckdb", **overrides
    )
    return build_definitions(settings)


def test_only_the_selected_streams_get_derived_assets(tmp_path: Path):
    defs = _defs(tmp_path, streams=("pipelines", "statuses", "contacts"))
    keys = {a.key.path[-1] for a in defs.assets or [] if isinstance(a, dg.AssetsDefinition)}
    assert keys == {
        "pipelines",
        "statuses",
        "contacts",
        "contact_custom_field_values",
        "contacts_wide",
        "contact_companies",  # a link table, read from the contacts pages
    }
