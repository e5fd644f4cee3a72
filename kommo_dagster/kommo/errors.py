"""The errors the Kommo client raises.

Every message says what happened and what to do about it, and none of them ever contains the API
token: whatever of an answer a message quotes (its problem text, headers, a value of its body)
may hold it, so every error leaving the client's public calls, with its causes and contexts,
has the token masked (`kommo_dagster.kommo.secrecy`).
"""

from __future__ import annotations


class KommoError(Exception):
    """Base class of every error raised by the Kommo client."""


class KommoConfigError(KommoError, ValueError):
    """A setting is missing or invalid; raised before any request is made.

    The message names the environment variable the setting comes from.
    """


class KommoHTTPError(KommoError):
    """Kommo answered with a status the client does not retry."""

    def __init__(self, message: str, *, status: int | None = None, path: str | None = None):
        super().__init__(message)
        self.status = status
        self.path = path


class KommoAuthError(KommoHTTPError):
    """401: the token was rejected."""


class KommoPaymentRequiredError(KommoHTTPError):
    """402: the account's paid period has ended."""


class KommoIPBlockedError(KommoHTTPError):
    """403 as an HTML page: Kommo blocked this IP for exceeding the rate limit."""


class KommoForbiddenError(KommoHTTPError):
    """403 from the API itself, e.g. /users with a token whose user is not an account admin."""


class KommoNotFoundError(KommoHTTPError):
    """404, e.g. a pipeline id that does not exist."""


class KommoResponseError(KommoHTTPError):
    """A response the client cannot use: HTML or other non-JSON on 200, a malformed body, a 4xx."""


class KommoRetryError(KommoError):
    """Retries ran out; the message says how many attempts, how long, and the last failure."""

    def __init__(self, message: str, *, attempts: int, elapsed: float, last_status: int | None):
        super().__init__(message)
        self.attempts = attempts
        self.elapsed = elapsed
        self.last_status = last_status


class KommoContractError(KommoError, TypeError):
    """A record value does not fit its contract column type."""


class KommoConsistencyError(KommoError):
    """A window kept changing under the walk more often than the re-walk bound allows."""


__all__ = [
    "KommoAuthError",
    "KommoConfigError",
    "KommoConsistencyError",
    "KommoContractError",
    "KommoError",
    "KommoForbiddenError",
    "KommoHTTPError",
    "KommoIPBlockedError",
    "KommoNotFoundError",
    "KommoPaymentRequiredError",
    "KommoResponseError",
    "KommoRetryError",
]
