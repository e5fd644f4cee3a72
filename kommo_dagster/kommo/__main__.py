"""``python -m kommo_dagster.kommo ban status|clear [--account NAME]``: show or clear the
remembered IP block.

Kept out of `kommo_dagster.kommo.ban` so that running it does not import the module twice.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from typing import TypeVar

from kommo_dagster.kommo.ban import IPBan
from kommo_dagster.kommo.config import (
    ENV_BASE_URL,
    ENV_PREFIX,
    ENV_SUBDOMAIN,
    account_variable,
    base_url_for,
    environment,
    name_variables,
    rate_limit_dir_for,
    validate_ban_cooldown,
)
from kommo_dagster.kommo.errors import KommoConfigError
from kommo_dagster.kommo.ratelimit import account_key

T = TypeVar("T")


def _ban(env: Mapping[str, str], *, account: str | None, base_url: str | None) -> IPBan:
    """The block of the account the variables name: the unprefixed ones, or with ``account``
    its own ``KOMMO_<ACCOUNT>_*`` (the folder and cool-down falling back to the shared ones,
    as the code location reads them)."""

    def value(suffix: str, *, fallback: bool = True) -> str | None:
        return env.get(account_variable(env, suffix, account=account, fallback=fallback))

    def read(suffix: str, parse: Callable[[str | None], T]) -> T:
        """``parse`` of the variable read for ``suffix``; its error names that variable (the
        account's own when set), not the shared one the client's messages name."""
        name = account_variable(env, suffix, account=account)
        try:
            return parse(env.get(name))
        except KommoConfigError as exc:
            raise KommoConfigError(str(exc).replace(f"{ENV_PREFIX}{suffix}", name)) from None

    try:
        url = base_url_for(
            subdomain=value("SUBDOMAIN", fallback=False),
            base_url=base_url or value("BASE_URL", fallback=False),
            allow_any_host=True,  # only a file name is derived from it
        )
    except KommoConfigError as exc:
        prefix = f"{ENV_PREFIX}{account.upper()}_" if account else ENV_PREFIX
        raise KommoConfigError(name_variables(str(exc), prefix)) from None
    return IPBan(
        key=account_key(url),
        directory=read("RATE_LIMIT_DIR", rate_limit_dir_for),
        cooldown=read("BAN_COOLDOWN_SECONDS", validate_ban_cooldown),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kommo_dagster.kommo",
        description="Show or clear the remembered Kommo IP block of an account.",
    )
    parser.add_argument("command", choices=("ban",))
    parser.add_argument("action", choices=("status", "clear"))
    parser.add_argument(
        "--account",
        help="an account of KOMMO_ACCOUNTS: read its KOMMO_<ACCOUNT>_* variables",
    )
    parser.add_argument(
        "--base-url", help=f"the account's URL (default: from {ENV_BASE_URL}/{ENV_SUBDOMAIN})"
    )
    args = parser.parse_args(argv)
    try:
        ban = _ban(environment(), account=args.account, base_url=args.base_url)
    except KommoConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.action == "clear":
        print(f"cleared the block of {ban.key}" if ban.clear() else f"no block on file: {ban}")
        return 0
    print(ban.describe())
    return 0


if __name__ == "__main__":
    sys.exit(main())
