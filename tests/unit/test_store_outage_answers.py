"""A store outage is answered 503 with Retry-After in each surface's own format, never 500 or a trace; anything
else stays an error (tests/integration/test_faults.py stops a real PostgreSQL under a gateway)."""

from __future__ import annotations

import json

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import exc as sa
from starlette.requests import Request

from chamberlain.admin.problems import PROBLEM_MEDIA_TYPE, ErrorContainment, install_problem_handlers
from chamberlain.app import _store_error, _store_outage, _unexpected_error
from chamberlain.gateway.jsonrpc import STORE_UNAVAILABLE
from chamberlain.scim.app import _unexpected_error as scim_unexpected_error
from chamberlain.store.errors import RETRY_AFTER_SECONDS

REFUSED = ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)")


def request(path: str) -> Request:
    return Request({"type": "http", "method": "POST", "path": path, "headers": [], "query_string": b""})


def body(response: object) -> dict[str, object]:
    document = json.loads(response.body)  # type: ignore[attr-defined]
    assert isinstance(document, dict)
    return document


@pytest.mark.parametrize("path", ["/token", "/t/acme/token", "/revoke", "/introspect", "/register"])
def test_oauth_endpoints_answer_temporarily_unavailable(path: str) -> None:
    response = _store_outage(request(path), REFUSED)
    assert response.status_code == 503
    assert response.headers["retry-after"] == str(RETRY_AFTER_SECONDS)
    assert response.headers["cache-control"] == "no-store"
    assert body(response)["error"] == "temporarily_unavailable"


@pytest.mark.parametrize("path", ["/authorize", "/login", "/t/acme/login/sso", "/console/users", "/connect/github"])
def test_pages_for_people_answer_a_page(path: str) -> None:
    response = _store_outage(request(path), REFUSED)
    assert response.status_code == 503
    assert response.headers["retry-after"] == str(RETRY_AFTER_SECONDS)
    assert response.media_type == "text/html"
    assert b"Temporarily unavailable" in response.body
    assert b"5432" not in response.body


@pytest.mark.parametrize("path", ["/mcp/demo", "/t/acme/mcp/files"])
def test_mcp_answers_a_json_rpc_error(path: str) -> None:
    response = _store_outage(request(path), REFUSED)
    assert response.status_code == 503
    assert response.headers["retry-after"] == str(RETRY_AFTER_SECONDS)
    document = body(response)
    assert document["jsonrpc"] == "2.0"
    assert document["id"] is None
    assert document["error"]["code"] == STORE_UNAVAILABLE  # type: ignore[index]


@pytest.mark.parametrize("path", ["/v1/messages", "/t/acme/v1/messages/count_tokens"])
def test_the_llm_api_answers_in_anthropics_format(path: str) -> None:
    response = _store_outage(request(path), REFUSED)
    assert response.status_code == 503
    assert response.headers["retry-after"] == str(RETRY_AFTER_SECONDS)
    assert response.headers["x-should-retry"] == "true"
    document = body(response)
    assert document["type"] == "error"
    assert document["error"]["type"] == "overloaded_error"  # type: ignore[index]


def test_an_admin_path_the_mount_did_not_take_answers_a_problem() -> None:
    response = _store_outage(request("/admin/api/users"), REFUSED)
    assert response.status_code == 503
    assert response.media_type == PROBLEM_MEDIA_TYPE
    assert body(response)["type"] == "urn:chamberlain:problem:unavailable"


async def test_other_errors_of_the_same_types_stay_errors() -> None:
    problem = sa.IntegrityError("INSERT", None, Exception("duplicate key"))  # type: ignore[arg-type]
    with pytest.raises(sa.IntegrityError):
        await _store_error(request("/token"), problem)
    answer = await _unexpected_error(request("/token"), problem)
    assert answer.status_code == 500
    assert await _unexpected_error(request("/token"), REFUSED) is not None
    assert (await _unexpected_error(request("/token"), REFUSED)).status_code == 503


def admin_app(error: Exception) -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/users")
    async def users() -> None:
        raise error

    app.add_middleware(ErrorContainment)  # as admin/api.py does: the outermost of the admin API's own layers
    return app


@pytest.mark.parametrize(
    ("error", "status", "kind"),
    [
        (REFUSED, 503, "urn:chamberlain:problem:unavailable"),
        (sa.OperationalError("SELECT", None, Exception("server closed the connection")), 503, None),
        (RuntimeError("a bug"), 500, "urn:chamberlain:problem:internal-error"),
    ],
)
async def test_the_admin_api_answers_a_problem(error: Exception, status: int, kind: str | None) -> None:
    transport = httpx.ASGITransport(app=admin_app(error))
    async with httpx.AsyncClient(transport=transport, base_url="http://admin.test") as http:
        response = await http.get("/users")
    assert response.status_code == status
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    if status == 503:
        assert response.headers["retry-after"] == str(RETRY_AFTER_SECONDS)
        assert response.json()["type"] == "urn:chamberlain:problem:unavailable"
    else:
        assert response.json()["type"] == kind
    assert "5432" not in response.text


@pytest.mark.parametrize(("error", "status"), [(REFUSED, 503), (RuntimeError("a bug"), 500)])
async def test_scim_answers_a_scim_error(error: Exception, status: int) -> None:
    # SCIM is a mounted application with its own error handling: still RFC 7644 §3.12 errors, never plain text.
    response = await scim_unexpected_error(request("/scim/v2/Users"), error)
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/scim+json")
    assert body(response)["status"] == str(status)
    assert ("retry-after" in response.headers) == (status == 503)
    assert b"5432" not in bytes(response.body)
