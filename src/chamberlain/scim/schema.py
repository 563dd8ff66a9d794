"""The discovery documents (RFC 7644 §4): what this service provider supports, its resource types, and the schemas
of the attributes it keeps (RFC 7643 §5-§7)."""

from __future__ import annotations

from typing import Any

from chamberlain.scim.filters import CORE_GROUP, CORE_USER

ENTERPRISE_USER = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
EXTENSION_SCHEMAS = frozenset({ENTERPRISE_USER.lower()})
LIST_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
SERVICE_PROVIDER_CONFIG = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"
RESOURCE_TYPE = "urn:ietf:params:scim:schemas:core:2.0:ResourceType"
SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Schema"
MAX_RESULTS = 200


def service_provider_config(base: str) -> dict[str, Any]:
    """RFC 7643 §5."""
    return {
        "schemas": [SERVICE_PROVIDER_CONFIG],
        "patch": {"supported": True},
        "bulk": {"supported": False, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": True, "maxResults": MAX_RESULTS},
        "changePassword": {"supported": False},
        "sort": {"supported": False},
        "etag": {"supported": True},
        "authenticationSchemes": [
            {
                "type": "oauthbearertoken",
                "name": "Bearer token",
                "description": "The tenant's SCIM token (chamberlain scim token), as an RFC 6750 bearer token",
                "primary": True,
            }
        ],
        "meta": {"resourceType": "ServiceProviderConfig", "location": f"{base}/ServiceProviderConfig"},
    }


def resource_types(base: str) -> list[dict[str, Any]]:
    """RFC 7643 §6."""
    return [
        {
            "schemas": [RESOURCE_TYPE],
            "id": "User",
            "name": "User",
            "endpoint": "/Users",
            "schema": CORE_USER,
            "schemaExtensions": [{"schema": ENTERPRISE_USER, "required": False}],
            "meta": {"resourceType": "ResourceType", "location": f"{base}/ResourceTypes/User"},
        },
        {
            "schemas": [RESOURCE_TYPE],
            "id": "Group",
            "name": "Group",
            "endpoint": "/Groups",
            "schema": CORE_GROUP,
            "meta": {"resourceType": "ResourceType", "location": f"{base}/ResourceTypes/Group"},
        },
    ]


def _attribute(name: str, kind: str = "string", **options: Any) -> dict[str, Any]:
    return {
        "name": name,
        "type": kind,
        "multiValued": False,
        "required": False,
        "caseExact": False,
        "mutability": "readWrite",
        "returned": "default",
        "uniqueness": "none",
        **options,
    }


def _identifying(name: str) -> list[dict[str, Any]]:
    """The attribute that names a resource, unique in the tenant, and the client's own id for it (RFC 7643 §3.1)."""
    return [_attribute(name, required=True, uniqueness="server"), _attribute("externalId", caseExact=True)]


def schemas(base: str) -> list[dict[str, Any]]:
    """RFC 7643 §7: the attributes kept and given meaning here; others a client sends are kept as sent."""
    user = [
        *_identifying("userName"),
        _attribute(
            "name",
            "complex",
            subAttributes=[_attribute(part) for part in ("formatted", "familyName", "givenName", "middleName")],
        ),
        _attribute("displayName"),
        _attribute("active", "boolean"),
        _attribute(
            "emails",
            "complex",
            multiValued=True,
            subAttributes=[_attribute("value"), _attribute("type"), _attribute("primary", "boolean")],
        ),
    ]
    group = [
        *_identifying("displayName"),
        _attribute(
            "members",
            "complex",
            multiValued=True,
            subAttributes=[
                _attribute("value", caseExact=True, mutability="immutable"),
                _attribute("display", mutability="readOnly"),
            ],
        ),
    ]
    return [_schema(CORE_USER, "User", user, base), _schema(CORE_GROUP, "Group", group, base)]


def _schema(schema_id: str, name: str, attributes: list[dict[str, Any]], base: str) -> dict[str, Any]:
    return {
        "schemas": [SCHEMA],
        "id": schema_id,
        "name": name,
        "attributes": attributes,
        "meta": {"resourceType": "Schema", "location": f"{base}/Schemas/{schema_id}"},
    }


def list_response(resources: list[dict[str, Any]], *, total: int, start_index: int) -> dict[str, Any]:
    """RFC 7644 §3.4.2."""
    return {
        "schemas": [LIST_RESPONSE],
        "totalResults": total,
        "startIndex": start_index,
        "itemsPerPage": len(resources),
        "Resources": resources,
    }
