"""The incoming leads (Kommo's unsorted inbox): the table, declared in the contract's format.

``GET /api/v4/leads/unsorted`` lists the entries waiting in the inbox (calls, mails, form
submissions, chats), each with the lead and contact it created. The inbox is the current state
only: accepting an entry moves its lead on, declining trashes it, and either way the entry
leaves the list. So the table is a full table whose snapshots (``incoming_leads_history``) keep
the entries that were accepted or declined since. The contract files leave this table to the
issue that asks for it; it is declared here in their format, and `kommo_dagster.kommo.streams`
takes it as one more stream. Typed columns pull out of ``metadata`` what analysts filter on; an
entry names one lead, at most one contact and company, read from the first of each list.

A 204 (an empty inbox, or an account whose unsorted feature is off) gives an empty table; the
asset says why in its metadata (`EMPTY_REASON`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

NAME = "incoming_leads"
EMPTY_REASON = (
    "Kommo answered 204: the unsorted inbox is empty, or the account's unsorted feature is off "
    "(account.is_unsorted_on)"
)


def _col(name: str, type_: str, description: str) -> dict[str, str]:
    return {"name": name, "type": type_, "description": description}


CONTRACT: Mapping[str, dict[str, Any]] = {
    NAME: {
        "description": (
            "Incoming leads waiting in the unsorted inbox (calls, mails, forms, chats) with the "
            "lead and contact each created; accepted or declined entries leave the inbox and "
            "remain in incoming_leads_history."
        ),
        "sync": "full_table",
        "cursor": None,
        "columns": [
            _col("uid", "string", "Entry identifier (the inbox's key)"),
            _col("source_uid", "string", "Identifier of the source within the integration"),
            _col("source_name", "string", "Name of the source"),
            _col("category", "string", "sip, mail, forms or chats"),
            _col("pipeline_id", "integer", "Pipeline whose incoming stage holds the lead"),
            _col("created_at", "integer", "When the entry arrived (Unix seconds)"),
            _col("lead_id", "integer", "Lead the entry created"),
            _col("contact_id", "integer", "Contact the entry created, or null"),
            _col("company_id", "integer", "Company the entry created, or null"),
            _col("form_name", "string", "forms: name of the form submitted"),
            _col("chat_service", "string", "chats: messenger (whatsapp, telegram...)"),
            _col("call_duration", "integer", "sip: call duration in seconds"),
            _col("mail_subject", "string", "mail: subject of the message"),
            _col("metadata", "string", "Everything the category records about the entry (JSON)"),
        ],
    }
}
ENDPOINTS: Mapping[str, dict[str, Any]] = {
    NAME: dict(
        path="/api/v4/leads/unsorted",
        list_key="unsorted",
        page_size=250,
        paging="pages",
        key=("uid",),
        empty_reason=EMPTY_REASON,
    )
}
# Where the columns not named like a top-level key of the entry are read.
SOURCES: Mapping[tuple[str, str], tuple[str | int, ...]] = {
    (NAME, "lead_id"): ("_embedded", "leads", 0, "id"),
    (NAME, "contact_id"): ("_embedded", "contacts", 0, "id"),
    (NAME, "company_id"): ("_embedded", "companies", 0, "id"),
    (NAME, "form_name"): ("metadata", "form_name"),
    (NAME, "chat_service"): ("metadata", "service"),
    (NAME, "call_duration"): ("metadata", "duration"),
    (NAME, "mail_subject"): ("metadata", "subject"),
}

__all__ = ["CONTRACT", "EMPTY_REASON", "ENDPOINTS", "NAME", "SOURCES"]
