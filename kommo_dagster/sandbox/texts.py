"""Text the generated account is made of: ordinary names and the awkward strings real CRMs hold.

The `MESSY_*` lists are cycled through deterministically (see `records.py`), so even an account of
a few hundred leads holds every one of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

FIRST_NAMES: tuple[str, ...] = (
    "Иван",
    "Анна",
    "Сергей",
    "Ольга",
    "Дмитрий",
    "Наталья",
    "João",
    "Maria",
    "José",
    "Conceição",
    "Luís",
    "Ana Lúcia",
    "Thiago",
    "Gabriela",
    "Carlos",
    "Peter",
    "Emma",
    "Noah",
    "Zoë",
    "Élodie",
)
LAST_NAMES: tuple[str, ...] = (
    "Петров",
    "Смирнова",
    "Кузнецов",
    "Иванова",
    "Соколов",
    "da Silva",
    "Gonçalves",
    "Araújo",
    "Magalhães",
    "Pereira",
    "Sant'Anna",
    "Müller",
    "O'Connor",
    "Smith",
    "Nguyễn",
)
COMPANY_WORDS: tuple[str, ...] = (
    "ООО «Ромашка»",
    "Торговый дом",
    "Indústria e Comércio",
    "Soluções Ltda.",
    "Holdings",
    "Agro São João",
    "Logística",
    "Tech & Co",
    "Строй-Инвест",
    "Padaria Pão Quente",
)
LEAD_WORDS: tuple[str, ...] = (
    "Сделка",
    "Заказ",
    "Поставка",
    "Negócio",
    "Pedido",
    "Orçamento",
    "Deal",
    "Renewal",
    "Upsell",
    "Proposta comercial",
)

# Awkward strings every kind of name field gets: Cyrillic, Portuguese, emoji (including a ZWJ
# sequence and a flag), quotes of every kind, newlines and tabs, an empty string, whitespace,
# markup, backslashes, look-alikes of JSON literals, RTL and CJK script, a zero-width space.
MESSY_NAMES: tuple[str, ...] = (
    "Сделка №7 «Опт» — Москва",
    "Negócio de exportação – São Paulo",
    "🚀 Big deal 💰",
    "Семья 👩‍👩‍👧‍👦 и 🇧🇷",
    "Quote \"double\" and 'single' and `back`",
    "Line one\nLine two\r\nLine three",
    "",
    "   ",
    "Tab\tseparated\tname",
    "<b>bold</b> & <i>italic</i>",
    "Back\\slash \\n not a newline",
    "null",
    "[]",
    "中文客户 株式会社",
    "شركة عربية",
    "Zero\u200bwidth space",
    "Ação, coração, pão e maçã",
    "Ёжик в тумане",
    "x" * 255,
    "'; DROP TABLE leads; --",
)

MESSY_TEXTS: tuple[str, ...] = (
    "Позвонить клиенту после 15:00",
    "Ligar para o cliente\nConfirmar endereço de entrega",
    'Send the "final" proposal 📎',
    "",
    "Встреча в офисе, этаж 3\r\nвзять договор",
    "Follow up 🙂",
    "Enviar orçamento até sexta-feira",
    "Multi\n\nparagraph\n\ntext",
)

TAG_NAMES: tuple[str, ...] = (
    "VIP",
    "горячий",
    "promoção",
    "🔥 hot",
    "Black Friday",
    "повторный клиент",
    "indicação",
    'tag with "quotes"',
    "webinar-2026",
    "опт/розница",
)
TAG_COLORS: tuple[str | None, ...] = (None, "DDEBB5", "FFC8C8", None, "B8E2FF", None)

STATUS_COLORS: tuple[str, ...] = (
    "#c1c1c1",
    "#99ccff",
    "#ffff99",
    "#ffcc66",
    "#ff8f92",
    "#deff81",
    "#87f2c0",
    "#f9deff",
)

LOSS_REASONS: tuple[str, ...] = (
    "Дорого",
    "Escolheu a concorrência",
    "No budget",
    "Не дозвонились",
)

EMAIL_DOMAINS: tuple[str, ...] = ("example.com", "exemplo.com.br", "пример.рф", "mail.example.org")

URLS: tuple[str, ...] = (
    "https://example.com/landing?utm_source=ig&utm_medium=cpc",
    "https://exemplo.com.br/produtos/ação",
    "http://пример.рф/страница",
    "",
)


@dataclass(frozen=True)
class Words:
    """The ordinary words of one flavour of account; the messy strings are in every flavour."""

    first_names: tuple[str, ...]
    last_names: tuple[str, ...]
    company_words: tuple[str, ...]
    lead_words: tuple[str, ...]
    email_domains: tuple[str, ...]
    user_langs: tuple[str, ...]


_CYRILLIC = re.compile("[\u0400-\u04ff]")


def _russian(words: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(w for w in words if _CYRILLIC.search(w))


# "kommo": an international kommo.com account (Portuguese, Russian, English...); "amocrm": a
# Russian amoCRM account (amocrm.ru), with Russian names, .ru domains and Russian-speaking users.
WORDS: dict[str, Words] = {
    "kommo": Words(
        FIRST_NAMES, LAST_NAMES, COMPANY_WORDS, LEAD_WORDS, EMAIL_DOMAINS, ("ru", "en", "pt", "es")
    ),
    "amocrm": Words(
        _russian(FIRST_NAMES),
        _russian(LAST_NAMES),
        _russian(COMPANY_WORDS),
        _russian(LEAD_WORDS),
        ("example.ru", "пример.рф", "почта.рф", "mail.example.ru"),
        ("ru",),
    ),
}
FLAVOURS: tuple[str, ...] = tuple(WORDS)
