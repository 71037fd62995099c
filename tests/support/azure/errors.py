"""Error answers of the local Azure server, shaped as Graph and ARM shape theirs."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An answer other than success: status, JSON body, extra headers."""

    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers or {}


def graph_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> ApiError:
    return ApiError(status, {"error": {"code": code, "message": message, "innerError": {}}}, headers)


def arm_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> ApiError:
    return ApiError(status, {"error": {"code": code, "message": message}}, headers)
