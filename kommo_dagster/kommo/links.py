"""The link tables: which records link which, read from the pages of the records that own them.

Kommo embeds a lead's contacts (``with=contacts``), products (``with=catalog_elements``) and
source (``with=source``), and a lead's or contact's companies (always) in ``_embedded`` of each
record. The link tables (``kommo_link_streams.json``, plus ``lead_sources``, which the contract
leaves to the issue that asks for it) are those lists flattened, one row per link: no request of
their own. A `LinkTable` says where its rows sit in the parent's record and how they are
replaced; `LinkRows` gathers them while the parent's pages stream by (the pages' embedded lists
ride along as raw JSON, see `kommo_dagster.kommo.decoding`), and from `/links` answers when links
changed without moving their parent's ``updated_at`` (`kommo_dagster.kommo.relinks`).

A table's rows are replaced by parent: writing the rows of a set of parents first removes every
row of those parents, so a link removed in Kommo disappears. ``lead_sources`` is keyed by the
source itself and replaced by key. Links of deleted records are dropped with them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from kommo_dagster.contract import link_contract
from kommo_dagster.kommo.streams import Column, Reference, get_stream

if TYPE_CHECKING:
    import pyarrow as pa

# Names of the pseudo-columns that carry an embedded list through the typed decoder.
EMBED_PREFIX = "_embedded."
# The parent's cursor value the rows were read with: of two versions of a record, the newer wins.
VERSION = "_version"


# The to_entity_type of each embedded list's links in a /links answer (None: not a link there).
TO_ENTITY_TYPE: Mapping[str, str | None] = {
    "contacts": "contacts",
    "companies": "companies",
    "catalog_elements": "catalog_elements",
    "source": None,
}


def _ref(column: str, stream: str) -> Reference:
    return Reference(columns=(column,), stream=stream)


@dataclass(frozen=True, kw_only=True)
class LinkTable:
    """One link table: its parent stream, the embedded list its rows come from, its columns."""

    name: str
    description: str
    parent: str
    embed: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    # "parent": rows are replaced per parent record (the first column holds its id);
    # "key": rows are replaced by key (sources, shared by many leads).
    replace: Literal["parent", "key"] = "parent"
    references: tuple[Reference, ...] = ()
    # Data checks beyond the ones every link table gets (`warehouse.registry.link_table`), by name.
    checks: tuple[str, ...] = ()

    # A link table keeps no versions: its table is the current state (no `_current` view).
    is_incremental = False
    cursor = None

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def parent_column(self) -> str:
        return self.columns[0].name

    @property
    def to_entity_type(self) -> str | None:
        return TO_ENTITY_TYPE[self.embed]

    @property
    def arrow_schema(self) -> pa.Schema:
        import pyarrow as pa  # a run's: loading the definitions does not need it

        types = {"integer": pa.int64(), "boolean": pa.bool_(), "string": pa.string()}
        types["number"] = pa.float64()
        fields = [pa.field(c.name, types[c.type]) for c in self.columns]
        return pa.schema([*fields, pa.field(VERSION, pa.int64())])


# What the contract leaves to the code: each table's embedded list, key, and the tables its
# columns point into (checked by the link checks, never enforced: a link may point to a record
# the warehouse does not hold).
# A lead has at most one main contact (a warning when not).
ONE_MAIN_CONTACT = "one_main_contact"
_CHECKS: Mapping[str, tuple[str, ...]] = {"lead_contacts": (ONE_MAIN_CONTACT,)}
_DECLARED: Mapping[str, tuple[str, tuple[str, ...], tuple[Reference, ...]]] = {
    "lead_contacts": (
        "contacts",
        ("lead_id", "contact_id"),
        (_ref("lead_id", "leads"), _ref("contact_id", "contacts")),
    ),
    "lead_companies": (
        "companies",
        ("lead_id", "company_id"),
        (_ref("lead_id", "leads"), _ref("company_id", "companies")),
    ),
    "contact_companies": (
        "companies",
        ("contact_id", "company_id"),
        (_ref("contact_id", "contacts"), _ref("company_id", "companies")),
    ),
    "lead_products": (
        "catalog_elements",
        ("lead_id", "catalog_id", "element_id"),
        (
            _ref("lead_id", "leads"),
            Reference(
                columns=("catalog_id", "element_id"),
                stream="catalog_elements",
                keys=("catalog_id", "id"),
            ),
        ),
    ),
}
LEAD_SOURCES = LinkTable(
    name="lead_sources",
    description=(
        "The lead sources of the account (the channel that brought a lead), one row per source "
        "id with its latest name. From _embedded.source of the leads walk (with=source), since "
        "GET /api/v4/sources lists only the calling integration's own sources."
    ),
    parent="leads",
    embed="source",
    columns=(
        Column(
            name="id",
            type="integer",
            description="Source identifier",
            source=("id",),
            is_json=False,
        ),
        Column(
            name="name", type="string", description="Source name", source=("name",), is_json=False
        ),
    ),
    key=("id",),
    replace="key",
)


def _build() -> dict[str, LinkTable]:
    tables: dict[str, LinkTable] = {}
    contract = link_contract()
    if set(contract) != set(_DECLARED):
        raise RuntimeError(f"link tables {sorted(contract)} differ from {sorted(_DECLARED)}")
    for name, spec in contract.items():
        embed, key, references = _DECLARED[name]
        get_stream(spec["parent"])  # an unknown parent fails here, when the module loads
        tables[name] = LinkTable(
            name=name,
            description=spec["description"],
            parent=spec["parent"],
            embed=embed,
            columns=tuple(Column.from_contract(c) for c in spec["columns"]),
            key=key,
            references=references,
            checks=_CHECKS.get(name, ()),
        )
    tables[LEAD_SOURCES.name] = LEAD_SOURCES
    return tables


LINK_TABLES: Mapping[str, LinkTable] = _build()


def link_tables_of(stream: str) -> tuple[LinkTable, ...]:
    """The link tables whose rows ``stream``'s records carry, in declaration order."""
    return tuple(t for t in LINK_TABLES.values() if t.parent == stream)


def embedded_columns(stream: str) -> tuple[Column, ...]:
    """Pseudo-columns holding, as raw JSON, each embedded list ``stream``'s link tables read."""
    embeds = dict.fromkeys(t.embed for t in link_tables_of(stream))
    return tuple(
        Column(
            name=f"{EMBED_PREFIX}{e}",
            type="string",
            description=f"_embedded.{e} (raw, for the link tables)",
            source=("_embedded", e),
            is_json=True,
        )
        for e in embeds
    )


__all__ = [
    "EMBED_PREFIX",
    "LEAD_SOURCES",
    "LINK_TABLES",
    "ONE_MAIN_CONTACT",
    "TO_ENTITY_TYPE",
    "VERSION",
    "LinkTable",
    "embedded_columns",
    "link_tables_of",
]
