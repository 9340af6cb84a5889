"""Logging set-up shared by every Ferry entrypoint: plain text or one JSON object per line, with the request id.

Every line is redacted on its way out: credentials inside URLs (``user:password@``, signed-URL query values) never
reach the log, whichever library wrote them (storage URIs appear in kserve's, boto's and mlflow's messages)."""

from __future__ import annotations

import json
import logging
import re
import sys

from ferry.context import RequestIdFilter

_URL_USERINFO = re.compile(r"(\b[a-zA-Z][\w+.-]*://)[^/@\s'\"]+@")
_SECRET_QUERY = re.compile(
    r"(?i)([?&](?:x-amz-signature|x-amz-credential|x-amz-security-token|x-goog-signature|x-goog-credential"
    r"|sig|signature|token|access_token|api_key|apikey|password|secret)=)[^&\s'\"]*"
)


def redact(text: str) -> str:
    """``text`` with the credentials in any URL inside it replaced by ``***``."""
    return _SECRET_QUERY.sub(r"\1***", _URL_USERINFO.sub(r"\1***@", text))


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(self._entry(record))

    def _entry(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
