"""The admin API's error format (RFC 9457) without a server: handlers' problems, FastAPI's own errors, unexpected
exceptions (a 500 problem, never a trace), the OpenAPI document's error responses, and page tokens."""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, SecretStr

from chamberlain.admin.api import create_admin_api
from chamberlain.admin.common import decode_position, encode_position
from chamberlain.admin.problems import (
    PROBLEM_MEDIA_TYPE,
    ErrorContainment,
    ProblemError,
    field_problem,
    install_problem_handlers,
    problem_body,
)
from chamberlain.gateway.server_config import VAULT_REFERENCE_FORMAT

SECRET = "hunter2-but-longer"


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    password: SecretStr
    count: int = 0


def small_app() -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)

    @app.post("/things")
    async def create(body: Body) -> dict[str, str]:
        return {"name": body.name}

    @app.get("/conflict")
    async def conflict() -> None:
        raise ProblemError(409, "it exists", kind="already-exists", title="Already exists", extensions={"id": "x"})

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError(f"database password is {SECRET}")

    app.add_middleware(ErrorContainment)
    return app


@pytest.fixture
async def client() -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=small_app(), raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


def problem(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    body: dict[str, object] = response.json()
    assert body["status"] == status
    return body


async def test_a_handlers_problem_keeps_its_type_title_and_extensions(client: httpx.AsyncClient) -> None:
    body = problem(await client.get("/conflict"), 409)
    assert body == {
        "type": "urn:chamberlain:problem:already-exists",
        "title": "Already exists",
        "status": 409,
        "detail": "it exists",
        "id": "x",
    }


async def test_validation_errors_name_each_member_and_never_echo_values(client: httpx.AsyncClient) -> None:
    response = await client.post("/things", json={"name": 5, "password": 12345678, "extra": SECRET})
    body = problem(response, 422)
    assert body["type"] == "urn:chamberlain:problem:invalid-request"
    errors = {error["pointer"]: error["message"] for error in body["errors"]}  # type: ignore[attr-defined]
    assert errors["/extra"] == "unknown member"
    assert "/name" in errors
    assert "/password" in errors
    assert SECRET not in response.text
    assert "12345678" not in response.text
    assert "input" not in response.text


async def test_a_body_that_is_not_json_or_not_utf8_is_one_422(client: httpx.AsyncClient) -> None:
    for content in (b"{", b"\xff\xfe\xfa"):
        response = await client.post("/things", content=content, headers={"content-type": "application/json"})
        body = problem(response, 422)
        assert body["errors"] == [{"location": "body", "pointer": "", "message": "the body is not valid JSON"}]


async def test_unknown_paths_and_methods_are_problems(client: httpx.AsyncClient) -> None:
    assert problem(await client.get("/nowhere"), 404)["title"] == "Not Found"
    response = await client.delete("/things")
    body = problem(response, 405)
    assert response.headers["allow"] == "POST"
    assert body["detail"] == "allowed methods: POST"


async def test_an_unexpected_error_is_a_500_problem_without_its_message(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        response = await client.get("/boom")
    body = problem(response, 500)
    assert body["detail"] == "internal error"
    assert SECRET not in response.text
    assert "Traceback" not in response.text
    assert "unhandled error in the admin API on GET /boom" in caplog.text  # the operator still learns of it


async def test_an_error_after_the_answer_started_is_not_answered_twice() -> None:
    sent: list[dict[str, object]] = []

    async def half_answer(scope: object, receive: object, send: object) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]
        raise RuntimeError("stream broke")

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    await ErrorContainment(half_answer)({"type": "http", "method": "GET", "path": "/"}, receive, send)
    assert [message["type"] for message in sent] == ["http.response.start"]


def test_about_blank_problems_use_the_status_phrase() -> None:
    # RFC 9457 §4.2.1
    assert problem_body(404) == {"type": "about:blank", "title": "Not Found", "status": 404}
    assert problem_body(599, "odd")["title"] == "Error"


def test_pointers_are_json_pointers() -> None:
    # RFC 6901 §3: '~' is written '~0' and '/' is written '~1'.
    error = field_problem({"loc": ("body", "groups", "a/b~c", 0), "msg": "Value error, bad", "type": "value_error"})
    assert error.location == "body"
    assert error.pointer == "/groups/a~1b~0c/0"
    assert error.message == "bad"
    query = field_problem({"loc": ("query", "page_size"), "msg": "too big", "type": "less_than_equal"})
    assert (query.location, query.pointer) == ("query", "page_size")


def test_every_operation_declares_problem_documents_and_a_security_scheme() -> None:
    document = create_admin_api().openapi()
    assert "HTTPValidationError" not in document["components"]["schemas"]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert {"401", "403", "404", "422"} <= set(responses), (method, path)
            assert operation["security"] == [{"HTTPBearer": []}], (method, path)
            for status, response in responses.items():
                if status.startswith(("4", "5")):
                    assert set(response["content"]) == {PROBLEM_MEDIA_TYPE}, (method, path, status)
                    assert response["content"][PROBLEM_MEDIA_TYPE]["schema"] == {"$ref": "#/components/schemas/Problem"}
            # operationIds are the handlers' names
            assert operation["operationId"].replace("_", "").isalpha()


def test_write_only_secrets_are_never_in_a_response_schema() -> None:
    document = create_admin_api().openapi()
    schemas = document["components"]["schemas"]
    secret_names = {"password", "value", "client_secret"}
    response_refs: set[str] = set()
    for operations in document["paths"].values():
        for operation in operations.values():
            for response in operation["responses"].values():
                for content in response.get("content", {}).values():
                    response_refs.add(content["schema"].get("$ref", ""))
    reachable = _reachable(schemas, {ref.rsplit("/", 1)[-1] for ref in response_refs if ref})
    for name in reachable:
        properties = schemas[name].get("properties", {})
        # A vault reference ("SOURCE/NAME", marked with its format) names a secret without holding it.
        holding = {field for field, schema in properties.items() if not _is_vault_reference(schema)}
        assert not secret_names & holding, name


def _is_vault_reference(schema: dict[str, Any]) -> bool:
    variants = [schema, *schema.get("anyOf", [])]
    return any(variant.get("format") == VAULT_REFERENCE_FORMAT for variant in variants)


def _reachable(schemas: dict[str, dict[str, object]], names: set[str]) -> set[str]:
    seen: set[str] = set()
    while names:
        name = names.pop()
        if name in seen:
            continue
        seen.add(name)
        text = json.dumps(schemas[name])
        names |= {part.split('"')[0] for part in text.split("#/components/schemas/")[1:]}
    return seen


@pytest.mark.parametrize("position", ["", "alice", "ünïcödé", "a/b", 0, 1, 2**31 - 1])
def test_page_tokens_round_trip(position: str | int) -> None:
    token = encode_position(position)
    assert token.replace("-", "").replace("_", "").isalnum()
    assert decode_position(token, type(position)) == position


@pytest.mark.parametrize(
    ("token", "kind"),
    [
        ("not base64!", str),
        (encode_position("alice"), int),  # a token of another list
        (encode_position(5), str),
        (encode_position(2**31), int),  # beyond an INTEGER key
        (encode_position(-1), int),
        (encode_position("nul\x00"), str),  # PostgreSQL refuses NUL in text
        ("WyJcdWQ4MDAiXQ", str),  # ["\ud800"]: a lone surrogate
        ("dHJ1ZQ", int),  # true
        ("W3RydWVd", int),  # [true]: a bool is not an int here
    ],
)
def test_foreign_page_tokens_are_refused(token: str, kind: type[str] | type[int]) -> None:
    with pytest.raises(ProblemError) as refused:
        decode_position(token, kind)
    assert refused.value.status == 400
