"""What an integer column takes as an integer, beside a JSON integer: the one rule the extracted
tables (`records`) and the derived tables' JSON ids (`derived.json_values`) follow.

Kommo serves integers, now and then as strings of digits or as numbers with ``.0``. A float at or
above 2**53 may have lost digits on the way; a string with anything but a sign and digits (an
exponent, a fraction) is no integer. Kept apart from `records`, which imports orjson: the
definitions read this rule at load, the client's libraries wait for the run.
"""

from __future__ import annotations

import re

# Beyond 2**53 a float no longer holds every integer: an id sent as one may have lost digits.
EXACT_FLOAT = 2**53
# A numeric string as Kommo writes one (padding aside); Python's int() would also read "1_000"
# or other scripts' digits, which no API sends as numbers.
INTEGER_TEXT = re.compile(r"[+-]?[0-9]+")
# The padding around one: what ``str.strip()`` removes (Python's white space, Unicode's
# included), spelled out for SQL, whose (RE2's) ``\s`` is ASCII only. Checked against
# ``str.isspace`` in the tests.
PADDING = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004"
    "\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)

__all__ = ["EXACT_FLOAT", "INTEGER_TEXT", "PADDING"]
