"""SCIM errors (RFC 7644 §3.12): a JSON body with the error schema, the HTTP status as a string, and for 400 a
`scimType` keyword saying what was wrong."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from starlette.responses import Response

ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"
MEDIA_TYPE = "application/scim+json"  # RFC 7644 §3.1

# RFC 7644 §3.12 Table 9.
INVALID_FILTER = "invalidFilter"
UNIQUENESS = "uniqueness"
INVALID_SYNTAX = "invalidSyntax"
INVALID_PATH = "invalidPath"
NO_TARGET = "noTarget"
INVALID_VALUE = "invalidValue"


class ScimError(Exception):
    def __init__(
        self, status: int, detail: str, scim_type: str | None = None, *, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.scim_type = scim_type
        self.headers = dict(headers or {})

    def to_response(self) -> Response:
        body: dict[str, Any] = {"schemas": [ERROR_SCHEMA], "status": str(self.status), "detail": self.detail}
        if self.scim_type is not None:
            body["scimType"] = self.scim_type
        return scim_response(body, self.status, self.headers)


def invalid(detail: str, scim_type: str = INVALID_VALUE) -> ScimError:
    return ScimError(400, detail, scim_type)


def scim_response(body: Mapping[str, Any], status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body, ensure_ascii=False, separators=(",", ":")),
        status_code=status,
        media_type=MEDIA_TYPE,
        headers={"Cache-Control": "no-store", **(headers or {})},
    )
