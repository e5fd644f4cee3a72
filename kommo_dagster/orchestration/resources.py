"""`KommoResource`: the Kommo client as a Dagster resource.

The code location makes one per account from its configuration (`KommoResource.for_account`,
`kommo_dagster.settings`), validated when the definitions load. The token is a `dagster.EnvVar`,
read when a run starts, so the UI shows only the variable's name. A run whose token is missing
or rejected fails at its start, before any other request, with a message naming the variable.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

from kommo_dagster.kommo.config import (
    DEFAULT_MAX_WORKERS,
    DEFAULT_REQUESTS_PER_SECOND,
    ENV_PREFIX,
    KommoSettings,
    Secret,
    account_variable,
    environment,
    plain_number,
    variable_value,
)
from kommo_dagster.kommo.secrecy import Scrubber
from kommo_dagster.settings import SETTING, Settings

if TYPE_CHECKING:
    # The client (and PyArrow, msgspec, urllib3 under it) is imported by `get_client`, when a
    # run needs it: loading the definitions does not.
    from kommo_dagster.kommo.client import KommoClient, ProgressCallback

# The resource's text fields read from a variable of the account, else the unprefixed one.
_TEXT_VARIABLES = {
    "rate_limit_dir": "RATE_LIMIT_DIR",
    "ban_cooldown_seconds": "BAN_COOLDOWN_SECONDS",
    "allow_any_host": "ALLOW_ANY_HOST",
}


class KommoResource(dg.ConfigurableResource):
    """A Kommo CRM account (API v4), reached with a private integration's long-lived token.

    Each `get_client` call returns a new `KommoClient` with its own connection pool; use it as a
    context manager. Clients of the same account share one request budget per machine (a file in
    ``rate_limit_dir``), so concurrent steps and runs together stay under
    ``requests_per_second``. The code location's configuration refuses a budget above Kommo's 7
    unless it is explicitly allowed; a resource made directly in Python takes the budget given.
    """

    api_token: str = Field(repr=False, description=SETTING["token_variable"].about)
    subdomain: str | None = Field(default=None, description=SETTING["subdomain"].about)
    base_url: str | None = Field(default=None, description=SETTING["base_url"].about)
    requests_per_second: float = Field(
        default=DEFAULT_REQUESTS_PER_SECOND, description=SETTING["requests_per_second"].about
    )
    max_workers: int = Field(default=DEFAULT_MAX_WORKERS, description=SETTING["max_workers"].about)
    env_prefix: str = Field(
        default=ENV_PREFIX,
        description=(
            "Prefix of the variables this account reads (KOMMO_ACC1_ for account acc1 of "
            "KOMMO_ACCOUNTS); errors name the variable with it."
        ),
    )
    rate_limit_dir: str | None = Field(default=None, description=SETTING["rate_limit_dir"].about)
    ban_cooldown_seconds: str | None = Field(
        default=None, description=SETTING["ban_cooldown_seconds"].about
    )
    allow_any_host: str | None = Field(default=None, description=SETTING["allow_any_host"].about)

    @classmethod
    def for_account(cls, settings: Settings) -> KommoResource:
        """The resource of an account of the code location's configuration, whose values were
        validated when the definitions loaded. The token stays a variable, read when a run
        starts, so neither the definitions nor the UI ever hold it."""
        rate_limit_dir = settings.rate_limit_dir
        return cls(
            api_token=dg.EnvVar(settings.token_variable),
            subdomain=settings.subdomain,
            base_url=settings.base_url,
            requests_per_second=settings.requests_per_second,
            max_workers=settings.max_workers,
            env_prefix=settings.env_prefix,
            rate_limit_dir=None if rate_limit_dir is None else str(rate_limit_dir),
            ban_cooldown_seconds=str(settings.ban_cooldown_seconds),
            allow_any_host=str(settings.allow_any_host).lower(),
        )

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, account: str | None = None
    ) -> KommoResource:
        """The resource of the ``KOMMO_*`` variables, for a script or a test that uses it alone
        (the code location builds its resources with `for_account`, validated when it loads).

        With ``account`` the variables are ``KOMMO_<ACCOUNT>_*``: the token, subdomain and base
        URL are the account's own, the rest fall back to the unprefixed variables. Every value
        is read when a run starts (or `get_client` is called), and a bad one fails it naming its
        variable: the string ones as `EnvVar`s; the numbers, which cannot be `EnvVar`s of
        numeric fields, from the variable again when they are not numbers.
        """
        env = environment(environ)

        def var(suffix: str, *, own: bool = False) -> str:
            return account_variable(env, suffix, account=account, fallback=not own)

        kwargs: dict = {"api_token": dg.EnvVar(var("API_TOKEN", own=True))}
        kwargs["env_prefix"] = var("API_TOKEN", own=True).removesuffix("API_TOKEN")
        base_url, subdomain = var("BASE_URL", own=True), var("SUBDOMAIN", own=True)
        if variable_value(env, base_url) is not None:
            kwargs["base_url"] = dg.EnvVar(base_url)
        if variable_value(env, subdomain) is not None or "base_url" not in kwargs:
            kwargs["subdomain"] = dg.EnvVar(subdomain)
        for name, suffix in _TEXT_VARIABLES.items():
            if variable_value(env, var(suffix)) is not None:
                kwargs[name] = dg.EnvVar(var(suffix))
        # Numbers only as written plainly: int() and float() also read "1_0" and other
        # scripts' digits, which the validation refuses by the variable's text.
        rps = variable_value(env, var("REQUESTS_PER_SECOND"))
        if rps is not None:
            kwargs["requests_per_second"] = float(rps) if plain_number(rps) else float("nan")
        workers = variable_value(env, var("MAX_WORKERS"))
        if workers is not None:
            plain = plain_number(workers, fraction=False)
            kwargs["max_workers"] = int(workers) if plain else -1
        return cls(**kwargs)

    def settings(self) -> KommoSettings:
        """The validated settings; raises `KommoConfigError` naming the variable at fault."""
        return KommoSettings.build(
            token=_resolve(self.api_token),
            subdomain=_resolve(self.subdomain),
            base_url=_resolve(self.base_url),
            requests_per_second=self._as_read(self.requests_per_second, "REQUESTS_PER_SECOND"),
            max_workers=self._as_read(self.max_workers, "MAX_WORKERS"),
            rate_limit_dir=_resolve(self.rate_limit_dir),
            ban_cooldown_seconds=_resolve(self.ban_cooldown_seconds),
            allow_any_host=_resolve(self.allow_any_host),
            env_prefix=self.env_prefix,
        )

    def _as_read(self, value: float, suffix: str) -> float | str:
        """``value``, or when `from_env` found no number (NaN; -1 workers) the variable's own
        text, so that validation names the variable and the value given."""
        if value == value and not (suffix == "MAX_WORKERS" and value == -1):
            return value
        account = self.env_prefix.removeprefix(ENV_PREFIX).removesuffix("_").lower() or None
        return environment().get(account_variable(environment(), suffix, account=account), "")

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # Fail the run at its start when a setting is missing or invalid, naming its variable.
        # No request is sent here: each client's first request tells a wrong token, an unpaid
        # account, a wrong host, a blocked IP or (on users) a non-admin token apart, with its
        # own message (kommo_dagster.kommo.host), so a quiet run costs one request per list.
        self.settings()

    def scrubber(self) -> Scrubber:
        """What masks this account's token in the errors of a step: the client masks it in its
        own, but values of Kommo's answers also reach errors of the staging and the write."""
        token = _resolve(self.api_token)
        return Scrubber(Secret(token) if token else None)

    def get_client(self, *, progress: ProgressCallback | None = None) -> KommoClient:
        """A validated client for this account; close it (or use ``with``) when done."""
        from kommo_dagster.kommo.client import KommoClient

        return KommoClient.from_settings(self.settings(), progress=progress)


def _resolve(value: str | None) -> str | None:
    """The value of an `EnvVar` field; Dagster resolves them in a run, but not when the resource
    is used directly (a script calling ``KommoResource.from_env().get_client()``)."""
    if isinstance(value, dg.EnvVar):
        return value.get_value()
    return value


__all__ = ["KommoResource"]
