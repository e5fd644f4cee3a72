"""The code location: the Kommo assets, the Kommo resource and the DuckDB IO manager.

Load it with ``dagster dev -w workspace.yaml``, or run one asset with
``dagster asset materialize -m kommo_dagster.definitions --select kommo/leads --partition
2026-10-05`` (``--partition-range 2026-10-01...2026-10-31`` for a range, in one run).

Every setting is read and validated here, when the code location loads (`kommo_dagster.settings`):
a bad value fails the load with the variable's name and the value given. The token stays a
`dagster.EnvVar`, read when a run starts; an account with a host needs it set when the
definitions load, and an account without one (named or not) loads without any variable, to be
browsed (its runs fail at their start, naming the variable). ``KOMMO_ACCOUNTS=acc1,acc2``
serves several accounts, each from its ``KOMMO_<ACCOUNT>_*`` variables
(`kommo_dagster.orchestration.accounts`).

Keeping it fresh: the jobs (`kommo_dagster.orchestration.jobs`), schedules
(`kommo_dagster.orchestration.schedules`), the change sensor (`kommo_dagster.orchestration.sensors`)
and the data checks (`kommo_dagster.orchestration.checks`) are built from the same settings, per
account, by `kommo_dagster.builder`; schedules and the sensor start stopped unless
``KOMMO_SCHEDULES_DEFAULT_ON=true``.
"""

import gc

import dagster as dg

from kommo_dagster.builder import build_kommo_definitions
from kommo_dagster.orchestration.accounts import Account, accounts_of
from kommo_dagster.orchestration.resources import KommoResource
from kommo_dagster.orchestration.translator import KommoTranslator
from kommo_dagster.settings import Location, Settings
from kommo_dagster.unread_variables import warn_unread_variables


def build_definitions(
    settings: Settings | None = None,
    *,
    kommo: KommoResource | None = None,
    translator: KommoTranslator | None = None,
) -> dg.Definitions:
    """The definitions of one account: ``settings`` and ``kommo``, or (both omitted) every
    account the environment configures (``KOMMO_ACCOUNTS``, or the single account), validated
    here: a bad value, or an account without its token, fails the load naming the variable.
    ``translator`` (a `KommoTranslator` subclass) renames keys, adds owners, tags..."""
    if settings is None and kommo is None:
        location = Location.from_env()
        location.check_credentials()
        warn_unread_variables(location)
        return build_kommo_definitions(accounts_of(location), translator=translator)
    settings = settings or Settings.from_env()
    # The resource reaches the account the settings describe, as each of KOMMO_ACCOUNTS does.
    account = Account(settings, kommo or KommoResource.for_account(settings))
    return build_kommo_definitions([account], translator=translator)


defs = build_definitions()
# Dagster's modules and these definitions live as long as the process. Frozen out of the cyclic
# collector, they are not walked again by each full collection that follows: a CLI run's start
# (its planned events) costs about 0.1 CPU s less.
gc.freeze()

__all__ = ["build_definitions", "defs"]
