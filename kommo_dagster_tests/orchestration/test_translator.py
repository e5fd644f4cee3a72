"""Asset specs through `KommoTranslator.get_asset_spec`: a subclass in Python, or the
component's ``translation`` in ``defs.yaml``, renames keys and adds owners everywhere."""

from __future__ import annotations

import re
import textwrap
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from kommo_dagster.builder import build_kommo_definitions
from kommo_dagster.component import KommoComponent
from kommo_dagster.definitions import build_definitions
from kommo_dagster.orchestration.freshness import freshness_policy
from kommo_dagster.orchestration.resources import KommoResource
from kommo_dagster.orchestration.translator import KommoTranslator, KommoTranslatorData
from kommo_dagster.settings import Settings
from kommo_dagster_tests.derived.tables import create
from kommo_dagster_tests.wiring import local_definitions, sandbox_kommo

STREAMS = ("pipelines", "statuses", "leads", "lead_custom_fields", "events")
# The derived tables and views of those streams.
DERIVED = (
    "lead_custom_field_values",
    "leads_wide",
    "lead_status_changes",
    "lead_stage_durations",
    "pipeline_funnel",
    "chat_response_times",
    "manager_activity_daily",
    "response_time_by_manager",
)
# The link tables read from the leads pages (contact_companies comes only with contacts).
LINKS = ("lead_contacts", "lead_companies", "lead_products", "lead_sources")


class CrmTranslator(KommoTranslator):
    def get_asset_spec(self, data: KommoTranslatorData) -> dg.AssetSpec:
        spec = super().get_asset_spec(data)
        return spec.replace_attributes(
            key=dg.AssetKey(["crm", data.table.name]), owners=["team:data"]
        ).merge_attributes(tags={"layer": data.table.kind})


def _assets(defs: dg.Definitions) -> dict[dg.AssetKey, dg.AssetsDefinition]:
    return {a.key: a for a in defs.assets or [] if isinstance(a, dg.AssetsDefinition)}


def _check_renamed(
    defs: dg.Definitions, prefix: list[str], owner: str, *, job: str = "kommo_incremental_job"
) -> None:
    """Every asset, dependency, check, job and sensor target names the renamed keys."""
    assets = _assets(defs)
    key = {name: dg.AssetKey([*prefix, name]) for name in (*STREAMS, *DERIVED, *LINKS)}
    assert set(assets) == set(key.values())
    for asset in assets.values():
        spec = next(iter(asset.specs))
        assert spec.owners == [owner], asset.key
        assert all(d.path[: len(prefix)] == prefix for d in asset.dependency_keys), asset.key
    assert assets[key["statuses"]].dependency_keys == {key["pipelines"]}
    assert assets[key["lead_custom_field_values"]].dependency_keys == {key["leads"]}
    assert key["lead_custom_fields"] in assets[key["leads_wide"]].dependency_keys
    assert key["lead_status_changes"] in assets[key["pipeline_funnel"]].dependency_keys
    assert assets[key["lead_contacts"]].dependency_keys == {key["leads"]}
    checked = {k.asset_key for c in defs.asset_checks or [] for k in c.check_keys}
    unchecked = ("leads_wide", "pipeline_funnel", "response_time_by_manager")  # views
    assert checked == {key[n] for n in (*STREAMS, *DERIVED, *LINKS) if n not in unchecked}
    repo = defs.get_repository_def()  # resolves the jobs' selections of the renamed keys
    incremental = repo.get_job(job)
    assert key["lead_status_changes"] in incremental.asset_layer.executable_asset_keys
    assert key["lead_contacts"] in incremental.asset_layer.executable_asset_keys


def test_a_python_translator_renames_keys_and_adds_owners(tmp_path: Path):
    settings = Settings(
        start_date=date(2026, 10, 1), duckdb_path=tmp_path / "crm.duckdb", streams=STREAMS
    )
    kommo = KommoResource(api_token="t", base_url="http://127.0.0.1:1")
    defs = build_definitions(settings, kommo=kommo, translator=CrmTranslator())
    _check_renamed(defs, ["crm"], "team:data")
    leads = _assets(defs)[dg.AssetKey(["crm", "leads"])]
    spec = next(iter(leads.specs))
    assert spec.tags["layer"] == "stream" and spec.kinds == {"kommo", "duckdb"}
    assert spec.metadata["dagster/table_name"] == "crm.kommo.leads"


def test_the_component_translation_renames_keys_and_adds_owners(tmp_path: Path):
    component = KommoComponent.resolve_from_yaml(
        textwrap.dedent(
            f"""
            duckdb_path: {tmp_path / "crm.duckdb"}
            accounts:
              - name: br
                api_token: "{{{{ env.BR_TOKEN }}}}"
                subdomain: brazil
                start_date: "2026-10-01"
                streams: [{", ".join(STREAMS)}]
            translation:
              key: "sales/{{{{ account }}}}/{{{{ table }}}}"
              owners: ["team:sales"]
              tags:
                kind: "{{{{ kind }}}}"
            """
        )
    )
    defs = build_kommo_definitions(component.build_accounts(), translator=component.translator())
    _check_renamed(defs, ["sales", "br"], "team:sales", job="kommo_br_incremental_job")
    funnel = _assets(defs)[dg.AssetKey(["sales", "br", "pipeline_funnel"])]
    spec = next(iter(funnel.specs))
    assert spec.tags["kind"] == "view" and spec.group_name == "kommo_br"


def test_a_key_that_depends_on_more_than_the_table_is_refused(tmp_path: Path):
    class Unstable(KommoTranslator):
        def get_asset_spec(self, data: KommoTranslatorData) -> dg.AssetSpec:
            spec = super().get_asset_spec(data)
            return spec.replace_attributes(key=dg.AssetKey([str(len(data.metadata))]))

    settings = Settings(duckdb_path=tmp_path / "crm.duckdb", streams=("pipelines",))
    kommo = KommoResource(api_token="t", base_url="http://127.0.0.1:1")
    with pytest.raises(ValueError, match="two keys"):
        build_definitions(settings, kommo=kommo, translator=Unstable())


@pytest.mark.parametrize(
    ("table", "dropped"),
    [
        ("leads", "kommo/stream, kommo/schema"),
        # events names the link assets whose tables its relinks rewrite
        (
            "events",
            "kommo/link_asset/lead_contacts, kommo/link_asset/lead_companies, "
            "kommo/link_asset/lead_products, kommo/stream, kommo/schema",
        ),
    ],
)
def test_metadata_the_io_manager_writes_by_cannot_be_replaced(
    tmp_path: Path, table: str, dropped: str
):
    """A translator replacing ``metadata`` whole, rather than adding to it, is refused at load,
    naming what it dropped: its tables would otherwise be written by the wrong metadata."""

    class Replacing(KommoTranslator):
        def get_asset_spec(self, data: KommoTranslatorData) -> dg.AssetSpec:
            spec = super().get_asset_spec(data)
            if data.table.name != table:
                return spec
            return spec.replace_attributes(metadata={"team": "sales"})

    settings = Settings(duckdb_path=tmp_path / "crm.duckdb", streams=("leads", "events"))
    kommo = KommoResource(api_token="t", base_url="http://127.0.0.1:1")
    with pytest.raises(ValueError, match=f"metadata {re.escape(dropped)}.* of {table}, which"):
        build_definitions(settings, kommo=kommo, translator=Replacing())

    class Adding(KommoTranslator):
        def get_asset_spec(self, data: KommoTranslatorData) -> dg.AssetSpec:
            spec = super().get_asset_spec(data)
            return spec.replace_attributes(metadata={**spec.metadata, "team": "sales"})

    defs = build_definitions(settings, kommo=kommo, translator=Adding())
    specs = {s.key: s for a in _assets(defs).values() for s in a.specs}
    assert specs[dg.AssetKey(["kommo", table])].metadata["team"] == "sales"


def _messages(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return [e.user_message for e in instance.all_logs(run_id) if e.user_message]


@pytest.mark.timeout(120)
def test_a_run_with_renamed_keys_writes_the_same_tables(tmp_path: Path, sandbox_factory):
    """A child stream reads its renamed parent, a derived table its renamed parent's slice; the
    streams' logs (extraction, progress, a child's parent ids) name them by their renamed keys,
    as Dagster's own messages do."""
    sandbox = sandbox_factory(leads=20, requests_per_second=None)
    settings = Settings(
        start_date=date(2026, 10, 1), duckdb_path=tmp_path / "crm.duckdb", streams=STREAMS
    )
    defs = build_definitions(
        settings, kommo=sandbox_kommo(sandbox, tmp_path), translator=CrmTranslator()
    )
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize(
            list(defs.assets or []),
            selection=[dg.AssetKey(["crm", n]) for n in ("pipelines", "statuses")],
            resources=defs.resources,
            instance=instance,
        )
        messages = _messages(instance, result.run_id)
    assert result.success
    pipelines = len(sandbox.records("pipelines"))
    assert any(m.startswith("crm/pipelines full table: extracting from") for m in messages)
    assert f"crm/statuses: {pipelines} pipelines in the table" in messages
    assert not [m for m in messages if "kommo/" in m]
    with duckdb.connect(str(settings.duckdb_path)) as con:
        (statuses,) = con.execute("SELECT count(*) FROM kommo.statuses").fetchone() or (0,)
    assert statuses == len(sandbox.records("statuses")) > 0


@pytest.mark.parametrize(
    ("asset", "first"),
    [
        ("lead_custom_field_values", "crm/leads"),  # a derived table before its parent
        ("lead_contacts", "crm/leads"),  # a link table before its parent
        ("lead_stage_durations", "crm/lead_status_changes"),  # a view before its table
    ],
)
def test_what_to_materialize_first_is_named_by_its_renamed_key(
    tmp_path: Path, asset: str, first: str
):
    settings = Settings(
        start_date=date(2026, 10, 1), duckdb_path=tmp_path / "crm.duckdb", streams=STREAMS
    )
    defs = build_definitions(settings, translator=CrmTranslator())
    definition = defs.resolve_assets_def(dg.AssetKey(["crm", asset]))  # with its resources
    partition = "2026-10-05" if definition.partitions_def else None

    result = dg.materialize([definition], partition_key=partition, raise_on_error=False)

    [failure] = [e for e in result.all_events if e.is_step_failure]
    raised = failure.step_failure_data.error.cause
    assert raised is not None, failure.step_failure_data.error
    assert f"materialize {first} first" in raised.message, raised.message


def test_check_logs_name_the_renamed_keys(tmp_path: Path):
    """A failed check's warning names the asset by its renamed key, also where it says what to
    materialize first."""
    settings = Settings(
        start_date=date(2026, 10, 1), duckdb_path=tmp_path / "crm.duckdb", streams=STREAMS
    )
    defs = build_definitions(settings, translator=CrmTranslator())
    key = dg.AssetKey(["crm", "pipelines"])
    with dg.DagsterInstance.ephemeral() as instance:
        # Its checks before the table exists: the contract check fails, the others are blocked.
        result = dg.materialize(
            [*(defs.assets or []), *(defs.asset_checks or [])],
            selection=dg.AssetSelection.checks_for_assets(key),
            resources=defs.resources,
            instance=instance,
            raise_on_error=False,
        )
        messages = _messages(instance, result.run_id)
    # It says what to do, by the renamed key.
    said = "kommo.pipelines does not exist yet: materialize crm/pipelines first"
    assert f"crm/pipelines check contract_columns failed: {said}" in messages
    assert not [m for m in messages if "kommo/" in m]


def test_a_slice_whose_parent_never_ran_names_the_parent_by_its_renamed_key(tmp_path: Path):
    """The leads table is there (written outside any run of this instance) but crm/leads was
    never materialized: the derived slice warns with the renamed key, and succeeds."""
    settings = Settings(
        start_date=date(2026, 10, 1), duckdb_path=tmp_path / "crm.duckdb", streams=STREAMS
    )
    with duckdb.connect(str(settings.duckdb_path)) as con:
        create(con, "leads")
    defs = build_definitions(settings, translator=CrmTranslator())
    definition = defs.resolve_assets_def(dg.AssetKey(["crm", "lead_custom_field_values"]))
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize([definition], partition_key="2026-10-05", instance=instance)
        messages = _messages(instance, result.run_id)
    said = "crm/leads for partition 2026-10-05"
    assert any(f"no materialization of {said}." in m for m in messages), messages
    [event] = result.get_asset_materialization_events()
    assert event.materialization.metadata["kommo/parents_missing"].value == said
    assert not [m for m in messages if "kommo/" in m]


def test_a_translator_sets_automation_code_version_and_freshness(tmp_path: Path):
    """The spec's other attributes reach every asset too: a translator turning on eager
    automation, versioning the code or tightening freshness is not silently ignored."""
    eager = dg.AutomationCondition.eager()
    fresh = dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=3))

    class Automated(KommoTranslator):
        def get_asset_spec(self, data: KommoTranslatorData) -> dg.AssetSpec:
            spec = super().get_asset_spec(data)
            return spec.replace_attributes(
                automation_condition=eager, code_version="v7", freshness_policy=fresh
            )

    defs = local_definitions(tmp_path, streams=STREAMS, translator=Automated())
    specs = {spec.key.path[-1]: spec for a in _assets(defs).values() for spec in a.specs}
    assert set(specs) == {*STREAMS, *DERIVED, *LINKS}
    for name, spec in specs.items():
        assert spec.automation_condition == eager, name
        assert spec.code_version == "v7", name
        assert spec.freshness_policy == fresh, name


def test_without_a_translator_freshness_is_the_project_s(tmp_path: Path):
    assets = _assets(local_definitions(tmp_path, streams=STREAMS))
    leads = next(iter(assets[dg.AssetKey(["kommo", "leads"])].specs))
    assert leads.freshness_policy == freshness_policy(partitioned=True)
    assert leads.automation_condition is None and leads.code_version is None
