"""`KommoResource` that remembers the clients it hands out, so a benchmark can read their stats.

The assets open a client per extraction and close it; `ClientStats.parts` (the sub-windows the
client walked, with their requests and rows) stays readable afterwards. The worker runs Dagster
in process, so the clients live in this module's list. Nothing else changes: same settings, same
client, same rate limiter.
"""

from __future__ import annotations

from kommo_dagster.kommo.client import KommoClient, ProgressCallback
from kommo_dagster.orchestration.resources import KommoResource

# Clients handed out since the list was last cleared (resources are rebuilt for every run, so
# the list lives at module level rather than on the resource).
OBSERVED: list[KommoClient] = []


class ObservedKommoResource(KommoResource):
    @property
    def observed(self) -> list[KommoClient]:
        return OBSERVED

    def get_client(self, *, progress: ProgressCallback | None = None) -> KommoClient:
        client = super().get_client(progress=progress)
        OBSERVED.append(client)
        return client
