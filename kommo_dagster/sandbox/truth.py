"""Ground truth: the rows each contract table should hold for the account's current state.

Computed here from the sandbox's own records and the contract file alone, never with the
client's conversion code, so a test comparing DuckDB with these rows checks the client against
an independent reading of the contract:

- a column's value is the record's top-level key of the same name, except `tags` (read from
  `_embedded.tags`) and `tasks.result` (the text of `{"text": ...}`; NULL for Kommo's `[]`);
- JSON columns (described "(JSON)" in the contract) hold compact UTF-8 JSON text, NULL for null;
- leads, contacts and companies include the deleted records as with=only_deleted serves them
  (is_deleted true, the fields Kommo no longer shows null);
- `account.timezone` is read from `_embedded.datetime_settings`, and the account is one row;
- statuses have one row per (pipeline_id, id): 142 and 143 repeat in every pipeline, and
  catalog elements one per (catalog_id, id).
"""

from __future__ import annotations

import json
from typing import Any

from kommo_dagster.contract import contract_columns
from kommo_dagster.sandbox.account import Account
from kommo_dagster.sandbox.unsorted import expected_incoming_rows

_PYTHON_TYPES = {"integer": int, "string": str, "boolean": bool}


def _json_text(value: Any) -> str | None:
    if value is None:
        return None
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _value(stream: str, name: str, record: dict[str, Any]) -> Any:
    if name == "tags" and stream in ("leads", "contacts", "companies"):
        return (record.get("_embedded") or {}).get("tags")
    if stream == "tasks" and name == "result":
        result = record.get("result")
        return result.get("text") if isinstance(result, dict) else None
    if stream == "account" and name == "timezone":
        embedded = record.get("_embedded") or {}
        return (embedded.get("datetime_settings") or {}).get("timezone")
    return record.get(name)


def to_row(stream: str, record: dict[str, Any]) -> dict[str, Any]:
    """One record as its contract row: contract column order, contract types, NULL as None."""
    row: dict[str, Any] = {}
    for col in contract_columns(stream):
        name, ctype = col["name"], col["type"]
        value = _value(stream, name, record)
        if ctype == "string" and "(JSON)" in col["description"]:
            value = _json_text(value)
        if value is not None and type(value) is not _PYTHON_TYPES[ctype]:
            raise TypeError(
                f"{stream}.{name} should be {ctype}, the sandbox holds {value!r} "
                f"in record {record.get('id')!r}"
            )
        row[name] = value
    return row


def expected_rows(account: Account, stream: str) -> list[dict[str, Any]]:
    """Rows of `stream`'s table for the current state, sorted by the table's natural key."""
    if stream == "incoming_leads":  # declared outside the contract files
        return expected_incoming_rows(account)
    rows = [to_row(stream, r) for r in account.records(stream)]
    if stream == "statuses":
        rows.sort(key=lambda r: (r["pipeline_id"], r["id"]))
    elif stream == "catalog_elements":
        rows.sort(key=lambda r: (r["catalog_id"], r["id"]))
    elif stream == "events":
        rows.sort(key=lambda r: (r["created_at"], r["id"]))
    else:
        rows.sort(key=lambda r: r["id"])
    return rows
