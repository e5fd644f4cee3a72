"""Freshness policies of the Kommo assets, matched to the schedules' cadence.

The schedules (`kommo_dagster.orchestration.schedules`) refresh today's partition of the incremental
streams every hour and the full tables once a day. An asset materialized more than two hours ago has
missed a refresh (warn); one older than a day and two hours has missed a whole day (fail). The UI
shows the state on the asset; with the schedules off, it says how stale the warehouse is.
"""

from __future__ import annotations

from datetime import timedelta

import dagster as dg

INCREMENTAL_WARN = timedelta(hours=2)
INCREMENTAL_FAIL = timedelta(hours=26)
FULL_TABLE_FAIL = timedelta(hours=26)


def freshness_policy(*, partitioned: bool) -> dg.FreshnessPolicy:
    """The policy of a partitioned (incremental) or full-table asset."""
    if partitioned:
        return dg.FreshnessPolicy.time_window(
            fail_window=INCREMENTAL_FAIL, warn_window=INCREMENTAL_WARN
        )
    return dg.FreshnessPolicy.time_window(fail_window=FULL_TABLE_FAIL)


__all__ = ["freshness_policy"]
