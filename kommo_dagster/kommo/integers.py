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

__all__ = ["EXACT_FLOAT", "INTEGER_TEXT"]
