"""The HTTP access log without credentials: query values of sensitive parameters are replaced, and neither
the Authorization header nor cookies nor the Referer (which may carry a URL with a token) are written."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

SENSITIVE_PARAMETERS = frozenset({"token", "access_token", "password", "session", "sessionid", "csrf", "secret"})
REDACTED = "[redacted]"


def redacted_target(path: str, query_string: str) -> str:
    """The request target as logged: ``/api/v1/ws?token=[redacted]``."""
    if not query_string:
        return path
    pairs = parse_qsl(query_string, keep_blank_values=True)
    safe = [(k, REDACTED if k.lower() in SENSITIVE_PARAMETERS else v) for k, v in pairs]
    return f"{path}?{urlencode(safe, safe='[]/:,')}"


class RedactingAccessLogger(AbstractAccessLogger):
    """``web.run_app(..., access_log_class=RedactingAccessLogger)``: one line per request."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        version = request.version
        self.logger.info(
            '%s "%s %s HTTP/%d.%d" %d %d %.1fms "%s"',
            request.remote or "-",
            request.method,
            redacted_target(request.path, request.query_string),
            version.major,
            version.minor,
            response.status,
            response.body_length,
            time * 1000,
            request.headers.get("User-Agent", "-"),
        )
