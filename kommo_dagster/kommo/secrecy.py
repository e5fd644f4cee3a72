"""The API token out of whatever leaves the client: errors, their causes, log records.

Messages quote what a server answered (a record's value, a header, a problem's detail), and a
server may answer with the token it was sent. Rather than trusting every message to scrub what it
quotes, the client's public calls pass their errors through a `Scrubber` on the way out, and the
client's logger passes its records through one: the token is replaced in the message of the
error and of every cause and context chained to it, and in every record's text.
"""

from __future__ import annotations

import logging
import re
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import ParamSpec, TypeVar

from kommo_dagster.kommo.config import Secret
from kommo_dagster.kommo.errors import KommoError

P = ParamSpec("P")
T = TypeVar("T")

MASK = "***"


class Scrubber(logging.Filter):
    """Replaces one token, in any letter case, in texts, exceptions and log records."""

    def __init__(self, token: Secret | None) -> None:
        super().__init__()
        value = "" if token is None else token.get_secret_value()
        # The token as written, and as a repr of a string holding it writes it.
        forms = {value, repr(value)[1:-1]} - {""}
        pattern = "|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True))
        self._pattern = re.compile(pattern, re.IGNORECASE) if pattern else None

    def text(self, text: str) -> str:
        """``text`` with the token masked."""
        return text if self._pattern is None else self._pattern.sub(MASK, text)

    def holds(self, text: str) -> bool:
        return self._pattern is not None and self._pattern.search(text) is not None

    def exception(self, exc: BaseException) -> BaseException:
        """``exc`` with the token out of its text and out of every exception chained to it:
        changed in place where its arguments make its text, else a `KommoError` standing in for
        it with the masked text, the same chain and traceback."""
        return self._chain(exc, {})

    def _chain(self, exc: BaseException, done: dict[int, BaseException]) -> BaseException:
        if id(exc) in done:
            return done[id(exc)]
        clean = done[id(exc)] = self._one(exc)
        suppress = exc.__suppress_context__
        for attr in ("__cause__", "__context__"):
            link = getattr(exc, attr)
            setattr(clean, attr, None if link is None else self._chain(link, done))
        clean.__suppress_context__ = suppress
        return clean

    def _one(self, exc: BaseException) -> BaseException:
        if not self._shows(exc):
            return exc
        exc.args = tuple(self.text(a) if isinstance(a, str) else a for a in exc.args)
        notes = getattr(exc, "__notes__", None)
        if isinstance(notes, list):
            exc.__notes__ = [self.text(n) if isinstance(n, str) else n for n in notes]
        if not self._shows(exc):
            return exc
        # Its text is not its arguments (a UnicodeError, an OSError): a stand-in says it.
        stand_in = KommoError(f"{type(exc).__name__}: {self.text(_str(exc))}")
        if isinstance(notes, list):  # already masked above; they are part of what it says
            stand_in.__notes__ = list(exc.__notes__)
        return stand_in.with_traceback(exc.__traceback__)

    def _shows(self, exc: BaseException) -> bool:
        # Not the type's name in its repr: a short token ("t") would match every
        # ``StopIteration()`` and turn the end of an iteration into an error.
        shown = _repr(exc).removeprefix(type(exc).__name__)
        notes = getattr(exc, "__notes__", None) or []
        return any(self.holds(str(t)) for t in (_str(exc), shown, *notes))

    def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(*args, **kwargs)``, its error scrubbed. Raised outside the ``except`` block, so
        that Python does not chain the unscrubbed original to the scrubbed stand-in."""
        try:
            return fn(*args, **kwargs)
        except BaseException as exc:
            error = self.exception(exc)
            if error is exc:
                raise
        raise error

    def iterate(self, items: Iterator[T]) -> Iterator[T]:
        """``items``, the error of any step scrubbed; closed when this is."""
        try:
            while True:
                try:
                    item = self.call(next, items)
                except StopIteration:
                    return
                yield item
        finally:
            close = getattr(items, "close", None)
            if close is not None:  # its error may quote what it read too
                self.call(close)

    def filter(self, record: logging.LogRecord) -> bool:
        """A logger's filter: the record's message and exception with the token masked."""
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: logging reports it when a handler formats it
            return True
        if self.holds(message):
            record.msg, record.args = self.text(message), ()
        if record.exc_info and record.exc_info[1] is not None:
            error = self.exception(record.exc_info[1])
            record.exc_info = (type(error), error, error.__traceback__)
            record.exc_text = None
        return True


class Scrubbers(logging.Filter):
    """The scrubbers of the clients open in this process, as one filter of their shared logger.

    Not one filter each: a logger's filters are a plain list it walks for each record, and a
    client closing in one thread while another thread's record is walked would shift the list
    under the walk, skipping the next client's scrubber. Held weakly: a client dropped without
    being closed takes its scrubber (and its token) with it.
    """

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._scrubbers: weakref.WeakSet[Scrubber] = weakref.WeakSet()

    def add(self, scrubber: Scrubber) -> None:
        with self._lock:
            self._scrubbers.add(scrubber)

    def discard(self, scrubber: Scrubber) -> None:
        with self._lock:
            self._scrubbers.discard(scrubber)

    def filter(self, record: logging.LogRecord) -> bool:
        with self._lock:
            scrubbers = list(self._scrubbers)
        for scrubber in scrubbers:
            scrubber.filter(record)
        return True


def _str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # an exception whose __str__ fails shows its repr instead
        return _repr(exc)


def _repr(exc: BaseException) -> str:
    """``repr(exc)``, or what shows in its place when its ``__repr__`` fails: looking at an
    error must not raise another in its stead."""
    try:
        return repr(exc)
    except Exception:
        return f"<unrepresentable {type(exc).__name__}>"


__all__ = ["MASK", "Scrubber", "Scrubbers"]
