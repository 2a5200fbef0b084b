"""Errors the server answers with, as OpenAI's API writes them: ``{"error": {"message", "type", "param", "code"}}``.

A client's mistake is a 4xx with a one-line message naming the field; the server's own failure is a 5xx whose
message never carries a traceback (that goes to the server's log).
"""

from __future__ import annotations

from starlette.responses import JSONResponse

INVALID = "invalid_request_error"


class APIError(Exception):
    """An error response: ``status``, a one-line ``message``, OpenAI's ``type``, the ``param`` at fault, a ``code``,
    and extra headers (Retry-After)."""

    def __init__(self, status: int, message: str, type: str = INVALID, param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def server_error(message: str) -> APIError:
    """A 500 for the server's (or the model's) failure, never the client's."""
    return APIError(500, message, type="server_error", code="internal_error")
