"""Chat conversations: the incoming and outgoing messages of WhatsApp, Instagram, Telegram.

Kommo writes each message as an event ``incoming_chat_message`` / ``outgoing_chat_message``
whose ``value_after`` is ``[{"message": {"id": "<uuid>"}}]`` and nothing more. A share of the
leads gets a conversation that starts when the lead is created: the customer writes runs of one
to three messages seconds to minutes apart; a manager or a bot (user 0) answers after seconds,
minutes, hours or days, or nobody does; managers send follow-ups and sometimes write first.
Some conversations live on the lead's contact instead (Kommo moves them there when the lead is
gone). Every message falls on its own second, so a conversation's order is the order of its
seconds whatever the event ids. Messages after the account's window end are not written.

A few events are wrong on purpose: a message without its message id and a message on an entity
type the project does not know (``talk``).
"""

from __future__ import annotations

import random
from typing import Any

from kommo_dagster.sandbox.catalog import Catalog
from kommo_dagster.sandbox.timeline import DAY

INCOMING, OUTGOING = "incoming_chat_message", "outgoing_chat_message"
CHAT_SHARE = 0.3  # leads with a conversation
ON_CONTACT = 0.15  # of those, conversations on a contact
MANAGER_FIRST = 0.2
BOT_SHARE = 0.25  # replies written by a bot or an integration (user 0)
UNANSWERED = 0.15  # runs nobody answers before the customer writes again, or ever
FOLLOW_UP = 0.3
UNKNOWN_ENTITY_TYPE = "talk"

# (share, lowest, highest) seconds until a reply: seconds, minutes, hours, days.
_REPLY_DELAYS = ((0.4, 5, 120), (0.3, 121, 3_600), (0.2, 3_601, 20 * 3_600), (0.1, DAY, 3 * DAY))


def message_value(rng: random.Random) -> list[dict[str, Any]]:
    """A message id as Kommo's chats write them: a random (version 4) UUID."""
    h = f"{rng.getrandbits(128):032x}"
    variant = "89ab"[int(h[16], 16) & 3]
    return [{"message": {"id": f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:]}"}}]


def _reply_delay(rng: random.Random) -> int:
    r = rng.random()
    for share, low, high in _REPLY_DELAYS:
        if r < share:
            return low + int(rng.random() * (high - low + 1))
        r -= share
    return _REPLY_DELAYS[-1][2]


def conversation(
    cat: Catalog,
    rng: random.Random,
    *,
    entity_type: str,
    entity_id: int,
    start: int,
    manager: int,
) -> list[tuple[Any, ...]]:
    """The message events of one conversation from ``start``, as event tuples (created_at,
    type, entity_type, entity_id, created_by, value_after, value_before); ``manager`` answers
    most of them."""
    events: list[tuple[Any, ...]] = []
    t = start

    def say(type_: str, by: int) -> None:
        if t <= cat.end_ts:
            events.append((t, type_, entity_type, entity_id, by, message_value(rng), []))

    if rng.random() < MANAGER_FIRST:
        say(OUTGOING, manager)
        t += 60 + int(rng.random() * 2 * DAY)
    for _ in range(1 + int(rng.random() * 4)):
        for k in range(1 + int(rng.random() * 3)):
            t += 1 + int(rng.random() * 300) if k else 0
            say(INCOMING, 0)
        if rng.random() >= UNANSWERED:
            t += _reply_delay(rng)
            say(OUTGOING, 0 if rng.random() < BOT_SHARE else manager)
            if rng.random() < FOLLOW_UP:
                t += 30 + int(rng.random() * DAY)
                say(OUTGOING, manager)
        t += 600 + int(rng.random() * 3 * DAY)
    return events


def lead_conversations(
    cat: Catalog,
    rng: random.Random,
    *,
    leads: list[tuple[int, int, int]],
) -> list[tuple[Any, ...]]:
    """Conversations on a share of ``leads`` ((id, created_at, responsible_user_id) of live
    leads), some on a contact, and the wrong events."""
    events: list[tuple[Any, ...]] = []
    for lead_id, created_at, responsible in leads:
        if rng.random() >= CHAT_SHARE:
            continue
        entity_type, entity_id = "lead", lead_id
        if cat.contact_ids and rng.random() < ON_CONTACT:
            entity_type = "contact"
            entity_id = cat.contact_ids[int(rng.random() * len(cat.contact_ids))]
        events += conversation(
            cat,
            rng,
            entity_type=entity_type,
            entity_id=entity_id,
            start=created_at,
            manager=responsible,
        )
    if leads:
        lead_id, created_at, responsible = leads[len(leads) // 2]
        # A message whose value lost its id, and one on an entity type nobody knows.
        events.append((created_at, INCOMING, "lead", lead_id, 0, [], []))
        events.append(
            (created_at, INCOMING, UNKNOWN_ENTITY_TYPE, lead_id, 0, message_value(rng), [])
        )
    return events


__all__ = [
    "INCOMING",
    "OUTGOING",
    "UNKNOWN_ENTITY_TYPE",
    "conversation",
    "lead_conversations",
    "message_value",
]
