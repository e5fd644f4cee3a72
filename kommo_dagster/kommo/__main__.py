"""``python -m kommo_dagster.kommo ban status|clear``: show or clear the remembered IP block.

Kept out of `kommo_dagster.kommo.ban` so that running it does not import the module twice.
"""

from __future__ import annotations

import argparse
import sys

from kommo_dagster.kommo.ban import IPBan
from kommo_dagster.kommo.config import (
    ENV_BAN_COOLDOWN_SECONDS,
    ENV_BASE_URL,
    ENV_RATE_LIMIT_DIR,
    ENV_SUBDOMAIN,
    base_url_for,
    environment,
    rate_limit_dir_for,
    validate_ban_cooldown,
)
from kommo_dagster.kommo.errors import KommoConfigError
from kommo_dagster.kommo.ratelimit import account_key


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kommo_dagster.kommo",
        description="Show or clear the remembered Kommo IP block of an account.",
    )
    parser.add_argument("command", choices=("ban",))
    parser.add_argument("action", choices=("status", "clear"))
    parser.add_argument(
        "--base-url", help=f"the account's URL (default: from {ENV_BASE_URL}/{ENV_SUBDOMAIN})"
    )
    args = parser.parse_args(argv)
    env = environment()
    try:
        base_url = base_url_for(
            subdomain=env.get(ENV_SUBDOMAIN),
            base_url=args.base_url or env.get(ENV_BASE_URL),
            allow_any_host=True,  # only a file name is derived from it
        )
        ban = IPBan(
            key=account_key(base_url),
            directory=rate_limit_dir_for(env.get(ENV_RATE_LIMIT_DIR)),
            cooldown=validate_ban_cooldown(env.get(ENV_BAN_COOLDOWN_SECONDS)),
        )
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
