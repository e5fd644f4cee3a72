"""`Scrubber`: the token out of exceptions (their chains included) and log records."""

from __future__ import annotations

import gc
import logging
import traceback
import weakref

import pytest

from kommo_dagster.kommo import KommoConfigError, KommoError, KommoResponseError, RetryPolicy
from kommo_dagster.kommo.config import Secret
from kommo_dagster.kommo.secrecy import Scrubber
from kommo_dagster.kommo.stats import StatsRecorder
from kommo_dagster.kommo.transport import Transport, log

TOKEN = "tok-Unit3-SECRET-9x"
SCRUB = Scrubber(Secret(TOKEN))


def _shown(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)) + repr(exc) + repr(exc.__context__)


class _Quoting(Exception):
    """An error whose text is an attribute, not its arguments (as OSError's filename)."""

    def __init__(self, value: str) -> None:
        super().__init__()
        self.value = value

    def __str__(self) -> str:
        return f"cannot read {self.value}"


def _raise_chain() -> None:
    try:
        raise _Quoting(TOKEN)
    except _Quoting as inner:
        try:
            raise ValueError(f"value {TOKEN.upper()!r} refused") from inner
        except ValueError:
            raise KommoResponseError(f"record {TOKEN}", status=400, path="/x") from None


def test_an_error_and_its_chain_lose_the_token_keeping_their_types():
    with pytest.raises(KommoResponseError) as raised:
        SCRUB.call(_raise_chain)
    error = raised.value
    assert str(error) == "record ***" and error.status == 400 and error.path == "/x"
    assert isinstance(error.__context__, ValueError) and error.__suppress_context__
    assert str(error.__context__) == "value '***' refused"
    # An error whose text is not its arguments: a stand-in says it, masked.
    stand_in = error.__context__.__cause__
    assert type(stand_in) is KommoError and str(stand_in) == "_Quoting: cannot read ***"
    assert TOKEN.lower() not in _shown(error).lower()


def test_an_iterator_step_error_is_scrubbed_and_the_iterator_closed():
    closed = []

    def pages():
        try:
            yield 1
            raise ValueError(f"page of {TOKEN}")
        finally:
            closed.append(True)

    items = SCRUB.iterate(pages())
    assert next(items) == 1
    with pytest.raises(ValueError, match=r"page of \*\*\*"):
        next(items)
    items = SCRUB.iterate(pages())
    next(items)
    items.close()
    assert closed == [True, True]


def test_an_error_closing_the_iterator_is_scrubbed():
    """The iterator's own cleanup may fail quoting what it read (a connection's, a file's)."""

    class Pages:
        def __iter__(self) -> Pages:
            return self

        def __next__(self) -> int:
            return 1

        def close(self) -> None:
            raise OSError(f"cannot release the page of {TOKEN}")

    items = SCRUB.iterate(Pages())
    assert next(items) == 1
    with pytest.raises(OSError, match=r"page of \*\*\*") as raised:
        items.close()
    assert TOKEN.lower() not in _shown(raised.value).lower()


class _Unprintable(Exception):
    """An error that cannot say itself: its ``__str__`` and ``__repr__`` both fail."""

    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def test_an_error_that_cannot_say_itself_is_raised_as_it_came():
    """Looking at its text fails: the scrubber must not raise that failure in its place."""

    def fail() -> None:
        raise _Unprintable(TOKEN)

    with pytest.raises(_Unprintable):
        SCRUB.call(fail)


def test_an_error_whose_repr_fails_is_scrubbed_by_its_text():
    class NoRepr(Exception):
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    def fail() -> None:
        raise NoRepr(f"value {TOKEN}")

    with pytest.raises(NoRepr, match=r"value \*\*\*"):
        SCRUB.call(fail)


def test_a_short_token_masks_what_errors_say_not_their_type_names():
    """A token that is a letter of every type's name (``t``): an iteration still ends, an
    error keeps its type and name, and only what it says is masked."""
    scrub = Scrubber(Secret("t"))
    assert list(scrub.iterate(iter([1, 2]))) == [1, 2]
    with pytest.raises(KommoResponseError) as raised:
        scrub.call(_raise, KommoResponseError("at the gate", status=400, path="/x"))
    assert str(raised.value) == "a*** ***he ga***e" and raised.value.status == 400
    plain = KommoResponseError("none here", status=500, path="/x")
    assert scrub.exception(plain) is plain and str(plain) == "none here"
    stand_in = scrub.exception(_Quoting("state"))
    assert type(stand_in) is KommoError and str(stand_in) == "_Quoting: canno*** read s***a***e"


def _raise(error: BaseException) -> None:
    raise error


def test_log_records_lose_the_token(caplog):
    logger = logging.getLogger("kommo_dagster_tests.secrecy")
    logger.addFilter(SCRUB)
    try:
        with caplog.at_level(logging.DEBUG, logger=logger.name):
            logger.warning("got %r", TOKEN)
            try:
                raise ValueError(TOKEN)
            except ValueError:
                logger.exception("failed")
    finally:
        logger.removeFilter(SCRUB)
    assert "got '***'" in caplog.text and "ValueError: ***" in caplog.text
    assert TOKEN not in caplog.text


def test_no_token_masks_nothing():
    assert Scrubber(None).text("anything") == "anything"
    error = ValueError("anything")
    assert Scrubber(Secret("")).exception(error) is error


def test_a_stand_in_keeps_the_notes_of_the_error_it_stands_in_for():
    """A note added on the way out (the asset's "left as it was") is part of what the error
    says: the stand-in for an error whose text is not its arguments says it too, masked."""

    def fail() -> None:
        error = _Quoting(TOKEN)
        error.add_note(f"the table was left as it was ({TOKEN})")
        raise error

    with pytest.raises(KommoError) as raised:
        SCRUB.call(fail)
    assert str(raised.value) == "_Quoting: cannot read ***"
    assert raised.value.__notes__ == ["the table was left as it was (***)"]
    assert "the table was left as it was (***)" in _shown(raised.value)


def _transport(token: str, base_url: str = "http://127.0.0.1:9") -> Transport:
    """A transport that sends nothing here: only its scrubbing of the client's logger is used."""
    return Transport(
        base_url=base_url,
        token=Secret(token),
        limiter=None,
        stats=StatsRecorder(),
        pool_size=1,
        timeout=(1.0, 1.0),
        retry=RetryPolicy(),
    )


def test_a_transport_that_fails_to_build_leaves_the_logger_as_it_was(monkeypatch, tmp_path):
    """Nobody can close a transport its constructor did not return: it must not have left its
    filter (and the token it holds) on the client's logger for the life of the process."""
    before = list(log.filters)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "nowhere.pem"))
    with pytest.raises(KommoConfigError, match=r"nowhere\.pem' does not exist"):
        _transport(TOKEN, "https://acme.kommo.com")
    assert log.filters == before


class _ClosingWhenShown:
    """An argument of a log record that closes a transport when the record's message is first
    built: as another thread's client closing while this record goes through the filters."""

    def __init__(self, transport: Transport) -> None:
        self.transport: Transport | None = transport

    def __str__(self) -> str:
        if self.transport is not None:
            self.transport, transport = None, self.transport
            transport.close()
        return "shown"


def test_a_client_closing_while_another_logs_leaves_the_others_record_masked(caplog):
    """Clients of one process share the logger: one closing in the middle of another's record
    must not let that record past the other's scrubber."""
    first = _transport("tok-First7-other-account")
    second = _transport(TOKEN)
    try:
        with caplog.at_level(logging.WARNING, logger=log.name):
            log.warning("%s %s", _ClosingWhenShown(first), TOKEN)
    finally:
        second.close()
    assert "shown ***" in caplog.text
    assert TOKEN not in caplog.text


def test_a_client_dropped_without_closing_leaves_nothing_of_its_token_on_the_logger():
    """The logger lives as long as the process: what it keeps of a client that was never closed
    (an error before its ``close``) would keep the token, and filter every later record."""
    transport = _transport(TOKEN)
    scrubber = weakref.ref(transport.scrubber)
    del transport
    gc.collect()
    assert scrubber() is None
