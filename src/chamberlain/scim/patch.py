"""SCIM PATCH (RFC 7644 §3.5.2) applied to a resource as a JSON object, with the dialects real clients speak:
Microsoft Entra capitalises operations ("Replace") and sends path-less value objects whose keys are paths
("name.givenName"); Okta sends `{"op": "replace", "value": {"active": false}}`; removing group members comes both as
`members[value eq "id"]` (Okta) and as a path `members` with the values to remove (Entra)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from chamberlain.scim.errors import INVALID_PATH, INVALID_SYNTAX, INVALID_VALUE, NO_TARGET, ScimError, invalid
from chamberlain.scim.filters import And, Compare, Filter, PatchPath, lookup, matches, parse_path

PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
MAX_OPERATIONS = 1000


def apply_patch(resource: Mapping[str, Any], body: Any, *, extension_schemas: frozenset[str]) -> dict[str, Any]:
    """The resource after the request's operations, all or nothing (§3.5.2: "atomic")."""
    if not isinstance(body, Mapping):
        raise invalid("the request is not a PatchOp object", INVALID_SYNTAX)
    schemas = body.get("schemas")
    if not isinstance(schemas, list) or PATCH_OP not in schemas:
        raise invalid(f"schemas must contain {PATCH_OP}", INVALID_SYNTAX)
    operations = lookup(body, "Operations")
    if not isinstance(operations, list) or not operations or len(operations) > MAX_OPERATIONS:
        raise invalid(f"Operations must be a list of 1 to {MAX_OPERATIONS} operations", INVALID_SYNTAX)
    patched = copy.deepcopy(dict(resource))
    for operation in operations:
        if not isinstance(operation, Mapping):
            raise invalid("an operation is not an object", INVALID_SYNTAX)
        op = operation.get("op")
        if not isinstance(op, str) or op.lower() not in ("add", "remove", "replace"):
            raise invalid("op must be add, remove or replace", INVALID_SYNTAX)
        _operation(patched, op.lower(), operation.get("path"), operation.get("value"), extension_schemas)
    return patched


def _operation(resource: dict[str, Any], op: str, path: Any, value: Any, extensions: frozenset[str]) -> None:
    if path is None or path == "":
        if op == "remove":
            raise invalid("remove needs a path", NO_TARGET)  # §3.5.2.2
        if not isinstance(value, Mapping):
            raise invalid("without a path, the value must be an object of attributes", INVALID_VALUE)
        # §3.5.2.1/§3.5.2.3: each attribute of the value is added or replaced; Entra names sub-attributes by path.
        for key, item in value.items():
            _apply(resource, op, parse_path(str(key), extension_schemas=extensions), item)
        return
    if not isinstance(path, str):
        raise invalid("path must be a string", INVALID_PATH)
    _apply(resource, op, parse_path(path, extension_schemas=extensions), value)


def _apply(resource: dict[str, Any], op: str, path: PatchPath, value: Any) -> None:
    container = resource
    if path.attr.schema is not None:
        found = _get(resource, path.attr.schema)
        if not isinstance(found, dict):
            if op == "remove":
                return
            found = _set(resource, path.attr.schema, {})
        container = found
    name = path.attr.name
    if op != "remove" and value is None:
        raise invalid("add and replace need a value", INVALID_VALUE)
    if path.filter is not None:
        _apply_filtered(container, op, name, path.filter, path.sub, value)
    elif path.attr.sub is not None:
        _apply_sub(container, op, name, path.attr.sub, value)
    else:
        _apply_attribute(container, op, name, value)


def _apply_attribute(container: dict[str, Any], op: str, name: str, value: Any) -> None:
    current = _get(container, name)
    if op == "remove":
        if isinstance(value, list) and isinstance(current, list):
            # Entra removes members with the path `members` and the values to remove (not in RFC 7644).
            gone = {_identity(item) for item in value}
            _set(container, name, [item for item in current if _identity(item) not in gone])
        else:
            _delete(container, name)
        return
    if isinstance(current, list) and op == "add":
        # §3.5.2.1: values are added to a multi-valued attribute; one already there is not repeated.
        present = {_identity(item) for item in current}
        for item in value if isinstance(value, list) else [value]:
            if _identity(item) not in present:
                current.append(item)
                present.add(_identity(item))
        return
    if isinstance(current, dict) and isinstance(value, Mapping):
        # §3.5.2.1/§3.5.2.3: a complex attribute's given sub-attributes are added or replaced, the others kept.
        for key, item in value.items():
            _set(current, key, item)
        return
    _set(container, name, copy.deepcopy(value))


def _apply_sub(container: dict[str, Any], op: str, name: str, sub: str, value: Any) -> None:
    parent = _get(container, name)
    if op == "remove":
        for element in parent if isinstance(parent, list) else [parent]:
            if isinstance(element, dict):
                _delete(element, sub)
        return
    if isinstance(parent, list):
        for element in parent:
            if isinstance(element, dict):
                _set(element, sub, copy.deepcopy(value))
        return
    if not isinstance(parent, dict):
        parent = _set(container, name, {})
    _set(parent, sub, copy.deepcopy(value))


def _apply_filtered(
    container: dict[str, Any], op: str, name: str, found_filter: Filter, sub: str | None, value: Any
) -> None:
    current = _get(container, name)
    elements = current if isinstance(current, list) else []
    selected = [element for element in elements if isinstance(element, dict) and matches(found_filter, element)]
    if op == "remove":
        if sub is None:
            _set(container, name, [element for element in elements if not any(element is s for s in selected)])
        else:
            for element in selected:
                _delete(element, sub)
        return
    if not selected:
        # §3.5.2.3 would answer noTarget; Entra adds a work email as `emails[type eq "work"].value` to a user that
        # has none, so an equality filter describes the value to create.
        created = _described_by(found_filter)
        elements.append(created)
        _set(container, name, elements)
        selected = [created]
    for element in selected:
        if sub is not None:
            _set(element, sub, copy.deepcopy(value))
        elif isinstance(value, Mapping):
            for key, item in value.items():
                _set(element, key, copy.deepcopy(item))
        else:
            raise invalid("a value filter without a sub-attribute needs an object value", INVALID_VALUE)


def _described_by(found_filter: Filter) -> dict[str, Any]:
    if isinstance(found_filter, Compare) and found_filter.op == "eq" and found_filter.path.sub is None:
        return {found_filter.path.name: found_filter.value}
    if isinstance(found_filter, And):
        return {**_described_by(found_filter.left), **_described_by(found_filter.right)}
    raise ScimError(400, "the value filter matches no value", NO_TARGET)


def _identity(item: Any) -> Any:
    """What makes two values of a multi-valued attribute the same: their `value` (members, emails) or themselves."""
    if isinstance(item, Mapping):
        found = lookup(item, "value")
        return found if isinstance(found, str | int | float | bool) else repr(sorted(item.items(), key=str))
    return item if isinstance(item, str | int | float | bool) else repr(item)


def _key(container: Mapping[str, Any], name: str) -> str:
    lowered = name.lower()
    return next((key for key in container if key.lower() == lowered), name)


def _get(container: Mapping[str, Any], name: str) -> Any:
    return container.get(_key(container, name))


def _set(container: dict[str, Any], name: str, value: Any) -> Any:
    container[_key(container, name)] = value
    return value


def _delete(container: dict[str, Any], name: str) -> None:
    container.pop(_key(container, name), None)
