"""``python -m kommo_dagster.kommo ban status|clear [--account NAME]``: show or clear the
remembered IP block.

Kept out of `kommo_dagster.kommo.ban` so that running it does not import the module twice.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Mapping
from typing import TypeVar

from kommo_dagster.kommo.ban import IPBan
from kommo_dagster.kommo.config import (
    ENV_ACCOUNTS,
    ENV_BASE_URL,
    ENV_PREFIX,
    ENV_SUBDOMAIN,
    account_variable,
    base_url_for,
    check_account_name,
    environment,
    parse_account_names,
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

    def read(suffixes: tuple[str, ...], parse: Callable[..., T], *, fallback: bool = True) -> T:
        """``parse`` of the variables read for ``suffixes``; its error names those variables
        (the account's own where read), not the shared ones the client's messages name."""
        names = {
            f"{ENV_PREFIX}{s}": account_variable(env, s, account=account, fallback=fallback)
            for s in suffixes
        }
        try:
            return parse(*(env.get(name) for name in names.values()))
        except KommoConfigError as exc:
            shared = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")\b")
            raise KommoConfigError(shared.sub(lambda m: names[m[1]], str(exc))) from None

    url = read(
        ("SUBDOMAIN", "BASE_URL"),
        lambda subdomain, url: base_url_for(
            subdomain=subdomain,
            base_url=base_url or url,
            allow_any_host=True,  # only a file name is derived from it
        ),
        fallback=False,
    )
    return IPBan(
        key=account_key(url),
        directory=read(("RATE_LIMIT_DIR",), rate_limit_dir_for),
        cooldown=read(("BAN_COOLDOWN_SECONDS",), validate_ban_cooldown),
    )


def _check_account(env: Mapping[str, str], account: str) -> None:
    """Raise unless ``account`` is an account of ``KOMMO_ACCOUNTS``, by the rule the code
    location reads them with: another name would read some other account's variables, or
    none."""
    configured = parse_account_names(env.get(ENV_ACCOUNTS))
    listed = (
        f"{ENV_ACCOUNTS} names {', '.join(configured)}"
        if configured
        else f"{ENV_ACCOUNTS} is not set, so there is no account to name"
    )
    try:
        check_account_name(account, source="--account")
    except KommoConfigError as exc:
        raise KommoConfigError(f"{exc}; {listed}") from None
    if account not in configured:
        raise KommoConfigError(
            f"--account {account!r} is not an account of {ENV_ACCOUNTS}: {listed}"
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
    env = environment()
    try:
        if args.account is not None:
            _check_account(env, args.account)
        ban = _ban(env, account=args.account, base_url=args.base_url)
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
