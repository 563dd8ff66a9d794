"""Model routing: `llm.routes` rewrite the model a request asks for, by its input size, its tools and the caller's
roles (for example an alias served by a small model for short requests without tools, by a larger one otherwise).

Rules are tried in the order written; the first whose conditions all hold decides. A request no rule matches keeps
its model. The proxy checks the caller's model policy on the model that will be served, and records every rewrite.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from chamberlain.tenancy.config import LlmRoute


@dataclass(frozen=True, slots=True)
class Routed:
    model: str  # what the upstream will be asked for
    rule: int | None  # the index of the rule that rewrote it, None when nothing did


class Router:
    def __init__(self, routes: Sequence[LlmRoute]) -> None:
        self._by_model: dict[str, list[tuple[int, LlmRoute]]] = {}
        for index, route in enumerate(routes):
            self._by_model.setdefault(route.model, []).append((index, route))

    def route(self, model: str, *, input_tokens: int, tools: bool, roles: Sequence[str]) -> Routed:
        for index, route in self._by_model.get(model, ()):
            if route.max_input_tokens is not None and input_tokens > route.max_input_tokens:
                continue
            if route.tools is not None and route.tools != tools:
                continue
            if route.roles is not None and not any(role in route.roles for role in roles):
                continue
            return Routed(route.to, index) if route.to != model else Routed(model, None)
        return Routed(model, None)
