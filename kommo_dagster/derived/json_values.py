"""The integer a JSON value holds, read the one way the derived tables read ids.

Kommo serves ids (a custom field's, an option's, a stage's) as JSON integers, now and then as
strings of digits. DuckDB's cast to BIGINT is looser: it rounds 142.5 to 143 and reads '1e3' as
1000, so a fraction or an exponent became another id (a stage 142.5 became lost). `json_integer`
takes a JSON integer, or a string holding one (with a minus, and spaces around it); anything else
(a fraction, an exponent, a flag, an object) is NULL.
"""

from __future__ import annotations


def json_integer(value: str) -> str:
    """SQL: the BIGINT the JSON expression ``value`` holds as an integer, else NULL."""
    return (
        f"CASE json_type({value}) WHEN 'BIGINT' THEN CAST({value} AS BIGINT) "
        f"WHEN 'UBIGINT' THEN TRY_CAST({value} AS BIGINT) "
        f"WHEN 'VARCHAR' THEN TRY_CAST(regexp_extract({value} ->> '$', "
        f"'^\\s*(-?[0-9]+)\\s*$', 1) AS BIGINT) END"
    )


__all__ = ["json_integer"]
