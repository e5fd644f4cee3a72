"""`KommoResource`: the Kommo client as a Dagster resource.

Settings come from the ``KOMMO_*`` environment variables (`KommoResource.from_env`). The token,
subdomain and base URL are passed as `dagster.EnvVar`, so they are read when a run starts, the UI
shows only the variable's name, and a code location loads without them. A run whose variable is
missing or invalid fails at its start, before any request, with a message naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import dagster as dg
from pydantic import Field

from kommo_dagster.kommo.client import KommoClient, ProgressCallback
from kommo_dagster.kommo.config import (
    DEFAULT_MAX_WORKERS,
    DEFAULT_REQUESTS_PER_SECOND,
    ENV_ALLOW_ANY_HOST,
    ENV_API_TOKEN,
    ENV_BAN_COOLDOWN_SECONDS,
    ENV_BASE_URL,
    ENV_MAX_WORKERS,
    ENV_PREFIX,
    ENV_RATE_LIMIT_DIR,
    ENV_REQUESTS_PER_SECOND,
    ENV_SUBDOMAIN,
    KommoSettings,
)


class KommoResource(dg.ConfigurableResource):
    """A Kommo CRM account (API v4), reached with a private integration's long-lived token.

    Each `get_client` call returns a new `KommoClient` with its own pooled session; use it as a
    context manager. Clients of the same account share one request budget per machine (a file in
    ``rate_limit_dir``), so concurrent steps and runs together stay under
    ``requests_per_second``.
    """

    api_token: str = Field(
        repr=False,
        description=f"Long-lived token of a Kommo private integration ({ENV_API_TOKEN}).",
    )
    subdomain: str | None = Field(
        default=None,
        description=(
            f"Account subdomain: mycompany for https://mycompany.kommo.com ({ENV_SUBDOMAIN})."
        ),
    )
    base_url: str | None = Field(
        default=None,
        description=(
            f"Overrides https://{{subdomain}}.kommo.com, e.g. an amoCRM host or a sandbox "
            f"({ENV_BASE_URL})."
        ),
    )
    requests_per_second: float = Field(
        default=DEFAULT_REQUESTS_PER_SECOND,
        description=(
            f"Request budget of the account, shared by every run on this machine "
            f"({ENV_REQUESTS_PER_SECOND}; Kommo allows 7)."
        ),
    )
    max_workers: int = Field(
        default=DEFAULT_MAX_WORKERS,
        description=f"Most requests one extraction keeps in flight ({ENV_MAX_WORKERS}).",
    )
    env_prefix: str = Field(
        default=ENV_PREFIX,
        description=(
            "Prefix of the variables this account reads (KOMMO_ACC1_ for account acc1 of "
            "KOMMO_ACCOUNTS); errors name the variable with it."
        ),
    )
    rate_limit_dir: str | None = Field(
        default=None,
        description=(
            f"Directory of the shared rate-limit files ({ENV_RATE_LIMIT_DIR}; default: a "
            "folder in the system temp directory). Point every process that uses this account "
            "at the same directory."
        ),
    )

    ban_cooldown_seconds: str | None = Field(
        default=None,
        description=(
            f"Seconds no request is sent after Kommo blocked this machine's IP "
            f"({ENV_BAN_COOLDOWN_SECONDS}; default 3600)."
        ),
    )
    allow_any_host: str | None = Field(
        default=None,
        description=(
            f"true to allow a base URL outside *.kommo.com, *.amocrm.ru, *.amocrm.com and this "
            f"machine ({ENV_ALLOW_ANY_HOST})."
        ),
    )

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, account: str | None = None
    ) -> KommoResource:
        """The resource configured by the ``KOMMO_*`` environment variables.

        With ``account`` (one of ``KOMMO_ACCOUNTS``) the variables are ``KOMMO_<ACCOUNT>_*``.
        The token, subdomain and base URL are the account's own; the budget, workers and
        rate-limit folder fall back to the unprefixed variables.

        The token, the subdomain and the base URL are `EnvVar`s, read when a run starts. The
        subdomain is required only when ``KOMMO_BASE_URL`` is not set. Numeric settings
        (``KOMMO_REQUESTS_PER_SECOND``, ``KOMMO_MAX_WORKERS``) cannot be `EnvVar`s of float
        fields in Dagster; they are read here, and a malformed value is carried as-is so the
        run, not the code location, fails and names the variable.
        """
        env = os.environ if environ is None else environ
        prefix = ENV_PREFIX if account is None else f"{ENV_PREFIX}{account.upper()}_"

        def own(name: str) -> str:
            return prefix + name.removeprefix(ENV_PREFIX)

        def shared(name: str) -> str:
            # The account's variable if set, else the unprefixed one.
            return own(name) if env.get(own(name), "").strip() else name

        kwargs: dict = {"api_token": dg.EnvVar(own(ENV_API_TOKEN)), "env_prefix": prefix}
        if env.get(own(ENV_BASE_URL), "").strip():
            kwargs["base_url"] = dg.EnvVar(own(ENV_BASE_URL))
            if env.get(own(ENV_SUBDOMAIN), "").strip():
                kwargs["subdomain"] = dg.EnvVar(own(ENV_SUBDOMAIN))
        else:
            kwargs["subdomain"] = dg.EnvVar(own(ENV_SUBDOMAIN))
        if env.get(shared(ENV_RATE_LIMIT_DIR), "").strip():
            kwargs["rate_limit_dir"] = dg.EnvVar(shared(ENV_RATE_LIMIT_DIR))
        rps = env.get(shared(ENV_REQUESTS_PER_SECOND), "").strip()
        if rps:
            kwargs["requests_per_second"] = _number_or_nan(rps)
        for field, name in (
            ("ban_cooldown_seconds", ENV_BAN_COOLDOWN_SECONDS),
            ("allow_any_host", ENV_ALLOW_ANY_HOST),
        ):
            if env.get(shared(name), "").strip():
                kwargs[field] = dg.EnvVar(shared(name))
        workers = env.get(shared(ENV_MAX_WORKERS), "").strip()
        if workers:
            kwargs["max_workers"] = int(workers) if workers.lstrip("-").isdigit() else -1
        return cls(**kwargs)

    def settings(self) -> KommoSettings:
        """The validated settings; raises `KommoConfigError` naming the variable at fault."""
        return KommoSettings.build(
            token=_resolve(self.api_token),
            subdomain=_resolve(self.subdomain),
            base_url=_resolve(self.base_url),
            requests_per_second=_check_rps(self.requests_per_second),
            max_workers=_check_workers(self.max_workers),
            rate_limit_dir=_resolve(self.rate_limit_dir),
            ban_cooldown_seconds=_resolve(self.ban_cooldown_seconds),
            allow_any_host=_resolve(self.allow_any_host),
            env_prefix=self.env_prefix,
        )

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # Fail the run at its start when a setting is missing or invalid, naming its variable.
        # No request is sent here: each client's first request tells a wrong token, an unpaid
        # account, a wrong host, a blocked IP or (on users) a non-admin token apart, with its
        # own message (kommo_dagster.kommo.host), so a quiet run costs one request per list.
        self.settings()

    def get_client(self, *, progress: ProgressCallback | None = None) -> KommoClient:
        """A validated client for this account; close it (or use ``with``) when done."""
        return KommoClient.from_settings(self.settings(), progress=progress)


def _resolve(value: str | None) -> str | None:
    """The value of an `EnvVar` field; Dagster resolves them in a run, but not when the resource
    is used directly (a script calling ``KommoResource.from_env().get_client()``)."""
    if isinstance(value, dg.EnvVar):
        return value.get_value()
    return value


def _number_or_nan(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("nan")


def _check_rps(value: float) -> float | str:
    """The value, or the variable's own text when it was not a number (then validation,
    once, in `KommoSettings.build`, names it)."""
    if value != value:  # NaN: the variable held something that is not a number
        return os.environ.get(ENV_REQUESTS_PER_SECOND, "") or "not a number"
    return value


def _check_workers(value: int) -> int | str:
    if value == -1:  # the variable held something that is not an integer
        return os.environ.get(ENV_MAX_WORKERS, "") or "not an integer"
    return value


__all__ = ["KommoResource"]
