"""The one way a check becomes Dagster's: every declared check, a stream's or a declared
table's, is one spec with its declared blocking, dependency and severity; the run order and the
"not evaluated" rule after a blocking failure; and how outcomes are reported."""

from pathlib import Path

import dagster as dg
import duckdb
import pytest

from kommo_dagster.kommo.streams import STREAMS, get_stream
from kommo_dagster.orchestration.checks import build_kommo_checks, stream_checks
from kommo_dagster.orchestration.data_checks import (
    CONTRACT_COLUMNS,
    Check,
    Outcome,
    Relation,
    check_results,
    evaluate_checks,
)
from kommo_dagster.orchestration.derived_checks import build_derived_checks, table_checks
from kommo_dagster.orchestration.io_manager import KommoDuckDBResource
from kommo_dagster.orchestration.link_assets import build_link_checks
from kommo_dagster.orchestration.translator import AccountSpecs
from kommo_dagster.settings import Settings
from kommo_dagster.warehouse.registry import get_table

ERROR, WARN = dg.AssetCheckSeverity.ERROR, dg.AssetCheckSeverity.WARN


def _declared(name: str, settings: Settings) -> tuple[Relation, dict[str, Check]]:
    """The relation named ``name`` and the checks its declaration gives it, by name."""
    if name in STREAMS:
        stream = get_stream(name)
        return stream, stream_checks(stream, streams=settings.streams)
    table = get_table(name)
    return table, table_checks(table, streams=settings.streams)


def _definitions(settings: Settings) -> list[dg.AssetChecksDefinition]:
    specs = AccountSpecs(settings)
    return [
        *build_kommo_checks(settings, specs=specs),
        *build_derived_checks(settings, specs=specs),
        *build_link_checks(settings, specs=specs),
    ]


@pytest.mark.parametrize(
    ("account", "streams"), [(None, None), ("ru", "leads,pipelines,statuses,contacts")]
)
def test_every_declared_check_is_one_spec_with_its_blocking_dependency_and_severity(
    tmp_path: Path, account: str | None, streams: str | None
):
    env = {"KOMMO_DUCKDB_PATH": str(tmp_path / "crm.duckdb")}
    env |= {f"KOMMO_{account.upper()}_STREAMS": streams} if account and streams else {}
    settings = Settings.from_env(env, account=account)
    resource = KommoDuckDBResource(database=str(settings.duckdb_path))
    specs, severities = AccountSpecs(settings), set()
    for definition in _definitions(settings):
        (key,) = {s.asset_key for s in definition.check_specs}
        relation, declared = _declared(key.path[-1], settings)
        found = {s.name: s for s in definition.check_specs}
        assert len(found) == len(list(definition.check_specs)) and list(found) == list(declared)
        # Run on a warehouse without the table: every check reports, with its severity.
        context = dg.build_asset_check_context(resources={"duckdb": resource})
        results = {r.check_name: r for r in definition(context)}
        assert list(results) == list(declared)
        for name, check in declared.items():
            assert found[name].blocking == check.blocking == (name == CONTRACT_COLUMNS)
            reads = check.reads(relation)
            deps = [specs.key(reads)] if reads in settings.streams else []
            assert [d.asset_key for d in found[name].additional_deps] == deps, (key, name)
            assert results[name].severity == (WARN if check.warn else ERROR), (key, name)
            severities.add(results[name].severity)
    assert severities == {WARN, ERROR}


def _check(outcome: Outcome, *, blocking: bool = False) -> Check:
    return Check(lambda con, relation, *, schema: outcome, lambda r, s: "", blocking=blocking)


def _never_run(con: object, relation: object, *, schema: str) -> Outcome:
    raise AssertionError("a check after a failed blocking check ran")


def test_after_a_blocking_failure_the_later_checks_are_not_run_and_say_why():
    warns, blocks = Outcome(False, "2 rows dangle", {"rows": 2}), Outcome(False, "no table", {})
    checks = {
        "first": _check(warns),
        "blocker": _check(blocks, blocking=True),
        "later": Check(_never_run, lambda r, s: ""),
    }
    outcomes = evaluate_checks(duckdb.connect(), get_stream("users"), checks, schema="kommo")
    assert outcomes == {
        "first": warns,
        "blocker": blocks,
        "later": Outcome(False, "not evaluated: no table", {}),
    }
    # a blocking check that passes lets the others run
    passes = Outcome(True, "as the contract", {})
    checks = {"blocker": _check(passes, blocking=True), "later": _check(warns)}
    outcomes = evaluate_checks(duckdb.connect(), get_stream("users"), checks, schema="kommo")
    assert outcomes == {"blocker": passes, "later": warns}


class _Log:
    def __init__(self) -> None:
        self.warnings: list[str] = []

    def warning(self, message: str) -> None:
        self.warnings.append(message)


class _Context:
    def __init__(self) -> None:
        self.log = _Log()


def test_a_failed_warning_check_is_logged_as_a_warning_not_a_failure():
    """A warning check (a dangling reference, customers waiting) that does not pass says it
    warns; an error check says it failed. Both come back with their severity."""
    context, key = _Context(), dg.AssetKey(["kommo", "leads"])
    outcomes = {
        "status_id_in_statuses": Outcome(False, "3 rows reference no statuses", {}),
        "no_null_ids": Outcome(False, "2 rows have no id", {}),
        "contract_columns": Outcome(True, "as the contract", {}),
    }
    results = list(
        check_results(
            context,  # type: ignore[arg-type]
            key,
            outcomes,
            label="kommo/leads",
            warn_only={"status_id_in_statuses"},
        )
    )
    assert context.log.warnings == [
        "kommo/leads check status_id_in_statuses warns: 3 rows reference no statuses",
        "kommo/leads check no_null_ids failed: 2 rows have no id",
    ]
    assert [(r.check_name, r.passed, r.severity) for r in results] == [
        ("status_id_in_statuses", False, dg.AssetCheckSeverity.WARN),
        ("no_null_ids", False, dg.AssetCheckSeverity.ERROR),
        ("contract_columns", True, dg.AssetCheckSeverity.ERROR),
    ]
