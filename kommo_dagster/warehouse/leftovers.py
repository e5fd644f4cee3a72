"""Staging directories (``kommo-stage-*``) a killed run left behind: one that ended without
`StagingInstance.close` leaves its spilled rows on disk, a lot of it for a large extraction.

Each directory records its owner (`Owner`) in a marker file as it is made; the next run that
makes one in the same place removes those whose owner has certainly ended. A directory without
the marker (not made this way), of another machine or user, of an earlier boot (which cannot be
told from another machine's) or of a process that may still run is left alone."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

from kommo_dagster.warehouse.owners import Owner, this_process

log = logging.getLogger(__name__)

STAGING_PREFIX = "kommo-stage-"
# Written in each staging directory as it is made: who made it.
OWNER_FILE = "kommo-stage-owner.json"


def make_staging_dir(name: str, *, parent: Path | None) -> Path:
    """A new staging directory for ``name`` in ``parent`` (default the system's temporary
    directory), marked as this process's; then the leftovers of ended runs there are removed."""
    directory = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{name}-", dir=parent))
    try:
        (directory / OWNER_FILE).write_text(this_process().to_json())
    except OSError:
        log.warning("could not mark %s as this process's; no later run will remove it", directory)
    sweep_staging(directory.parent)
    return directory


def sweep_staging(parent: Path) -> list[Path]:
    """Remove the staging directories in ``parent`` whose owner has certainly ended; returns
    them. Never raises: a leftover that cannot be judged or removed stays."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    for entry in entries:
        if entry.name.startswith(STAGING_PREFIX) and _left_by_an_ended_run(entry):
            directory = Path(entry.path)
            size = _size(directory)
            shutil.rmtree(directory, ignore_errors=True)
            if directory.exists():
                log.warning("could not remove all of %s, left by an ended run", directory)
            else:
                log.info("removed %s (%s), left by an ended run", directory, _megabytes(size))
                removed.append(directory)
    return removed


def _left_by_an_ended_run(entry: os.DirEntry[str]) -> bool:
    try:
        if not entry.is_dir(follow_symlinks=False):
            return False
        if hasattr(os, "getuid") and entry.stat(follow_symlinks=False).st_uid != os.getuid():
            return False
        owner = Owner.from_json((Path(entry.path) / OWNER_FILE).read_text())
    except (OSError, UnicodeDecodeError):  # not this project's marker
        return False
    return owner is not None and owner.has_ended()


def _size(directory: Path) -> int:
    """Bytes of the files under ``directory`` (what they hold, not following links)."""
    total = 0
    for root, _dirs, files in os.walk(directory):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def _megabytes(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB"


__all__ = ["OWNER_FILE", "STAGING_PREFIX", "make_staging_dir", "sweep_staging"]
