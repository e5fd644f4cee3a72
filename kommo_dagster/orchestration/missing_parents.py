"""Which of a run's partitions its parent assets were never materialized for, and what to say
when a table a run reads was never written at all.

A derived slice reads its parent's slice from DuckDB: when that parent partition never ran, the
write succeeds with no rows, just as for a day without records. The rows cannot tell the two
apart, so the run asks the instance (one query per parent) and says so in its log and its
materialization metadata, without failing: an empty day is legitimate once the parent ran.
"""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg

from kommo_dagster.orchestration.translator import AccountSpecs
from kommo_dagster.warehouse.windows import EpochWindow

PARENTS_MISSING_KEY = "kommo/parents_missing"


def not_written_yet(
    missing: Sequence[str], *, schema: str, specs: AccountSpecs, joiner: str = " and "
) -> str:
    """``missing`` tables do not exist yet, and the assets to materialize first, by their keys
    (a translator may have renamed them)."""
    return (
        f"{', '.join(f'{schema}.{n}' for n in missing)} "
        f"{'does' if len(missing) == 1 else 'do'} not exist yet: "
        f"{materialize_first(missing, specs=specs, joiner=joiner)}"
    )


def materialize_first(missing: Sequence[str], *, specs: AccountSpecs, joiner: str = " and ") -> str:
    """What to materialize before ``missing`` tables can be read, by the assets' keys."""
    keys = joiner.join(specs.key(n).to_user_string() for n in missing)
    return f"materialize {keys} first"


def report_missing_parent(
    context: dg.AssetExecutionContext,
    parent: dg.AssetKey,
    *,
    table: str,
    window: EpochWindow,
) -> dict[str, dg.MetadataValue]:
    """Warn when ``parent`` (its asset key, as a translator named it) has no materialization
    for some of the run's partitions (``window``); the metadata entry saying which, or nothing
    when each has one. ``table`` names what the run wrote, in the warning."""
    wanted = set(context.partition_keys)
    missing = sorted(wanted - context.instance.get_materialized_partitions(parent))
    if not missing:
        return {}
    said = f"{parent.to_user_string()} for {_span(missing, of=len(wanted))}"
    context.log.warning(
        f"{table} {window.label()}: no materialization of {said}. Those partitions hold only "
        "what the parent's table already had (usually nothing): materialize it for them first, "
        "then this asset again."
    )
    return {PARENTS_MISSING_KEY: dg.MetadataValue.text(said)}


def _span(partitions: Sequence[str], *, of: int) -> str:
    """``partitions`` (sorted) compactly: the one, or how many of ``of`` and the first and
    last."""
    if len(partitions) == 1:
        return f"partition {partitions[0]}"
    return f"{len(partitions)} of {of} partitions, {partitions[0]}..{partitions[-1]}"


__all__ = ["PARENTS_MISSING_KEY", "report_missing_parent"]
