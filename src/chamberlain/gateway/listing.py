"""Filters list results (tools, prompts, resources and resource templates) to what the caller may use."""

from __future__ import annotations

from typing import Any, Protocol

from chamberlain.policy.roles import Kind

# method -> (policy kind, result field holding the list, item field holding the name policy matches)
LIST_METHODS: dict[str, tuple[Kind, str, str]] = {
    "tools/list": ("tools", "tools", "name"),
    "prompts/list": ("prompts", "prompts", "name"),
    "resources/list": ("resources", "resources", "uri"),
    "resources/templates/list": ("resources", "resourceTemplates", "uriTemplate"),
}


class NamePolicy(Protocol):
    def permits(self, kind: Kind, name: str) -> bool: ...


def filter_list_response(response: dict[str, Any], method: str, access: NamePolicy) -> bool:
    """Drops the items the caller may not use from a list response, in place. True when something was dropped.

    An item without a usable name is dropped too: what cannot be checked is not shown (deny by default).
    """
    kind, list_field, name_field = LIST_METHODS[method]
    result = response.get("result")
    if not isinstance(result, dict):
        return False
    items = result.get(list_field)
    if not isinstance(items, list):
        return False
    kept = [
        item
        for item in items
        if isinstance(item, dict) and isinstance(item.get(name_field), str) and access.permits(kind, item[name_field])
    ]
    if len(kept) == len(items):
        return False
    result[list_field] = kept
    return True
