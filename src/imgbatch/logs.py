"""Logging setup: human-readable text by default, one JSON object per line with `IMGBATCH_LOG_FORMAT=json`."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from datetime import UTC, datetime
from types import TracebackType

_CONTEXT_FIELDS = ("request_id", "image_id", "delivery_id", "event_id")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": record.process,
        }
        for field in _CONTEXT_FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                entry[field] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = [f"{f}={getattr(record, f)}" for f in _CONTEXT_FIELDS if getattr(record, f, None)]
        return f"{line} [{' '.join(ids)}]" if ids else line


def setup_logging(fmt: str = "text", level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("huey", "alembic", "botocore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if fmt == "json":
        # Warnings and uncaught exceptions go through the handler too, so that every line
        # on stderr stays one JSON object (a text traceback would break log shippers).
        logging.captureWarnings(True)
        sys.excepthook = _log_uncaught
        threading.excepthook = lambda args: _log_uncaught(
            args.exc_type,
            args.exc_value,  # type: ignore[arg-type]
            args.exc_traceback,
        )


def _log_uncaught(
    exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> None:
    if issubclass(exc_type, KeyboardInterrupt):
        sys.__excepthook__(exc_type, exc, tb)
        return
    logging.getLogger("imgbatch").critical("uncaught exception", exc_info=(exc_type, exc, tb))


class OutageLog:
    """Log a backend's outage once when it starts, now and then while it lasts, once at its end.

    A worker meets a down backend on every try; a line per try flooded the logs (thousands
    of tracebacks per worker for a ten-second Redis outage). `down` logs a WARNING the
    first time, then at most once every `every` seconds with the count of faults since;
    `up` logs once that the backend is back and how long it was away.
    """

    def __init__(self, logger: logging.Logger, backend: str, every: float = 60.0) -> None:
        self.logger = logger
        self.backend = backend
        self.every = every
        self.since: float | None = None  # monotonic start of the current outage
        self._last_line = 0.0
        self._faults = 0
        self._lock = threading.Lock()

    @property
    def is_down(self) -> bool:
        return self.since is not None

    def down(self, error: object, action: str = "retrying with back-off") -> bool:
        """Note a fault; True when it was logged (the first of an outage, or a reminder)."""

        now = time.monotonic()
        with self._lock:
            self._faults += 1
            if self.since is None:
                self.since, self._last_line, self._faults = now, now, 0
                self.logger.warning("%s unavailable: %s; %s", self.backend, error, action)
                return True
            if now - self._last_line < self.every:
                return False
            faults, self._faults, self._last_line = self._faults, 0, now
            self.logger.warning(
                "%s still unavailable after %.0f s (%d more faults): %s",
                self.backend,
                now - self.since,
                faults,
                error,
            )
            return True

    def up(self) -> float | None:
        """Note a success; the outage's length in seconds when this ended one (logged once)."""

        if self.since is None:  # the common case: no lock, no work
            return None
        with self._lock:
            if self.since is None:
                return None
            lasted = time.monotonic() - self.since
            self.since = None
            self.logger.warning("%s available again after %.1f s", self.backend, lasted)
            return lasted
