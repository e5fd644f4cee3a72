"""What the derived tables' and views' assets share: the account they are built for
(`Build`), their DuckDB name as Dagster shows it, and how an asset function becomes a definition.

Its own module so that the tables' assets (`kommo_dagster.orchestration.derived_assets`) and
the views' (`kommo_dagster.orchestration.derived_views`) both import it, neither the other.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import dagster as dg
import duckdb

from kommo_dagster.orchestration.derived_selection import selected_names
from kommo_dagster.orchestration.translator import AccountSpecs
from kommo_dagster.settings import Settings
from kommo_dagster.warehouse.registry import refresh_after_write
from kommo_dagster.warehouse.sql import qualified_table_name


class Build:
    """What every derived asset of one account is built with."""

    def __init__(
        self, settings: Settings, specs: AccountSpecs, account_schemas: dict[str, str]
    ) -> None:
        self.settings, self.specs, self.account_schemas = settings, specs, account_schemas
        self.selected = selected_names(settings)

    def refresh(self, con: duckdb.DuckDBPyConnection, written: str) -> None:
        """Rebuild what follows a write of ``written``, in the caller's transaction. What the
        refreshes return is not reported: only views follow a derived relation (the account's
        and the ``kommo_all`` ones), and a write reports the relation it wrote."""
        refresh_after_write(
            con, written, schema=self.settings.schema, account_schemas=self.account_schemas
        )


def full_table_name(settings: Settings, name: str) -> str:
    return qualified_table_name(settings.duckdb_path, schema=settings.schema, name=name)


def define(
    compute: Callable[..., dg.MaterializeResult], name: str, spec: dict[str, Any]
) -> dg.AssetsDefinition:
    compute.__name__ = name
    with warnings.catch_warnings():
        # backfill_policy is still marked beta in Dagster 1.13, though the CLI relies on it.
        warnings.simplefilter("ignore", dg.BetaWarning)
        return dg.asset(**spec)(compute)


__all__ = ["Build", "define", "full_table_name"]
