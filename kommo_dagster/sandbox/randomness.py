"""Fast draws from a `random.Random`, and ULIDs (Kommo's event ids), one or many at once.

random.Random's choice/randrange are several times slower than scaling random(); `pick`, `below`
and `between` run millions of times while a large account is generated.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np

ULID_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def pick(rng: random.Random, seq: Sequence[Any]) -> Any:
    return seq[int(rng.random() * len(seq))]


def below(rng: random.Random, a: int, b: int | None = None) -> int:
    """An int in [a, b), or in [0, a) when b is None."""
    if b is None:
        a, b = 0, a
    return a + int(rng.random() * (b - a))


def between(rng: random.Random, a: int, b: int) -> int:
    """An int in [a, b]."""
    return a + int(rng.random() * (b - a + 1))


# Base-32 digit pairs of every 10-bit chunk: a ULID's 130 bits are 13 lookups.
_ULID_PAIRS = [a + b for a in ULID_ALPHABET for b in ULID_ALPHABET]


def ulid(ms: int, rng: random.Random) -> str:
    """A lowercase ULID, 48 bits of milliseconds and 80 random bits, like Kommo's event ids."""
    value = (ms << 80) | rng.getrandbits(80)
    pairs = _ULID_PAIRS
    return "".join([pairs[(value >> shift) & 1023] for shift in range(120, -10, -10)])


def ulids(ms: np.ndarray, nprng: np.random.Generator) -> np.ndarray:
    """ULIDs (as a numpy bytes array, dtype S26) for many millisecond timestamps at once."""
    n = len(ms)
    digits = np.empty((n, 26), dtype=np.uint8)
    for i in range(10):
        digits[:, i] = (ms >> (45 - 5 * i)) & 31
    digits[:, 10:] = nprng.integers(0, 32, (n, 16), dtype=np.uint8)
    alphabet = np.frombuffer(ULID_ALPHABET.encode(), dtype=np.uint8)
    return np.ascontiguousarray(alphabet[digits]).view("S26").ravel()
