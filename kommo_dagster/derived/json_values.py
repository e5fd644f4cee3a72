"""The integer a JSON value holds, read by the rule the extracted tables' integer columns follow.

Kommo serves ids (a custom field's, an option's, a stage's) as JSON integers, now and then as
strings of digits. DuckDB's cast to BIGINT is looser: it rounds 142.5 to 143 and reads '1e3' as
1000, so a fraction or an exponent became another id (a stage 142.5 became lost). `json_integer`
reads what the extraction's integer columns read (`kommo.integers`): a JSON integer, a number with
no fraction below 2**53 (142.0), or a string of digits with a sign and white space around it
(Unicode's too, as ``str.strip()`` takes); anything else (a fraction, a string with an exponent, a
flag, an object) is NULL.
"""

from __future__ import annotations

from kommo_dagster.kommo.integers import EXACT_FLOAT, INTEGER_TEXT, PADDING

# RE2's escapes of the padding: its own \s is ASCII only.
_PAD = "[" + "".join(f"\\x{{{ord(c):x}}}" for c in PADDING) + "]*"


def json_integer(value: str) -> str:
    """SQL: the BIGINT the JSON expression ``value`` holds as an integer, else NULL."""
    return (
        f"CASE json_type({value}) WHEN 'BIGINT' THEN CAST({value} AS BIGINT) "
        f"WHEN 'UBIGINT' THEN TRY_CAST({value} AS BIGINT) "
        f"WHEN 'DOUBLE' THEN CASE WHEN CAST({value} AS DOUBLE) = trunc(CAST({value} AS DOUBLE)) "
        f"AND abs(CAST({value} AS DOUBLE)) < {EXACT_FLOAT} THEN CAST({value} AS BIGINT) END "
        f"WHEN 'VARCHAR' THEN TRY_CAST(regexp_extract({value} ->> '$', "
        f"'^{_PAD}({INTEGER_TEXT.pattern}){_PAD}$', 1) AS BIGINT) END"
    )


__all__ = ["json_integer"]
