"""How large an account is: the records of each kind an account of so many leads holds."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Scale:
    """How many records of each kind an account of `leads` leads holds."""

    leads: int
    contacts: int
    companies: int
    tasks: int
    extra_events: int
    users: int
    # Notes per entity type: lead_notes, contact_notes, company_notes.
    notes: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, leads: int, users: int | None = None) -> Scale:
        return cls(
            leads=leads,
            contacts=max(int(leads * 0.6), min(leads, 60)),
            companies=max(int(leads * 0.15), min(leads, 40)),
            tasks=max(int(leads * 0.6), min(leads, 80)),
            extra_events=max(int(leads * 0.3), min(leads, 60)),
            users=users if users is not None else max(12, leads // 2000),
            notes={
                "lead_notes": leads,
                "contact_notes": max(int(leads * 0.4), min(leads, 90)),
                "company_notes": max(int(leads * 0.3), min(leads, 45)),
            },
        )
