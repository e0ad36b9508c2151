"""How every process logs: readable text on a terminal, JSON lines for machines.

``configure_logging`` is called once by each entry point (`recsys serve`, `recsys api`,
the dataflow, publish, the dev broker). The ``log_json`` setting decides the format; left
unset, a terminal gets text and anything else (a container, CI, a file, a log shipper)
gets one JSON object per line.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from typing import IO, Any, TextIO

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
"""The id of the HTTP request being served, set by the API's middleware."""
CLIENT_REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "client_request_id", default=None
)
"""The id the client sent in X-Request-ID, if any."""

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC), level, logger, message, the current request
    id (and the client's, if it sent one), and any ``extra={"fields": {...}}``."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = REQUEST_ID.get()
        if rid is not None:
            out["request_id"] = rid
            client = CLIENT_REQUEST_ID.get()
            if client is not None:
                out["client_request_id"] = client
        fields = getattr(record, "fields", None)
        if fields:
            out.update(fields)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message``, then any ``extra={"fields": {...}}`` as key=value."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = getattr(record, "fields", None)
        if fields:
            extra = " ".join(f"{k}={v}" for k, v in fields.items())
            head, sep, rest = line.partition("\n")  # keep a traceback below the fields
            line = f"{head} {extra}{sep}{rest}"
        return line


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever ``sys.stderr`` is at the time of each record (not the stream
    it was at set-up, which a caller may have replaced and closed since)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)

    def flush(self) -> None:
        self.stream = sys.stderr
        super().flush()


def is_terminal(stream: IO[str] | None) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def wants_json(log_json: bool | None, stream: IO[str] | None = None) -> bool:
    """``log_json`` if set, else JSON unless ``stream`` (default: stderr) is a terminal."""
    if log_json is not None:
        return log_json
    return not is_terminal(sys.stderr if stream is None else stream)


QUIET_LOGGERS = ("httpx", "httpcore")
"""HTTP client libraries that log every request at INFO: warnings only, so a CLI command
or the service's own calls do not print a line per request."""


def configure_logging(
    log_json: bool | None, level: int = logging.INFO, stream: IO[str] | None = None
) -> None:
    """Send the root logger's records to ``stream`` (default: stderr, as it is at each
    record), as JSON lines or text (``wants_json``), replacing any handler set before."""
    handler = _StderrHandler() if stream is None else logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if wants_json(log_json, stream) else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for chatty in QUIET_LOGGERS:
        logging.getLogger(chatty).setLevel(max(level, logging.WARNING))
