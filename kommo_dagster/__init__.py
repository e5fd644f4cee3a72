"""kommo-dagster: a Dagster code location that extracts Kommo CRM accounts into DuckDB.

`KommoComponent` (the ``dg`` component, `kommo_dagster.component`) is loaded on first use, so
that importing the plain-Python client (`kommo_dagster.kommo`) never imports Dagster. ``dg``
finds it through the ``dagster_dg_cli.registry_modules`` entry point, which lists this module.
"""

from typing import Any

__all__ = ["KommoComponent"]


def __getattr__(name: str) -> Any:
    if name == "KommoComponent":
        from kommo_dagster.component import KommoComponent

        return KommoComponent
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
