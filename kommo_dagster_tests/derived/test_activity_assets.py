"""Which activity assets a selection of streams defines, and what each is downstream of."""

import dagster as dg
import pytest

from kommo_dagster.derived.chats import RESPONSE_VIEW
from kommo_dagster.derived.declaration import ACTIVITY_TABLES
from kommo_dagster.orchestration.derived_assets import build_derived_assets
from kommo_dagster.orchestration.derived_selection import all_derived_keys
from kommo_dagster.settings import Settings

ACTIVITY = {*ACTIVITY_TABLES, RESPONSE_VIEW}


def build_activity_assets(settings: Settings) -> list[dg.AssetsDefinition]:
    return [a for a in build_derived_assets(settings) if a.key.path[-1] in ACTIVITY]


def activity_keys(settings: Settings) -> list[dg.AssetKey]:
    return [k for k in all_derived_keys(settings) if k.path[-1] in ACTIVITY]


def _deps(settings: Settings) -> dict[str, set[str]]:
    return {
        a.key.path[-1]: {k.path[-1] for k in a.dependency_keys}
        for a in build_activity_assets(settings)
    }


@pytest.mark.parametrize(
    ("streams", "expected"),
    [
        (
            None,
            {
                "chat_response_times": {"events"},
                "calls": {"lead_notes", "contact_notes", "company_notes"},
                # and the account, whose time zone their days follow
                "manager_activity_daily": {
                    "events",
                    "lead_status_changes",
                    "chat_response_times",
                    "calls",
                    "account",
                },
                "response_time_by_manager": {
                    "chat_response_times",
                    "leads",
                    "contacts",
                    "account",
                },
            },
        ),
        (("leads", "lead_notes"), {"calls": {"lead_notes"}, "manager_activity_daily": {"calls"}}),
        (("pipelines", "statuses", "leads"), {}),
        (("account",), {}),  # a setting's source alone defines none of them
    ],
)
def test_the_activity_assets_follow_the_selected_streams(streams, expected):
    settings = Settings() if streams is None else Settings(streams=streams)
    assert _deps(settings) == expected
    assert {k.path[-1] for k in activity_keys(settings)} == set(expected)


def test_the_tables_carry_their_column_schema_and_key():
    specs = [next(iter(a.specs)) for a in build_activity_assets(Settings())]
    tables = {s.key.path[-1]: s for s in specs if "view" not in s.kinds}
    assert set(tables) == set(ACTIVITY_TABLES)
    for name, spec in tables.items():
        table = ACTIVITY_TABLES[name]
        schema = spec.metadata["dagster/column_schema"]
        assert isinstance(schema, dg.TableSchema) and all(c.description for c in schema.columns)
        assert [c.name for c in schema.columns] == [c.name for c in table.columns], name
        assert spec.metadata["kommo/key"] == ", ".join(table.key), name
        assert spec.description and "rebuilt whole" in spec.description
