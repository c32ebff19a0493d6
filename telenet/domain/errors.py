"""The one error family of telenet; each protocol maps it to its own wire form in one place."""

from __future__ import annotations

from typing import Any


class TelenetError(Exception):
    """Base of every error a use case raises on purpose.

    ``code`` is a stable, machine-readable slug (it becomes the problem ``type`` on HTTP);
    ``details`` carries structured context such as a list of validation errors.
    """

    code = "error"
    status = 500

    def __init__(self, message: str, *, code: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details


class Invalid(TelenetError):
    """The input breaks a rule (schema, registry rule, missing consent, no route)."""

    code = "invalid"
    status = 422


class NotFound(TelenetError):
    code = "not-found"
    status = 404


class Forbidden(TelenetError):
    """The actor is authenticated but the object or action is outside its role or scope."""

    code = "forbidden"
    status = 403


class Unauthorized(TelenetError):
    code = "unauthorized"
    status = 401


class Conflict(TelenetError):
    """The object exists but its current state does not allow the action (illegal transition, race)."""

    code = "conflict"
    status = 409


class TooManyRequests(TelenetError):
    """The caller must slow down (login limiter, locked account); ``retry_after`` seconds until it may retry."""

    code = "too-many-requests"
    status = 429

    def __init__(self, message: str, *, retry_after: int, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = max(1, int(retry_after))


class Overloaded(TelenetError):
    """The hub cannot take this now (its queues are full) and did nothing; the caller may retry after
    ``retry_after`` seconds (503 with Retry-After)."""

    code = "overloaded"
    status = 503

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = max(1, int(retry_after))


class UnsupportedMediaType(TelenetError):
    """The body is not in a media type the endpoint reads."""

    code = "unsupported-media-type"
    status = 415


class PayloadTooLarge(TelenetError):
    code = "payload-too-large"
    status = 413
