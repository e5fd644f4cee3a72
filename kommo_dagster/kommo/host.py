"""Whether the base URL reaches a Kommo account, told by the client's first answer.

No request is spent on checking the settings: the first request of whatever stream a client
reads plays that part, so a quiet refresh costs one request per list and nothing more. Most
answers say what is wrong on any request (`kommo_dagster.kommo.answers`): 401 (the token),
402 (the account is not paid), 403 (an HTML page: the IP is blocked; on users: the token's user
is not an administrator), a redirect, an HTML or other non-JSON page. Two answers only mean a
wrong host while the host has not yet answered as Kommo does, and are reported so here: a 404 on
a path every Kommo account has (a stream's own list, the account), and JSON without Kommo's
``_links`` or ``_embedded``. Once one answer came as Kommo's (a 204, or such JSON), the host is
confirmed and later answers are only classified by the transport.

Every error that leaves the transport names the account's own variables: those of an account of
``KOMMO_ACCOUNTS`` are ``KOMMO_<ACCOUNT>_*`` where the messages say ``KOMMO_*``.
"""

from __future__ import annotations

from typing import Any

from kommo_dagster.kommo.config import CHECK_HOST, ENV_PREFIX, name_variables
from kommo_dagster.kommo.errors import KommoError, KommoNotFoundError, KommoResponseError
from kommo_dagster.kommo.response import Response
from kommo_dagster.kommo.streams import STREAMS
from kommo_dagster.kommo.transport import Params, Transport

# Paths every Kommo account answers: each stream's own list (not a parent's object's) and the
# account. A 404 on one of them means the host is not an account's API.
ACCOUNT_PATHS = frozenset(spec.path for spec in STREAMS.values() if spec.parent is None)


def is_kommo_body(data: Any) -> bool:
    """Whether a JSON body is shaped as Kommo's: a HAL object with ``_links`` or ``_embedded``
    (every list page, and the account, carries ``_links.self``)."""
    return isinstance(data, dict) and ("_links" in data or "_embedded" in data)


class HostCheckedTransport(Transport):
    """A `Transport` that checks its first usable answer came from a Kommo account, and whose
    errors name the variables of the account (``env_prefix``).

    The flag is set without a lock: concurrent first requests may each be checked, which costs
    nothing but the check.
    """

    def __init__(self, *, env_prefix: str = ENV_PREFIX, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.env_prefix = env_prefix
        self.host_confirmed = False

    def get(self, path: str, params: Params = (), *, what: str | None = None) -> Response:
        try:
            if self.host_confirmed:
                return super().get(path, params, what=what)
            return self._first_answer(path, params, what=what)
        except KommoError as exc:
            if self.env_prefix != ENV_PREFIX and exc.args:
                exc.args = (name_variables(str(exc.args[0]), self.env_prefix), *exc.args[1:])
            raise

    def _first_answer(self, path: str, params: Params, *, what: str | None) -> Response:
        try:
            response = super().get(path, params, what=what)
        except KommoNotFoundError as exc:
            if path not in ACCOUNT_PATHS:
                raise
            raise KommoNotFoundError(
                f"{self.base_url} has no Kommo account (404 on {path}, a path every account "
                f"answers): {CHECK_HOST}",
                status=404,
                path=path,
            ) from exc
        if response.data is not None and not is_kommo_body(response.data):
            raise KommoResponseError(
                f"{self.base_url}{path} did not answer as a Kommo account (JSON without Kommo's "
                f"_links or _embedded): {CHECK_HOST}",
                path=path,
            )
        self.host_confirmed = True
        return response


__all__ = ["ACCOUNT_PATHS", "HostCheckedTransport", "is_kommo_body"]
