"""The smallest code location shaped like one account's leads run: Dagster's own start-up cost.

`python -m benchmarks.startup --floor` runs ``dagster asset materialize -m
benchmarks.floor_location`` with the same selection and partition range as a run of
``kommo_dagster.definitions``: one daily-partitioned asset ``kommo/acc0/leads`` (single-run
backfills, from ``KOMMO_START_DATE``, steps in the run's process) with as many checks as the
real leads asset, whose body sends one GET to the account's ``KOMMO_ACC0_BASE_URL``. Nothing
else: no resources, no IO manager, no other assets. What a run of it costs up to its first
request is what any code location pays for Dagster's import, the SQLite instance and the run's
planned events, so the real run's figure minus this one is ours.
"""

from __future__ import annotations

import os
from datetime import date

import dagster as dg

# The leads asset's checks in a one-account code location (kommo_dagster.orchestration.checks).
CHECKS = 7

_KEY = dg.AssetKey(["kommo", "acc0", "leads"])
_PARTITIONS = dg.DailyPartitionsDefinition(
    start_date=date.fromisoformat(os.environ["KOMMO_START_DATE"]).isoformat(), end_offset=1
)


@dg.asset(
    key=_KEY,
    partitions_def=_PARTITIONS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    check_specs=[dg.AssetCheckSpec(f"check_{i}", asset=_KEY) for i in range(CHECKS)],
)
def leads() -> dg.MaterializeResult:
    import urllib3

    urllib3.PoolManager().request("GET", os.environ["KOMMO_ACC0_BASE_URL"] + "/api/v4/account")
    return dg.MaterializeResult(
        check_results=[
            dg.AssetCheckResult(check_name=f"check_{i}", passed=True) for i in range(CHECKS)
        ]
    )


# The steps in the run's own process, as kommo_dagster.builder runs them.
defs = dg.Definitions(assets=[leads], executor=dg.in_process_executor)
