"""What a data check is, and how a relation's checks become one Dagster check definition.

A check is declared once as a `Check`: how it runs, how it describes itself, whether it only
warns, blocks, or reads another table's asset. The streams' checks
(`kommo_dagster.orchestration.checks`) and the declared tables'
(`kommo_dagster.orchestration.derived_checks`) are such declarations; each module says which
relation gets which, and everything else follows here, once for both: the specs (blocking, the
dependencies on the tables read), the severities (WARN for the warnings, ERROR otherwise), the
evaluation in order (after a blocking check fails, the others are not run and say why) and the
`multi_asset_check` running them on one DuckDB connection.

Two checks every relation may get are defined here: ``contract_columns`` (blocking: the table
exists with the contract's columns and types) and one per declared reference (a warning: rows
pointing to no row of the referenced table).
"""

from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import dagster as dg
import duckdb as duckdb_lib

from kommo_dagster.kommo.streams import Reference, Stream
from kommo_dagster.orchestration.accounts import AccountScope
from kommo_dagster.orchestration.io_manager import KommoDuckDBResource
from kommo_dagster.orchestration.missing_parents import not_written_yet
from kommo_dagster.orchestration.translator import AccountSpecs
from kommo_dagster.settings import Settings
from kommo_dagster.warehouse.sql import (
    declared_columns,
    quote,
    table_columns,
    table_exists,
    table_ref,
)
from kommo_dagster.warehouse.tables import Table

CONTRACT_COLUMNS = "contract_columns"
# How many offending keys a failed check shows in its metadata.
SAMPLE = 5

# What a check runs on: an extracted stream, or a declared table (derived, link).
Relation = Stream | Table


@dataclass(frozen=True)
class Outcome:
    passed: bool
    description: str
    metadata: dict[str, Any]
    # The table it found missing: its Dagster result says which asset to materialize first.
    missing: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Check:
    """A data check, declared once: what it says, how it runs, whether it only warns."""

    # (con, relation, *, schema) -> Outcome
    evaluate: Callable[..., Outcome]
    # (relation, schema) -> the spec's description
    describe: Callable[[Any, str], str]
    warn: bool = False
    # The table whose asset it reads besides its own (its key then names a dependency).
    reads: Callable[[Any], str | None] = lambda relation: None
    # A failure keeps the run from materializing the assets downstream, and the relation's
    # later checks from running (``contract_columns``).
    blocking: bool = False


# --- the checks every relation may get ----------------------------------------------------------


def contract_columns(
    con: duckdb_lib.DuckDBPyConnection, stream: Relation, *, schema: str
) -> Outcome:
    expected = declared_columns(stream)
    if not table_exists(con, schema=schema, table=stream.name):
        return Outcome(False, f"{schema}.{stream.name} does not exist", {}, missing=stream.name)
    actual = table_columns(con, schema=schema, table=stream.name)
    if actual == expected:
        return Outcome(True, f"{len(expected)} columns as in the contract", {})
    have, want = dict(actual), dict(expected)
    return Outcome(
        False,
        f"{schema}.{stream.name} differs from the contract",
        {
            "missing": [n for n in want if n not in have],
            "unexpected": [n for n in have if n not in want],
            "wrong_type": {
                n: f"{have[n]} (contract: {t})"
                for n, t in want.items()
                if have.get(n) not in (None, t)
            },
            "order_differs": [n for n, _ in actual] != [n for n, _ in expected],
        },
    )


CONTRACT_CHECK = Check(
    contract_columns,
    lambda relation, schema: "The table's columns and DuckDB types are the contract's, in order.",
    blocking=True,
)


def references_resolve(
    con: duckdb_lib.DuckDBPyConnection, stream: Relation, ref: Reference, *, schema: str
) -> Outcome:
    """Rows of ``stream`` (or of a declared table: a link table's) whose ``ref.columns`` match
    no row of ``ref.stream``."""
    if not table_exists(con, schema=schema, table=ref.stream):
        return Outcome(False, f"{schema}.{ref.stream} does not exist", {}, missing=ref.stream)
    columns = ", ".join(f"c.{quote(c)}" for c in ref.columns)
    match = " AND ".join(
        f"t.{quote(k)} = c.{quote(c)}" for c, k in zip(ref.columns, ref.keys, strict=True)
    )
    keys_order = ", ".join(str(i + 1) for i in range(len(ref.columns)))
    rows = con.execute(
        f"SELECT {columns}, count(*) AS n FROM {table_ref(schema, stream.name)} AS c "
        f"WHERE c.{quote(ref.column)} IS NOT NULL AND NOT EXISTS ("
        f"SELECT 1 FROM {table_ref(schema, ref.stream)} AS t WHERE {match}) "
        f"GROUP BY ALL ORDER BY n DESC, {keys_order}"
    ).fetchall()
    dangling = sum(int(r[-1]) for r in rows)
    target = f"{ref.stream}.({', '.join(ref.keys)})"
    sample = [
        ", ".join(f"{c}={v}" for c, v in zip(ref.columns, r[:-1], strict=True))
        for r in rows[:SAMPLE]
    ]
    return Outcome(
        not rows,
        f"{dangling} rows of {stream.name} point to no row of {target}",
        {"dangling_rows": dangling, "dangling_keys": len(rows), "sample": sample},
    )


def reference_check(ref: Reference, *, why: str) -> Check:
    """The check of one declared reference: a warning (``why`` says why, in its description);
    it reads the referenced table's asset."""
    return Check(
        lambda con, relation, *, schema: references_resolve(con, relation, ref, schema=schema),
        lambda relation, schema: (
            f"Every {relation.name}.({', '.join(ref.columns)}) is a {schema}.{ref.stream}."
            f"({', '.join(ref.keys)}); {why}"
        ),
        warn=True,
        reads=lambda relation: ref.stream,
    )


def reference_checks(
    references: Sequence[Reference], *, streams: Collection[str] | None, why: str
) -> dict[str, Check]:
    """The checks of the ``references`` into ``streams`` (None: all), by name: a reference to a
    table not selected has no check."""
    return {
        r.check_name: reference_check(r, why=why)
        for r in references
        if streams is None or r.stream in streams
    }


# --- running them -------------------------------------------------------------------------------


def evaluate_checks(
    con: duckdb_lib.DuckDBPyConnection,
    relation: Relation,
    checks: Mapping[str, Check],
    *,
    schema: str,
) -> dict[str, Outcome]:
    """Every check of ``relation`` by name, in order. After a blocking check fails (no table,
    or columns unlike the contract) the others are not run and say why."""
    results: dict[str, Outcome] = {}
    blocker: Outcome | None = None
    for name, check in checks.items():
        if blocker is not None:
            results[name] = Outcome(False, f"not evaluated: {blocker.description}", {})
            continue
        results[name] = outcome = check.evaluate(con, relation, schema=schema)
        if check.blocking and not outcome.passed:
            blocker = outcome
    return results


# --- Dagster --------------------------------------------------------------------------------


def check_spec(
    name: str,
    check: Check,
    relation: Relation,
    *,
    key: dg.AssetKey,
    settings: Settings,
    specs: AccountSpecs,
) -> dg.AssetCheckSpec:
    reads = check.reads(relation)
    return dg.AssetCheckSpec(
        name,
        asset=key,
        description=check.describe(relation, settings.schema),
        blocking=check.blocking,
        additional_deps=[specs.key(reads)] if reads and reads in settings.streams else None,
    )


def build_checks(
    relation: Relation,
    checks: Mapping[str, Check],
    *,
    settings: Settings,
    specs: AccountSpecs,
) -> dg.AssetChecksDefinition:
    """One `multi_asset_check` (``kommo_<name>_checks``, account-qualified) for ``checks`` of
    ``relation``; its logs name it by its asset key, as a translator may have renamed it."""
    key, schema = specs.key(relation.name), settings.schema
    return build_data_checks(
        [
            check_spec(n, c, relation, key=key, settings=settings, specs=specs)
            for n, c in checks.items()
        ],
        name=AccountScope.of(settings).qualify(f"kommo_{relation.name}_checks"),
        description=f"Data checks of {schema}.{relation.name}.",
        key=key,
        label=key.to_user_string(),
        warn_only={n for n, c in checks.items() if c.warn},
        evaluate=lambda con: _what_to_do(
            evaluate_checks(con, relation, checks, schema=schema), schema=schema, specs=specs
        ),
    )


def _what_to_do(
    outcomes: dict[str, Outcome], *, schema: str, specs: AccountSpecs
) -> dict[str, Outcome]:
    """The outcomes, those that found a table missing saying which asset to materialize first
    (by its key, which a translator may have renamed), as the assets' own errors do."""
    return {
        name: replace(o, description=not_written_yet([o.missing], schema=schema, specs=specs))
        if o.missing
        else o
        for name, o in outcomes.items()
    }


def build_data_checks(
    specs: Sequence[dg.AssetCheckSpec],
    *,
    name: str,
    description: str,
    key: dg.AssetKey,
    label: str,
    warn_only: Collection[str],
    evaluate: Callable[[duckdb_lib.DuckDBPyConnection], dict[str, Outcome]],
) -> dg.AssetChecksDefinition:
    """One `multi_asset_check` of a table's checks (a stream's or a declared table's): it
    evaluates them on one connection to the warehouse and reports each outcome."""

    @dg.multi_asset_check(specs=specs, name=name, description=description)
    def data_checks(
        context: dg.AssetCheckExecutionContext, duckdb: KommoDuckDBResource
    ) -> Iterator[dg.AssetCheckResult]:
        with duckdb.get_connection(on_wait=context.log.info) as con:
            outcomes = evaluate(con)
        yield from check_results(context, key, outcomes, label=label, warn_only=warn_only)

    return data_checks


def check_results(
    context: dg.AssetCheckExecutionContext,
    key: dg.AssetKey,
    outcomes: dict[str, Outcome],
    *,
    label: str,
    warn_only: Collection[str],
) -> Iterator[dg.AssetCheckResult]:
    """The outcomes as Dagster results, each failure logged; ``warn_only`` checks never block
    (their failure is logged as a warning about the data, not as a failed check)."""
    for name, outcome in outcomes.items():
        if not outcome.passed:
            verdict = "warns" if name in warn_only else "failed"
            context.log.warning(f"{label} check {name} {verdict}: {outcome.description}")
        yield dg.AssetCheckResult(
            check_name=name,
            asset_key=key,
            passed=outcome.passed,
            description=outcome.description,
            metadata=outcome.metadata,
            severity=dg.AssetCheckSeverity.WARN
            if name in warn_only
            else dg.AssetCheckSeverity.ERROR,
        )


__all__ = [
    "CONTRACT_CHECK",
    "CONTRACT_COLUMNS",
    "SAMPLE",
    "Check",
    "Outcome",
    "Relation",
    "build_checks",
    "build_data_checks",
    "check_results",
    "check_spec",
    "contract_columns",
    "evaluate_checks",
    "reference_check",
    "reference_checks",
    "references_resolve",
]
