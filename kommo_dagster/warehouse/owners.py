"""Which process left a file behind, and whether it has certainly ended: what lets a run clear
what a killed run left (a staging directory, a lock's holder record) without touching what a
live one still uses.

A PID alone does not say it: PIDs are reused, so the owner is also told by its start time
(Linux's clock ticks since boot, with the boot's id), and by the machine and PID namespace whose
PIDs these are (a directory may be shared with another machine or container); the boot's id
also tells two machines of one host name apart. Where the start time cannot be read (not
Linux), only a PID that no process has counts as ended."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

_PROC = Path("/proc")
# PIDs are C ints: a larger one is no process's (and `os.kill` refuses it).
_PID_LIMIT = 2**31


@dataclass(frozen=True)
class Owner:
    """A process, as a file records it: ``host`` and ``namespace`` (its PID namespace) say
    whose PIDs ``pid`` counts; ``started`` tells it from a later process with the same PID."""

    host: str
    namespace: str | None
    pid: int
    started: str | None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Owner | None:
        """The owner a file records, or None for anything else (an older or foreign file)."""
        try:
            data = json.loads(text)
            owner = cls(
                host=data["host"],
                namespace=data["namespace"],
                pid=data["pid"],
                started=data["started"],
            )
        except (ValueError, TypeError, KeyError):
            return None
        fields_ok = (
            isinstance(owner.host, str)
            and type(owner.pid) is int  # not a bool
            and 0 < owner.pid < _PID_LIMIT
            and isinstance(owner.namespace, str | None)
            and isinstance(owner.started, str | None)
        )
        return owner if fields_ok else None

    def has_ended(self) -> bool:
        """True only when certain: a process of this machine and PID namespace (and boot, where
        its start time was recorded), and either no process has its PID or the one that has it
        started at another time. Unsure is False.

        Another boot id is unsure: every machine's first PID namespace has the same id, so a
        machine with this host name sharing the directory records what this one would, but for
        its boot; a restart of this machine cannot be told from it."""
        if self.host != socket.gethostname() or self.namespace != _namespace():
            return False
        if self.started is not None and self.started.partition("/")[0] != _boot_id():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except OSError:  # exists, someone else's (PermissionError)
            pass
        if self.started is None:
            return False
        now = _started(self.pid)
        return now is not None and now != self.started


def this_process() -> Owner:
    pid = os.getpid()
    return Owner(host=socket.gethostname(), namespace=_namespace(), pid=pid, started=_started(pid))


def _namespace() -> str | None:
    try:
        return os.readlink(_PROC / "self" / "ns" / "pid")
    except OSError:
        return None


def _boot_id() -> str | None:
    try:
        return (_PROC / "sys" / "kernel" / "random" / "boot_id").read_text().strip()
    except OSError:
        return None


def _started(pid: int) -> str | None:
    """``<boot id>/<start ticks>`` of a live process, None if it cannot be read."""
    boot = _boot_id()
    if boot is None:
        return None
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count after its last ")".
    fields = stat.rpartition(")")[2].split()
    try:
        ticks = int(fields[19])  # field 22, starttime
    except (IndexError, ValueError):
        return None
    return f"{boot}/{ticks}"


__all__ = ["Owner", "this_process"]
