"""Per-step capture of logs and output: what a materialization attempt logs through :mod:`logging`
and writes to ``sys.stdout``/``sys.stderr`` while it runs becomes lines of ``flowstone_step_logs``.

How it works, and why it is safe with concurrent steps in one worker (threads):

- The step being captured is a :class:`contextvars.ContextVar` set around the asset function, in
  the thread that runs it; every other thread (and every other step) sees its own value.
- One :class:`logging.Handler` on the root logger (there while any step is captured) hands each
  record to the capture of the step it was emitted in, if any; records of other threads pass by.
  Logging still reaches every other handler as configured: capture adds a destination.
- ``sys.stdout`` and ``sys.stderr`` are wrapped (once, when a capture starts) by a router that
  gives writes made inside a step to its capture (and, with ``echo``, to the original stream too)
  and passes every other write through unchanged.
- A capture is bounded (:class:`StepLogSettings`): past ``max_lines`` lines or ``max_bytes`` bytes
  of messages it stores one truncation marker and drops the rest, so a chatty asset cannot fill
  the database or the worker's memory.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any, cast

from flowstone.store import base as store_base
from flowstone.store import records

__all__ = ["StepCapture", "StepLogSettings", "capturing"]

ASSET_LOGGERS = "flowstone.asset"
"""The parent of every ``context.log`` (``flowstone.asset.<name>``)."""

_NOT_CAPTURED = ("flowstone.events",)
"""Loggers whose records are never step lines: lifecycle events describe the step from outside."""


@dataclass(frozen=True, slots=True)
class StepLogSettings:
    """How step logs are captured (``fs.FlowStone(step_logs=...)``).

    ``max_lines``/``max_bytes``: the bound per materialization attempt (bytes of UTF-8 message
    text), after which one truncation marker is stored. ``level``: the lowest level of a logging
    record that is stored (and the level of ``context.log`` when nothing configured it).
    ``capture_output``: also capture ``sys.stdout``/``sys.stderr``. ``echo``: captured output still
    goes to the process's own stdout/stderr. ``enabled=False`` turns capture off.
    """

    enabled: bool = True
    max_lines: int = 10_000
    max_bytes: int = 1024 * 1024
    level: int = logging.INFO
    capture_output: bool = True
    echo: bool = True


_current: contextvars.ContextVar[StepCapture | None] = contextvars.ContextVar("flowstone_step", default=None)
_install_lock = threading.Lock()
_JSON_SCALARS = (str, int, float, bool, type(None))
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def _jsonable(value: object) -> object:
    if isinstance(value, str):
        return value.replace("\x00", "\\x00")
    if isinstance(value, _JSON_SCALARS):
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return repr(value)


class StepCapture:
    """The captured lines of one materialization attempt not yet handed to the store."""

    def __init__(self, materialization_id: int, attempt: int, settings: StepLogSettings) -> None:
        self.materialization_id = materialization_id
        self.attempt = attempt
        self.settings = settings
        self._lock = threading.Lock()
        self._pending: list[records.StepLogLine] = []
        self._seq = 0
        self._bytes = 0
        self.truncated = False
        self.dropped = 0
        """Lines not stored because of the bound."""
        self._partial: dict[str, str] = {}

    def add(
        self,
        stream: str,
        level: str,
        logger: str,
        message: str,
        *,
        extra: dict[str, Any] | None = None,
        at: float | None = None,
    ) -> None:
        """Capture one line (or drop it past the bound)."""
        with self._lock:
            if self.truncated:
                self.dropped += 1
                return
            size = len(message.encode("utf-8", "replace"))
            if self._seq >= self.settings.max_lines or self._bytes + size > self.settings.max_bytes:
                self.truncated = True
                self.dropped += 1
                self._append(
                    "flowstone",
                    "WARNING",
                    "flowstone.logs",
                    f"step log truncated: this attempt reached the limit of {self.settings.max_lines} "
                    f"lines or {self.settings.max_bytes} bytes; later lines are not stored",
                    extra={"max_lines": self.settings.max_lines, "max_bytes": self.settings.max_bytes},
                    at=at,
                )
                return
            self._bytes += size
            self._append(stream, level, logger, message, extra=extra or {}, at=at)

    def _append(
        self, stream: str, level: str, logger: str, message: str, *, extra: dict[str, Any], at: float | None
    ) -> None:
        self._seq += 1
        self._pending.append(
            records.StepLogLine(
                materialization_id=self.materialization_id,
                attempt=self.attempt,
                seq=self._seq,
                at=datetime.fromtimestamp(at if at is not None else time.time(), UTC),
                stream=stream,
                level=level,
                logger=logger,
                message=message,
                extra=extra,
            )
        )

    def write(self, stream: str, text: str) -> None:
        """Capture text written to ``stream`` (``stdout``/``stderr``), line by line; a line without
        its newline yet waits for the rest (or the end of the step)."""
        if self.truncated:  # the fast path of a chatty step past its bound
            with self._lock:
                self.dropped += text.count("\n")
            return
        buffered = self._partial.get(stream, "") + text
        *lines, rest = buffered.split("\n")
        self._partial[stream] = rest
        level = "INFO" if stream == "stdout" else "WARNING"
        for line in lines:
            self.add(stream, level, stream, line)

    def take(self) -> list[records.StepLogLine]:
        """The lines captured since the last call."""
        with self._lock:
            lines, self._pending = self._pending, []
        return lines

    def close(self) -> list[records.StepLogLine]:
        """End the capture: output without a final newline becomes a line; the lines not yet taken."""
        for stream, rest in list(self._partial.items()):
            if rest:
                self.add(stream, "INFO" if stream == "stdout" else "WARNING", stream, rest)
        self._partial.clear()
        return self.take()


class _CaptureHandler(logging.Handler):
    """Hands log records emitted inside a step to that step's capture."""

    def emit(self, record: logging.LogRecord) -> None:
        capture = _current.get()
        if capture is None or capture.settings.echo:
            self._last_resort(record)
        if capture is None:
            return
        if record.levelno < capture.settings.level or record.name.startswith(_NOT_CAPTURED):
            return
        try:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + self.formatter_exception(record)
            extra = {k: _jsonable(v) for k, v in vars(record).items() if k not in _RECORD_FIELDS}
            capture.add("log", record.levelname, record.name, message, extra=extra, at=record.created)
        except Exception:  # noqa: BLE001 - logging must never break the step
            self.handleError(record)

    @staticmethod
    def formatter_exception(record: logging.LogRecord) -> str:
        """The record's traceback, formatted as logging does."""
        if not record.exc_text and record.exc_info:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        return record.exc_text or ""

    def _last_resort(self, record: logging.LogRecord) -> None:
        # Installing a handler on the root logger would silence logging's "last resort" (warnings
        # printed to stderr when no handler is configured): keep it, on the real stderr.
        last = logging.lastResort
        if last is None or record.levelno < last.level:
            return
        node: logging.Logger | None = logging.getLogger(record.name)
        while node is not None:
            if any(h is not self for h in node.handlers):
                return
            node = node.parent if node.propagate else None
        stream = sys.stderr
        stream = stream._original if isinstance(stream, _StreamRouter) else stream
        try:
            stream.write(last.format(record) + "\n")
        except Exception:  # noqa: BLE001 - as logging does: a broken stderr never breaks the step
            self.handleError(record)


class _StreamRouter:
    """``sys.stdout``/``sys.stderr`` while FlowStone captures: writes made inside a step go to its
    capture (and with ``echo`` to the original stream), every other write to the original."""

    def __init__(self, name: str, original: IO[str]) -> None:
        self._name = name
        self._original = original

    def write(self, text: str) -> int:
        capture = _current.get()
        if capture is None or not capture.settings.capture_output:
            return self._original.write(text)
        capture.write(self._name, text)
        if capture.settings.echo:
            self._original.write(text)
        return len(text)

    def writelines(self, lines: list[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self._original.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._original, name)


_handler = _CaptureHandler()


_active = 0
"""Captures running in this process: the handler is on the root logger only while there are any,
so that between steps logging is exactly as configured (``logging.basicConfig`` does nothing once
the root logger has a handler)."""


def _enter(settings: StepLogSettings) -> None:
    """A capture starts: install the handler (first one) and the stream routers."""
    global _active  # noqa: PLW0603 - a process-wide count, under the lock
    with _install_lock:
        _active += 1
        if _active == 1:
            logging.getLogger().addHandler(_handler)
            assets = logging.getLogger(ASSET_LOGGERS)
            if assets.level == logging.NOTSET:
                # context.log.info(...) must reach the handler even when nothing configured logging
                # (the root logger's default level is WARNING).
                assets.setLevel(settings.level)
        # The routers stay (they pass through outside steps); someone (a test runner) may have
        # replaced the streams since the last step: wrap the current ones.
        if not isinstance(sys.stdout, _StreamRouter):
            sys.stdout = cast(IO[str], _StreamRouter("stdout", sys.stdout))
        if not isinstance(sys.stderr, _StreamRouter):
            sys.stderr = cast(IO[str], _StreamRouter("stderr", sys.stderr))


def _leave() -> None:
    """A capture ended: remove the handler after the last one."""
    global _active  # noqa: PLW0603 - a process-wide count, under the lock
    with _install_lock:
        _active -= 1
        if _active == 0:
            logging.getLogger().removeHandler(_handler)


@contextmanager
def capturing(
    materialization_id: int, attempt: int, settings: StepLogSettings, sink: store_base.StepLogs
) -> Iterator[StepCapture]:
    """Capture the block's logging and output as the lines of one attempt, flushed to ``sink`` at
    least every second meanwhile. The caller takes the last lines with :meth:`StepCapture.close`
    after the block."""
    capture = StepCapture(materialization_id, attempt, settings)
    if not settings.enabled:
        yield capture
        return
    _enter(settings)
    token = _current.set(capture)
    try:
        sink.track(capture)
        yield capture
    finally:
        _current.reset(token)
        _leave()
        sink.untrack(capture)
