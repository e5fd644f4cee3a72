"""The text form of a custom-field value, as DuckDB macros.

Kommo serves a value as a JSON string, number or boolean depending on the field type (and real
accounts hold objects for address-like fields, and oddities such as the string "null"). The long
tables keep one text column, so every value is written the same way whatever JSON type it came
as:

* strings unchanged (the string "null" stays "null");
* booleans ``true`` / ``false``;
* integers in decimal; other numbers as their shortest round-trip decimal, written out without an
  exponent and without a trailing ``.0`` (1500.0 -> ``1500``, 1e-07 -> ``0.0000001``), so a
  Unix date served as 1700000000.0 is the integer ``1700000000``;
* JSON null -> NULL; arrays and objects -> their compact JSON text.

The macros are temporary (per connection): `install_macros` runs before each statement that uses
them, so nothing in the database depends on them.
"""

from __future__ import annotations

import duckdb

VALUE_TEXT_MACRO = "kommo_value_text"

_MACROS = (
    # The digits of a number written in scientific notation, placed around the decimal point:
    # the point sits `point` digits from the left of `digits`.
    """
    CREATE OR REPLACE TEMP MACRO kommo_place_point(sign, digits, point) AS sign || CASE
        WHEN point <= 0 THEN '0.' || repeat('0', -point) || digits
        WHEN point >= length(digits) THEN digits || repeat('0', point - length(digits))
        ELSE left(digits, point) || '.' || substr(digits, point + 1)
    END
    """,
    # DuckDB writes a DOUBLE as its shortest round-trip form, as Python's repr does:
    # '1500.0', '1500.75', '1e-07', '1e+20', '-2.5e-05'.
    """
    CREATE OR REPLACE TEMP MACRO kommo_number_text(shortest) AS CASE
        WHEN shortest = '-0.0' THEN '0'
        WHEN NOT contains(shortest, 'e') THEN
            CASE WHEN suffix(shortest, '.0') THEN left(shortest, length(shortest) - 2)
                 ELSE shortest END
        ELSE kommo_place_point(
            CASE WHEN starts_with(shortest, '-') THEN '-' ELSE '' END,
            replace(split_part(ltrim(shortest, '-'), 'e', 1), '.', ''),
            1 + CAST(split_part(ltrim(shortest, '-'), 'e', 2) AS INTEGER)
        )
    END
    """,
    f"""
    CREATE OR REPLACE TEMP MACRO {VALUE_TEXT_MACRO}(v) AS CASE json_type(v)
        WHEN 'VARCHAR' THEN v ->> '$'
        WHEN 'NULL' THEN NULL
        WHEN 'DOUBLE' THEN kommo_number_text(CAST(CAST(v AS DOUBLE) AS VARCHAR))
        ELSE CAST(v AS VARCHAR)
    END
    """,
)


def install_macros(con: duckdb.DuckDBPyConnection) -> None:
    """Define the value-text macros on ``con`` (temporary: gone when it closes)."""
    for sql in _MACROS:
        con.execute(sql)


__all__ = ["VALUE_TEXT_MACRO", "install_macros"]
