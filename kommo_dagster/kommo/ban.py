"""Kommo's IP block, remembered on this machine so that nothing more is sent while it holds.

Kommo answers every request from a blocked IP with an HTML 403 page, and keeps blocking an IP that
keeps sending. The first such answer is written to a small file beside the account's rate-limit
budget (``KOMMO_RATE_LIMIT_DIR``, one file per account host). Every client of that account on the
machine, in any thread or process, looks for the file right before each request goes out and
refuses to send while it is younger than the cool-down (``KOMMO_BAN_COOLDOWN_SECONDS``, an hour
by default). Once Kommo support has lifted the block, clear it::

    python -m kommo_dagster.kommo ban clear      # the account of KOMMO_SUBDOMAIN/BASE_URL
    python -m kommo_dagster.kommo ban status
    python -m kommo_dagster.kommo ban clear --account br   # an account of KOMMO_ACCOUNTS

or delete the ``kommo-<host>.banned`` file the error message names.
"""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from kommo_dagster.kommo.config import (
    ENV_BAN_COOLDOWN_SECONDS,
)
from kommo_dagster.kommo.errors import KommoIPBlockedError


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class IPBan:
    """The block state of one account host, shared through ``directory``."""

    def __init__(self, *, key: str, directory: Path, cooldown: float) -> None:
        self.key = key
        self.cooldown = cooldown
        self.path = Path(directory) / f"kommo-{key}.banned"

    def __repr__(self) -> str:
        return f"IPBan(path={str(self.path)!r}, cooldown={self.cooldown:g}s)"

    def since(self) -> float | None:
        """When the block was met (Unix time), if it is still within the cool-down."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return None
        try:
            at = float(json.loads(self.path.read_text())["at"])
        except (OSError, ValueError, KeyError, TypeError):
            at = stat.st_mtime  # damaged: the file's own time is the next best thing
        if not at <= stat.st_mtime:
            at = stat.st_mtime  # nan, inf or a time after the file was written: damaged too
        return at if time.time() < at + self.cooldown else None

    def check(self) -> None:
        """Raise `KommoIPBlockedError` if the block is remembered; called before every send."""
        at = self.since()
        if at is not None:
            raise KommoIPBlockedError(self.message(at, met=False), status=403)

    def record(self, *, path: str) -> KommoIPBlockedError:
        """Remember that Kommo answered ``path`` with its block page; the error to raise."""
        at = self.since()
        if at is None:
            at = time.time()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # One file per writer, threads of one process included: the record is swapped in
            # whole, whoever writes it last.
            tmp = self.path.with_suffix(f".{os.getpid()}-{threading.get_ident()}.tmp")
            tmp.write_text(json.dumps({"at": at, "host": self.key, "path": path}))
            tmp.replace(self.path)
        return KommoIPBlockedError(self.message(at, met=True, path=path), status=403, path=path)

    def describe(self) -> str:
        at = self.since()
        return f"blocked since {_utc(at)}: {self}" if at is not None else f"not blocked: {self}"

    def clear(self) -> bool:
        """Forget the block; True if there was one on file."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        return True

    def message(self, at: float, *, met: bool, path: str | None = None) -> str:
        what = (
            f"Kommo answered GET {path} with its HTML 403 page"
            if met
            else f"Kommo blocked this machine's IP at {_utc(at)} (an HTML 403 page)"
        )
        return (
            f"{what}: the IP is blocked, usually for exceeding the API rate limit. Every client "
            f"of {self.key} on this machine stops, and none will send a request until "
            f"{_utc(at + self.cooldown)} ({ENV_BAN_COOLDOWN_SECONDS}={self.cooldown:g}). The block "
            "does not lift by itself: ask Kommo support to lift it, check "
            "KOMMO_REQUESTS_PER_SECOND and any other client of this account, then clear it with "
            f"`python -m kommo_dagster.kommo ban clear` (with `--account <name>` for an account of "
            f"KOMMO_ACCOUNTS) or by deleting {self.path}"
        )


__all__ = ["IPBan"]
