"""Kommo's IP block: at its first HTML 403 every client of the account on the machine stops, and
nothing is sent until the cool-down ends or the block is cleared. The sandbox's counters are the
ground truth of what left the machine."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from kommo_dagster.kommo import KommoClient, KommoIPBlockedError
from kommo_dagster.kommo.__main__ import main as kommo_cli
from kommo_dagster.kommo.ban import IPBan
from kommo_dagster.kommo.ratelimit import account_key
from kommo_dagster_tests.kommo.conftest import FAST_RETRY, fetch

pytestmark = pytest.mark.timeout(120)


def _forbidden(sb) -> int:
    return sb.stats()["by_status"].get("403", 0)


def test_a_block_stops_the_extraction_and_later_clients_send_nothing(sandbox_factory, client_for):
    sb = sandbox_factory(leads=1500, requests_per_second=None, latency_ms=5)
    client = client_for(sb, max_workers=3)
    pages = client.iter_records("leads")
    next(pages)
    sb.ban()
    with pytest.raises(KommoIPBlockedError) as err:
        list(pages)
    message = str(err.value)
    assert "the IP is blocked" in message and "Kommo support" in message
    assert "python -m kommo_dagster.kommo ban clear" in message
    client.close()  # the requests still in flight land
    # Only requests already in flight when the block began met it.
    assert 1 <= _forbidden(sb) <= 3
    sent = sb.stats()["requests"]
    for _ in range(2):
        with pytest.raises(KommoIPBlockedError, match="until"):
            fetch(client_for(sb), "tasks")
    assert sb.stats()["requests"] == sent, "no request leaves while the block is remembered"


def test_the_block_lasts_the_cool_down_unless_it_is_cleared(sandbox_factory, client_for, tmp_path):
    sb = sandbox_factory(leads=300, requests_per_second=None)
    sb.ban()
    with pytest.raises(KommoIPBlockedError):
        fetch(client_for(sb), "pipelines")
    sb.reset()  # Kommo support lifted it
    with pytest.raises(KommoIPBlockedError):
        fetch(client_for(sb), "pipelines")
    assert sb.stats()["requests"] == 0
    # A zero cool-down remembers nothing.
    assert fetch(client_for(sb, ban_cooldown_seconds=0), "pipelines")
    # The documented command clears it for everyone.
    env = {**os.environ, "KOMMO_RATE_LIMIT_DIR": str(tmp_path / "rate")}
    done = subprocess.run(
        [sys.executable, "-m", "kommo_dagster.kommo", "ban", "clear", "--base-url", sb.base_url],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "cleared" in done.stdout
    assert fetch(client_for(sb), "pipelines")


def test_an_account_of_kommo_accounts_is_cleared_by_its_name(
    sandbox_factory, client_for, tmp_path, monkeypatch, capsys
):
    """``--account br`` reads KOMMO_BR_BASE_URL, and the shared folder as the runs do."""
    sb = sandbox_factory(leads=300, requests_per_second=None)
    rate_dir = tmp_path / "rate"
    sb.ban()
    with pytest.raises(KommoIPBlockedError, match="--account <name>"):
        fetch(client_for(sb, rate_limit_dir=rate_dir), "pipelines")
    sb.reset()
    for name in ("KOMMO_SUBDOMAIN", "KOMMO_BASE_URL", "KOMMO_BR_RATE_LIMIT_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KOMMO_RATE_LIMIT_DIR", str(rate_dir))
    monkeypatch.setenv("KOMMO_ACCOUNTS", "br, mx")
    monkeypatch.setenv("KOMMO_BR_BASE_URL", sb.base_url)
    assert kommo_cli(["ban", "status", "--account", "mx"]) == 2
    assert "KOMMO_MX_SUBDOMAIN is not set" in capsys.readouterr().err
    assert kommo_cli(["ban", "status", "--account", "br"]) == 0
    assert capsys.readouterr().out.startswith("blocked since ")
    assert kommo_cli(["ban", "clear", "--account", "br"]) == 0
    assert f"cleared the block of {account_key(sb.base_url)}" in capsys.readouterr().out
    assert fetch(client_for(sb, rate_limit_dir=rate_dir), "pipelines")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("KOMMO_BR_BAN_COOLDOWN_SECONDS", "-5"),
        ("KOMMO_BAN_COOLDOWN_SECONDS", "-5"),  # the shared one, read as the account's fallback
        ("KOMMO_BR_RATE_LIMIT_DIR", __file__),
    ],
)
def test_a_bad_value_of_an_account_is_named_by_the_variable_read(
    monkeypatch, capsys, variable, value
):
    monkeypatch.setenv("KOMMO_ACCOUNTS", "br")
    for name in ("KOMMO_BAN_COOLDOWN_SECONDS", "KOMMO_RATE_LIMIT_DIR", "KOMMO_BR_RATE_LIMIT_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KOMMO_BR_BASE_URL", "https://br.kommo.com")
    monkeypatch.setenv(variable, value)
    assert kommo_cli(["ban", "status", "--account", "br"]) == 2
    assert capsys.readouterr().err.startswith(f"{variable} must be ")


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("mx", "--account 'mx' is not an account of KOMMO_ACCOUNTS"),
        ("BR", "--account names an account 'BR': account names are lower-case letters"),
        ("all", "--account names an account 'all', but schema kommo_all holds the views"),
    ],
)
@pytest.mark.parametrize("action", ["status", "clear"])
def test_an_account_not_of_kommo_accounts_is_refused_naming_the_accounts(
    monkeypatch, capsys, tmp_path, name, why, action
):
    """A name KOMMO_ACCOUNTS does not hold, or could not hold, reads no account's variables:
    refused with the names configured, never a block of some other host shown or cleared."""
    monkeypatch.setenv("KOMMO_RATE_LIMIT_DIR", str(tmp_path))
    monkeypatch.setenv("KOMMO_ACCOUNTS", "br,ar")
    for account in (name.upper(), "BR", "AR"):
        monkeypatch.setenv(f"KOMMO_{account}_BASE_URL", f"https://{account.lower()}.kommo.com")
    assert kommo_cli(["ban", action, "--account", name]) == 2
    out = capsys.readouterr()
    assert out.out == "" and why in out.err and "KOMMO_ACCOUNTS names br, ar" in out.err, out.err


def test_an_account_without_kommo_accounts_is_refused(monkeypatch, capsys):
    monkeypatch.delenv("KOMMO_ACCOUNTS", raising=False)
    monkeypatch.setenv("KOMMO_BR_BASE_URL", "https://br.kommo.com")
    assert kommo_cli(["ban", "status", "--account", "br"]) == 2
    assert "KOMMO_ACCOUNTS is not set, so there is no account to name" in capsys.readouterr().err


def test_kommo_accounts_in_error_is_named(monkeypatch, capsys):
    monkeypatch.setenv("KOMMO_ACCOUNTS", "br,br")
    assert kommo_cli(["ban", "status", "--account", "br"]) == 2
    assert capsys.readouterr().err.startswith("KOMMO_ACCOUNTS names br more than once")


_WORKER = textwrap.dedent(
    """
    import sys
    from kommo_dagster.kommo import KommoClient, KommoIPBlockedError
    base_url, token, rate_dir = sys.argv[1:4]
    client = KommoClient(base_url=base_url, token=token, requests_per_second=None,
                         max_workers=1, rate_limit_dir=rate_dir)
    print("started", flush=True)
    try:
        while True:
            for page in client.iter_records("leads"):
                pass
    except KommoIPBlockedError as exc:
        print("blocked:", exc, flush=True)
    """
)


def test_two_processes_stop_at_the_first_block(sandbox_factory, tmp_path):
    """Two processes extract the same account; the account's IP is blocked while both send.
    Each had at most one request in flight, so at most two requests met the block; after that
    nothing left the machine, and neither process sent again."""
    sb = sandbox_factory(leads=1500, requests_per_second=None, latency_ms=10)
    rate_dir = tmp_path / "rate"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, sb.base_url, sb.token, str(rate_dir)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "started"
        while sb.stats()["requests"] < 20:
            time.sleep(0.01)
        sb.ban()
        outputs = [p.communicate(timeout=60)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert all("the IP is blocked" in out for out in outputs), outputs
    assert 1 <= _forbidden(sb) <= 2
    sent = sb.stats()["requests"]
    ban = IPBan(key=account_key(sb.base_url), directory=rate_dir, cooldown=3600)
    assert ban.since() is not None
    with (
        KommoClient(
            base_url=sb.base_url, token=sb.token, rate_limit_dir=rate_dir, retry=FAST_RETRY
        ) as client,
        pytest.raises(KommoIPBlockedError),
    ):
        client.get("/api/v4/account")
    assert sb.stats()["requests"] == sent


def test_threads_meeting_the_block_at_once_all_record_it(tmp_path):
    """A client's worker threads draw the block page together: each records it (one file, a
    readable record) and raises the block error, never a file error from another's write."""
    import json
    import threading

    ban = IPBan(key="acc.kommo.com", directory=tmp_path, cooldown=3600)
    for attempt in range(30):
        ban.clear()
        start = threading.Barrier(8)
        errors: list[BaseException] = []

        def meet(start: threading.Barrier = start, errors: list = errors) -> None:
            start.wait()
            try:
                error = ban.record(path="/api/v4/leads")
                assert isinstance(error, KommoIPBlockedError)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=meet) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == [], f"attempt {attempt}: {errors[0]!r}"
        assert json.loads(ban.path.read_text())["path"] == "/api/v4/leads"
        assert sorted(p.name for p in tmp_path.iterdir()) == [ban.path.name]


@pytest.mark.parametrize("at", ["1e20", "Infinity", "NaN", '"soon"'])
def test_a_damaged_block_time_reads_as_the_files_own(tmp_path, at):
    """A record whose time no clock gives (a damaged file) made `check` raise a bare
    OverflowError or ValueError from formatting that time, or hold back no request at all,
    instead of the block error; the file's own time is when the block was met."""
    ban = IPBan(key="acc.kommo.com", directory=tmp_path, cooldown=3600)
    ban.path.write_text('{"at": ' + at + ', "host": "acc.kommo.com", "path": "/api/v4/leads"}')
    written = ban.path.stat().st_mtime
    assert ban.since() == pytest.approx(written)
    with pytest.raises(KommoIPBlockedError, match="blocked this machine's IP"):
        ban.check()
