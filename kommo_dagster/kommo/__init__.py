"""The Kommo API v4 client: plain Python, no Dagster. HTTP, paging, rate limit and retries.

```python
from kommo_dagster.kommo import KommoClient
from kommo_dagster.kommo.records import to_columns

with KommoClient(base_url="https://mycompany.kommo.com", token=token) as client:
    for page in client.iter_records("leads", start=day_start, end=day_end):
        columns = to_columns("leads", page)
```

`KommoClient`, `ProgressCallback` and `RetryPolicy` are loaded on first use, so that the code
location's definitions, which need the configuration and the errors but no client, load without
PyArrow, msgspec and urllib3.
"""

from typing import TYPE_CHECKING, Any

from kommo_dagster.kommo import errors
from kommo_dagster.kommo.config import (
    ENV_API_TOKEN,
    ENV_BASE_URL,
    ENV_MAX_WORKERS,
    ENV_RATE_LIMIT_DIR,
    ENV_REQUESTS_PER_SECOND,
    ENV_SUBDOMAIN,
    KommoSettings,
    Secret,
)
from kommo_dagster.kommo.errors import *  # noqa: F403 - every error is part of the API
from kommo_dagster.kommo.stats import ClientStats, PartStats, Progress

if TYPE_CHECKING:
    from kommo_dagster.kommo.client import KommoClient, ProgressCallback
    from kommo_dagster.kommo.transport import RetryPolicy

_LAZY = {
    "KommoClient": "kommo_dagster.kommo.client",
    "ProgressCallback": "kommo_dagster.kommo.client",
    "RetryPolicy": "kommo_dagster.kommo.transport",
}

__all__ = [
    "ENV_API_TOKEN",
    "ENV_BASE_URL",
    "ENV_MAX_WORKERS",
    "ENV_RATE_LIMIT_DIR",
    "ENV_REQUESTS_PER_SECOND",
    "ENV_SUBDOMAIN",
    "ClientStats",
    "KommoClient",
    "KommoSettings",
    "PartStats",
    "Progress",
    "ProgressCallback",
    "RetryPolicy",
    "Secret",
    *errors.__all__,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
