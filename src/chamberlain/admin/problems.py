"""Every error of the admin API as an RFC 9457 problem document (`application/problem+json`).

Handlers raise `ProblemError`; FastAPI's own errors (request validation, unknown paths, wrong methods) and anything
unexpected are turned into problems here too, so a client parses one error format and never sees a stack trace.
Problem `type`s other than "about:blank" are URNs under urn:chamberlain:problem: (RFC 9457 §3.1.1 allows a
non-resolvable URI; §4.2 "about:blank" means the status code says it all).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chamberlain.store.errors import RETRY_AFTER_SECONDS, store_unavailable

logger = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"  # RFC 9457 §3
PROBLEM_TYPE_PREFIX = "urn:chamberlain:problem:"


class FieldProblem(BaseModel):
    """One invalid input: where it is and what is wrong with it (never the value, which may be a secret)."""

    model_config = ConfigDict(extra="forbid")

    location: str = Field(description='"body", "query", "path" or "header"')
    pointer: str = Field(description="JSON Pointer (RFC 6901) to the value inside its location, or the parameter name")
    message: str


class Problem(BaseModel):
    """RFC 9457 §3.1's members, plus `errors` for invalid input. Other extension members may appear (§3.2)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field("about:blank", description="a URI naming the kind of problem (RFC 9457 §3.1.1)")
    title: str = Field(description="a short summary of the kind of problem")
    status: int = Field(ge=400, le=599, description="the HTTP status code")
    detail: str | None = Field(None, description="what went wrong with this request")
    instance: str | None = None
    errors: list[FieldProblem] | None = None


class ProblemError(Exception):
    """Raised by handlers; becomes a problem response."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        kind: str | None = None,
        title: str | None = None,
        headers: Mapping[str, str] | None = None,
        extensions: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.kind = kind
        self.title = title
        self.headers = dict(headers or {})
        self.extensions = dict(extensions or {})


def problem_body(
    status: int,
    detail: str | None = None,
    *,
    kind: str | None = None,
    title: str | None = None,
    errors: Sequence[FieldProblem] | None = None,
    extensions: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_PREFIX + kind if kind else "about:blank",
        # §4.2.1: with "about:blank" the title is the status code's reason phrase.
        "title": title or _phrase(status),
        "status": status,
    }
    if detail:
        body["detail"] = detail
    if errors:
        body["errors"] = [error.model_dump() for error in errors]
    for key, value in (extensions or {}).items():
        body.setdefault(key, value)
    return body


def problem_response(
    status: int,
    detail: str | None = None,
    *,
    kind: str | None = None,
    title: str | None = None,
    headers: Mapping[str, str] | None = None,
    errors: Sequence[FieldProblem] | None = None,
    extensions: Mapping[str, Any] | None = None,
) -> Response:
    return JSONResponse(
        problem_body(status, detail, kind=kind, title=title, errors=errors, extensions=extensions),
        status_code=status,
        headers=dict(headers or {}),
        media_type=PROBLEM_MEDIA_TYPE,
    )


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


# -- FastAPI's errors -----------------------------------------------------------------------------------------------


async def _problem_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProblemError)
    return problem_response(
        exc.status, exc.detail, kind=exc.kind, title=exc.title, headers=exc.headers, extensions=exc.extensions
    )


_FASTAPI_BODY_ERROR = "There was an error parsing the body"


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    if status == 400 and exc.detail == _FASTAPI_BODY_ERROR:
        # A body FastAPI could not even decode (not UTF-8, say): the same answer as one that is not JSON.
        error = FieldProblem(location="body", pointer="", message="the body is not valid JSON")
        return problem_response(422, "the request is not valid", kind="invalid-request", errors=[error])
    # Starlette's details are its own fixed strings ("Not Found", "Method Not Allowed"), or ours (tenant_of).
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail != _phrase(status) else None
    if status == 404 and detail is None:
        detail = "there is no such resource here"
    headers = dict(exc.headers or {})
    if status == 405 and "allow" in {name.lower() for name in headers}:
        detail = f"allowed methods: {next(value for name, value in headers.items() if name.lower() == 'allow')}"
    return problem_response(status, detail, headers=headers)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [field_problem(error) for error in exc.errors()]
    return problem_response(422, "the request is not valid", kind="invalid-request", errors=errors)


def invalid_body_field(pointer: str, message: str) -> ProblemError:
    """A 422 for one member of the body that validated but cannot be accepted (a weak password, a role that is not
    administrative), in the same shape as validation errors."""
    return ProblemError(
        422,
        "the request is not valid",
        kind="invalid-request",
        extensions={"errors": [FieldProblem(location="body", pointer=pointer, message=message).model_dump()]},
    )


def field_problem(error: Mapping[str, Any]) -> FieldProblem:
    """One of pydantic's errors without its `input` (which may be a password) and without pydantic's prefixes."""
    location = [str(part) for part in error.get("loc", ())]
    where = location[0] if location and location[0] in ("body", "query", "path", "header", "cookie") else "body"
    inside = location[1:] if location and location[0] == where else location
    if where == "body":
        pointer = "/" + "/".join(part.replace("~", "~0").replace("/", "~1") for part in inside) if inside else ""
    else:
        pointer = inside[0] if inside else ""
    kind = error.get("type", "")
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    if kind == "extra_forbidden":
        message = "unknown member"
    elif kind == "missing":
        message = "required"
    elif kind == "json_invalid":
        message = "the body is not valid JSON"
        pointer = ""  # FastAPI's location is a character offset, not a member
    return FieldProblem(location=where, pointer=pointer, message=message)


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ProblemError, _problem_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)


class ErrorContainment:
    """The outermost layer of the admin API: an exception nothing handled becomes a 500 problem here, logged for
    the operator, and goes no further (Starlette's own error middleware would re-raise it into the host app,
    which would try to answer a second time)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as problem:
            if started:
                logger.exception("error in the admin API after its answer began on %s", scope.get("path"))
            elif store_unavailable(problem):
                # Fail closed and say so: 503 with Retry-After, and the pool reconnects when the store returns.
                logger.debug("store unavailable: admin API %s (%s)", scope.get("path"), type(problem).__name__)
                retry = {"Retry-After": str(RETRY_AFTER_SECONDS)}
                unavailable = problem_response(
                    503, "the store is temporarily unavailable", kind="unavailable", headers=retry
                )
                await unavailable(scope, receive, send)
            else:
                logger.exception("unhandled error in the admin API on %s %s", scope.get("method"), scope.get("path"))
                await problem_response(500, "internal error", kind="internal-error")(scope, receive, send)
