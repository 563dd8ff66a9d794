"""Schemathesis against the running admin API's own OpenAPI document (issue 5, acceptance 5): for every operation,
generated requests (valid and invalid ones) as a platform administrator get no 5xx, and every answer conforms to
the document: a declared status code, a declared content type, a body matching the declared schema (problem
documents included).

The examples per operation are bounded so the whole run stays well under a minute on two cores; the server is this
module's own (the fuzzer creates tenants, replaces roles and quotas, deletes what it finds).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from chamberlain.admin.api import create_admin_api
from chamberlain.store.users import UserRepository
from tests.support.server import RunningServer, running_server

EXAMPLES_PER_OPERATION = 15  # per generation mode (valid and invalid requests)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    data_dir: Path = tmp_path_factory.mktemp("admin-fuzz")
    with running_server(data_dir) as running:
        yield running


@pytest.fixture(scope="module")
def admin_headers(fuzzed: RunningServer) -> dict[str, str]:
    async def admin_id() -> str:
        async with fuzzed.engine() as database:
            admin = await UserRepository(database, fuzzed.settings.tenant).get_by_username("admin")
        assert admin is not None
        return admin.id

    tenant = fuzzed.state.default_tenant
    token = tenant.token_issuer.issue(
        subject=asyncio.run(admin_id()),
        client_id="schemathesis",
        audience=tenant.admin_resource,
        scopes=frozenset(),
        tenant=tenant.id,
        grant_id=None,
        auth_time=None,
    ).token
    return {"Authorization": f"Bearer {token}"}


def _operations() -> list[Any]:
    # The document as the application builds it (the served one is compared with it below): known at collection,
    # so each operation is a test of its own.
    document = create_admin_api().openapi()
    return [result.ok() for result in schemathesis.openapi.from_dict(document).get_all_operations()]


OPERATIONS = _operations()


async def test_the_served_document_is_the_one_fuzzed(fuzzed: RunningServer) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        served = (await http.get(f"{fuzzed.base_url}/admin/api/openapi.json")).json()
    assert served.pop("servers") == [{"url": "/admin/api"}]
    assert served == create_admin_api().openapi()


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda operation: operation.label)
def test_the_admin_api_keeps_to_its_openapi_document(
    operation: Any, fuzzed: RunningServer, admin_headers: dict[str, str]
) -> None:
    base_url = f"{fuzzed.base_url}/admin/api"
    session = requests.Session()  # one keep-alive connection rather than one per request
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,  # the same requests every run: a failure is reproducible, not a flake
            database=None,
            phases=[Phase.explicit, Phase.generate],  # no shrinking: the failing request is printed as it was
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            case.call_and_validate(base_url=base_url, session=session, headers=admin_headers, checks=CHECKS)

        run()
    session.close()
