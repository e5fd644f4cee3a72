"""Asset specs through one override point, `KommoTranslator.get_asset_spec`.

As with ``DagsterDltTranslator`` and ``DagsterSlingTranslator``, the key, group, owners, tags,
kinds and description of every asset of a table (streams, derived tables, views) come from one
method a subclass can override::

    class MyTranslator(KommoTranslator):
        def get_asset_spec(self, data: KommoTranslatorData) -> dg.AssetSpec:
            spec = super().get_asset_spec(data)
            return spec.replace_attributes(key=spec.key.with_prefix("crm"), owners=["team:data"])

    build_definitions(settings, translator=MyTranslator())

The component takes the same as ``translation`` in ``defs.yaml`` (`kommo_dagster.component`).
A renamed key is renamed everywhere: the dependencies of the tables that read it, the checks,
the jobs and the sensor's runs all ask `AccountSpecs.key`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from kommo_dagster.orchestration.accounts import AccountScope
from kommo_dagster.orchestration.io_manager import (
    LINK_ASSET_METADATA_PREFIX,
    SCHEMA_METADATA_KEY,
    STREAM_METADATA_KEY,
)
from kommo_dagster.settings import Settings
from kommo_dagster.warehouse.registry import get_table
from kommo_dagster.warehouse.tables import Table

KINDS: Mapping[str, frozenset[str]] = {
    "stream": frozenset({"kommo", "duckdb"}),
    "link": frozenset({"kommo", "duckdb"}),  # read from the streams' pages
    "view": frozenset({"duckdb", "view"}),
}
DEFAULT_KINDS = frozenset({"duckdb", "sql"})  # tables computed in DuckDB


@dataclass(frozen=True, kw_only=True)
class KommoTranslatorData:
    """What the translator sees of one asset: its table's declaration, the account's settings,
    and the description, metadata and dependencies the project gives it."""

    table: Table
    settings: Settings
    description: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    deps: tuple[str, ...] = ()

    @property
    def scope(self) -> AccountScope:
        return AccountScope.of(self.settings)


class KommoTranslator:
    """The asset specs of the Kommo tables; subclass and override `get_asset_spec`."""

    def get_asset_spec(self, data: KommoTranslatorData) -> dg.AssetSpec:
        scope = data.scope
        return dg.AssetSpec(
            key=scope.asset_key(data.table.name),
            deps=[scope.asset_key(name) for name in data.deps],
            description=data.description or data.table.description,
            group_name=scope.group_name,
            kinds=set(KINDS.get(data.table.kind, DEFAULT_KINDS)),
            metadata=dict(data.metadata),
        )


class AccountSpecs:
    """One account's asset specs through the translator: every builder asks here for keys."""

    def __init__(self, settings: Settings, translator: KommoTranslator | None = None) -> None:
        self.settings = settings
        self.translator = translator or KommoTranslator()
        self._keys: dict[str, dg.AssetKey] = {}
        self._default_keys: dict[dg.AssetKey, str] = {}

    def key(self, name: str) -> dg.AssetKey:
        """The asset key of table ``name`` (its current view and snapshots: the stream's)."""
        if name not in self._keys:
            data = KommoTranslatorData(table=get_table(name), settings=self.settings)
            self._keys[name] = self.translator.get_asset_spec(data).key
            self._default_keys[data.scope.asset_key(name)] = name
        return self._keys[name]

    def spec(
        self,
        table: Table,
        *,
        description: str,
        metadata: Mapping[str, Any],
        deps: tuple[str, ...] = (),
    ) -> dg.AssetSpec:
        """The asset spec of ``table``; dependencies on other tables follow their keys."""
        data = KommoTranslatorData(
            table=table,
            settings=self.settings,
            description=description,
            metadata=metadata,
            deps=deps,
        )
        spec = self.translator.get_asset_spec(data)
        if spec.key != self.key(table.name):
            raise ValueError(
                f"get_asset_spec gives {table.name} two keys, {spec.key.to_user_string()} and "
                f"{self.key(table.name).to_user_string()}: a key may depend on the table and the "
                f"account only"
            )
        _check_written_by(table.name, given=metadata, returned=spec.metadata)
        for name in deps:
            self.key(name)
        renamed = [
            dg.AssetDep(
                self.key(self._default_keys[d.asset_key]), partition_mapping=d.partition_mapping
            )
            if d.asset_key in self._default_keys
            else d
            for d in spec.deps
        ]
        return spec.replace_attributes(deps=renamed)


def _check_written_by(name: str, *, given: Mapping[str, Any], returned: Mapping[str, Any]) -> None:
    """The metadata the IO manager writes by comes back from the translator as the project gave
    it: a translator that replaced ``metadata`` whole would send a table to schema ``kommo``
    whatever its account, or leave a link table without the asset that writes it."""
    lost = [
        key
        for key, value in given.items()
        if key in (STREAM_METADATA_KEY, SCHEMA_METADATA_KEY)
        or key.startswith(LINK_ASSET_METADATA_PREFIX)
        if returned.get(key) != value
    ]
    if lost:
        raise ValueError(
            f"get_asset_spec drops or changes the metadata {', '.join(lost)} of {name}, which "
            f"the IO manager writes by: add to the project's metadata rather than replacing it, "
            f"as in spec.replace_attributes(metadata={{**spec.metadata, ...}}) (the schema is "
            f"a setting: KOMMO_SCHEMA, or the account's name)"
        )


def asset_arguments(
    spec: dg.AssetSpec, *, freshness: dg.FreshnessPolicy | None = None
) -> dict[str, Any]:
    """The spec's attributes as ``dg.asset`` arguments (the compute function adds the rest).

    ``freshness`` is the project's policy for the asset, used unless the translator set one:
    what a translator sets (automation, code version, freshness) is never dropped silently.
    """
    return {
        "key": spec.key,
        "automation_condition": spec.automation_condition,
        "code_version": spec.code_version,
        "freshness_policy": spec.freshness_policy or freshness,
        "deps": list(spec.deps),
        "description": spec.description,
        "group_name": spec.group_name,
        "kinds": set(spec.kinds),
        "metadata": dict(spec.metadata),
        "owners": list(spec.owners),
        "tags": {k: v for k, v in spec.tags.items() if not k.startswith("dagster/kind/")},
    }


__all__ = [
    "AccountSpecs",
    "KommoTranslator",
    "KommoTranslatorData",
    "asset_arguments",
]
