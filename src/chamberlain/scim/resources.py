"""What the Users and Groups endpoints share: request bodies, listings with filters and paging, attribute
projection, and versions (ETags)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeVar

from starlette.requests import Request
from starlette.responses import Response

from chamberlain.scim.errors import INVALID_SYNTAX, INVALID_VALUE, ScimError, invalid, scim_response
from chamberlain.scim.filters import lookup, matches, parse_filter
from chamberlain.scim.patch import apply_patch
from chamberlain.scim.schema import MAX_RESULTS, list_response
from chamberlain.scim.service import Provisioning

MAX_BODY = 256 * 1024  # bytes; a user or a group is a few hundred
MAX_DEPTH = 16  # levels of JSON nesting: a PatchOp holding an enterprise user's manager is 5
ALWAYS_RETURNED = frozenset({"id", "schemas"})  # RFC 7643 §7 "returned": "always"


class _Versioned(Protocol):
    @property
    def version(self) -> int: ...


Row = TypeVar("Row", bound=_Versioned)
Stated = TypeVar("Stated")


@dataclass(frozen=True)
class ResourceKind(Generic[Row, Stated]):
    """What /Users and /Groups do alike (RFC 7644 §3.4.1, §3.4.2, §3.5.1, §3.5.2): list, read, replace and patch;
    each kind says how it is stored, shown, stated by a request and updated."""

    rows: Callable[[Provisioning], Awaitable[list[Row]]]
    find: Callable[[Provisioning, str], Awaitable[Row | None]]
    missing: str  # the 404's detail
    represent: Callable[[Provisioning, Row], dict[str, Any]]
    state: Callable[[Any], Stated]  # validates a request's resource
    update: Callable[[Provisioning, Row, Stated], Awaitable[Response]]
    extension_schemas: frozenset[str]

    async def existing(self, provisioning: Provisioning, resource_id: str) -> Row:
        row = await self.find(provisioning, resource_id)
        if row is None:
            raise ScimError(404, self.missing)
        return row

    async def to_change(self, provisioning: Provisioning, request: Request) -> Row:
        """The stored resource the request names, when it is the version If-Match asks for."""
        row = await self.existing(provisioning, resource_id(request))
        check_version(request, row.version)
        return row

    async def response(self, provisioning: Provisioning, resource_id: str, status: int = 200) -> Response:
        """The resource as now stored, after a change."""
        return resource_response(self.represent(provisioning, await self.existing(provisioning, resource_id)), status)

    async def list_all(self, provisioning: Provisioning, request: Request) -> Response:
        rows = await self.rows(provisioning)
        return listing(request, [self.represent(provisioning, row) for row in rows])

    async def get(self, provisioning: Provisioning, request: Request) -> Response:
        return single(request, self.represent(provisioning, await self.existing(provisioning, resource_id(request))))

    async def replace(self, provisioning: Provisioning, request: Request) -> Response:
        row = await self.to_change(provisioning, request)
        return await self.update(provisioning, row, self.state(await read_json(request)))

    async def patch(self, provisioning: Provisioning, request: Request) -> Response:
        """§3.5.2: the operations apply to the resource as it is, without its read-only meta."""
        row = await self.to_change(provisioning, request)
        current = {key: value for key, value in self.represent(provisioning, row).items() if key != "meta"}
        patched = apply_patch(current, await read_json(request), extension_schemas=self.extension_schemas)
        return await self.update(provisioning, row, self.state(patched))


async def read_json(request: Request) -> Any:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
        raise ScimError(413, "the request body is too large")
    body = await request.body()
    if len(body) > MAX_BODY:
        raise ScimError(413, "the request body is too large")
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        raise invalid("the request body is not JSON", INVALID_SYNTAX) from None
    if _depth(parsed) > MAX_DEPTH:
        # Resources nest a few levels; deeper would only strain what copies and compares them.
        raise invalid(f"the request body nests deeper than {MAX_DEPTH} levels", INVALID_SYNTAX)
    return parsed


def _depth(value: Any) -> int:
    deepest = 0
    pending = [(value, 1)]
    while pending:
        item, level = pending.pop()
        deepest = max(deepest, level)
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        pending.extend((child, level + 1) for child in children)
    return deepest


def resource_id(request: Request) -> str:
    return str(request.path_params["id"])


def etag(version: int) -> str:
    return f'W/"{version}"'  # RFC 7644 §3.14: weak, as the representation is not byte-for-byte stable


def check_version(request: Request, version: int) -> None:
    """RFC 7644 §3.14: a change made with If-Match applies only to the version the client last saw."""
    wanted = request.headers.get("if-match")
    if wanted is not None and wanted.strip() != "*" and etag(version) not in [tag.strip() for tag in wanted.split(",")]:
        raise ScimError(412, "the resource changed since the version given in If-Match")


def meta(resource_type: str, location: str, created: float, modified: float, version: int) -> dict[str, Any]:
    return {
        "resourceType": resource_type,
        "created": _instant(created),
        "lastModified": _instant(modified),
        "location": location,
        "version": etag(version),
    }


def _instant(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def resource_response(resource: Mapping[str, Any], status: int = 200) -> Response:
    headers = {"ETag": resource["meta"]["version"]}
    if status == 201:
        headers["Location"] = resource["meta"]["location"]  # RFC 7644 §3.3
    return scim_response(resource, status, headers)


def listing(request: Request, resources: list[dict[str, Any]]) -> Response:
    """RFC 7644 §3.4.2: the resources matching `filter`, 1-based `startIndex`, at most `count` of them."""
    query = request.query_params
    text = query.get("filter")
    if text is not None:
        found = parse_filter(text)
        resources = [resource for resource in resources if matches(found, resource)]
    # §3.4.2.4: a startIndex below 1 is 1; a negative count is 0; more than the maximum is the maximum.
    start = max(_integer(query.get("startIndex"), 1, "startIndex"), 1)
    count = min(max(_integer(query.get("count"), MAX_RESULTS, "count"), 0), MAX_RESULTS)
    page = [project(request, resource) for resource in resources[start - 1 : start - 1 + count]]
    return scim_response(list_response(page, total=len(resources), start_index=start))


def project(request: Request, resource: dict[str, Any]) -> dict[str, Any]:
    """RFC 7644 §3.4.2.5 `attributes` / `excludedAttributes`, on top-level attributes."""
    wanted = _names(request.query_params.get("attributes"))
    excluded = _names(request.query_params.get("excludedAttributes"))
    keep: Callable[[str], bool] = (
        (lambda key: key.lower() in wanted or key in ALWAYS_RETURNED)
        if wanted
        else (lambda key: key.lower() not in excluded or key in ALWAYS_RETURNED)
    )
    return {key: value for key, value in resource.items() if keep(key)}


def single(request: Request, resource: dict[str, Any]) -> Response:
    return scim_response(project(request, resource), headers={"ETag": resource["meta"]["version"]})


def _names(text: str | None) -> frozenset[str]:
    # A URN-qualified name ("urn:...:User:members") names the attribute after the schema.
    return frozenset(name.strip().rsplit(":", 1)[-1].lower() for name in (text or "").split(",") if name.strip())


def _integer(text: str | None, default: int, name: str) -> int:
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        raise invalid(f"{name} must be an integer", INVALID_VALUE) from None


def text_attribute(body: Mapping[str, Any], name: str, *, required: bool, max_length: int) -> str | None:
    value = lookup(body, name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > max_length:
        raise invalid(f"{name} must be a non-empty string of at most {max_length} characters")
    return value
