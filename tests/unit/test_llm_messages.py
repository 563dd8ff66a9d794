"""What the LLM proxy reads from a Messages request, the one rewrite it makes, its routes and its configuration."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from chamberlain.llm.errors import LlmError
from chamberlain.llm.messages import model_spans, parse_request, with_model
from chamberlain.llm.routing import Router
from chamberlain.settings import SettingsError, load_settings
from chamberlain.tenancy.config import LlmConfig, LlmRoute

# JSON values as a client could send them, with "model" keys inside nested objects to tempt a naive scanner.
_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20)
_values = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(["model", "type", "text", "a\u00e9", 'q"uote']), children, max_size=4)
    ),
    max_leaves=20,
)
_members = st.dictionaries(st.sampled_from(["messages", "system", "tools", "metadata", "x"]), _values, max_size=5)
_models = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-.", min_size=1, max_size=40)


def _encode(document: dict[str, Any], style: int) -> bytes:
    """The same document as different clients format it."""
    if style == 0:
        return orjson.dumps(document)
    if style == 1:
        return json.dumps(document, indent=2, ensure_ascii=False).encode()
    return json.dumps(document, separators=(" , ", " : ")).encode()


@given(_members, _models, _models, st.integers(0, 2), st.integers(0, 5))
def test_a_rewrite_changes_the_top_level_model_and_no_other_byte(
    members: dict[str, Any], model: str, routed: str, style: int, position: int
) -> None:
    items = list(members.items())
    items.insert(min(position, len(items)), ("model", model))
    body = _encode(dict(items), style)
    rewritten = with_model(body, routed)
    assert orjson.loads(rewritten) == {**orjson.loads(body), "model": routed}
    ((start, end),) = model_spans(body)
    text = body.decode()
    assert rewritten.decode() == text[:start] + json.dumps(routed) + text[end:]


@given(_members, _models)
def test_nested_model_keys_are_not_the_requests_model(members: dict[str, Any], model: str) -> None:
    body = orjson.dumps({"tools": [{"model": "nested", "input_schema": {"model": {"model": 1}}}], **members,
                         "model": model, "max_tokens": 10})  # fmt: skip
    request = parse_request(body, needs_max_tokens=True)
    assert request.model == model
    assert len(model_spans(body)) == 1


def test_a_second_top_level_model_is_refused() -> None:
    body = b'{"model":"claude-haiku-4-5","max_tokens":5,"messages":[],"model":"claude-opus-4-5"}'
    with pytest.raises(LlmError) as refused:
        parse_request(body, needs_max_tokens=True)
    assert (refused.value.status, refused.value.kind) == (400, "invalid_request_error")


@pytest.mark.parametrize(
    ("body", "needs_max_tokens"),
    [
        (b"", True),
        (b"[]", True),
        (b'{"max_tokens":5}', True),
        (b'{"model":"","max_tokens":5}', True),
        (b'{"model":5,"max_tokens":5}', True),
        (b'{"model":"m","max_tokens":0}', True),
        (b'{"model":"m","max_tokens":true}', True),
        (b'{"model":"m","max_tokens":"5"}', True),
        (b'{"model":"m"}', True),
        (b'{"model":"m","max_tokens":5,"stream":"yes"}', True),
        (b'{"model":"m","stream":1}', False),
        (b'{"model":"m"', False),
    ],
)
def test_requests_the_proxy_cannot_decide_on_are_refused(body: bytes, needs_max_tokens: bool) -> None:
    with pytest.raises(LlmError) as refused:
        parse_request(body, needs_max_tokens=needs_max_tokens)
    assert refused.value.kind == "invalid_request_error"


def test_what_the_proxy_reads() -> None:
    body = orjson.dumps({"model": "m", "max_tokens": 300, "stream": True, "tools": [{"name": "t"}], "messages": []})
    request = parse_request(body, needs_max_tokens=True)
    assert (request.model, request.max_tokens, request.stream, request.tools) == ("m", 300, True, True)
    assert request.input_estimate == len(body) // 4
    counted = parse_request(b'{"model":"m","tools":[],"messages":[]}', needs_max_tokens=False)
    assert (counted.max_tokens, counted.stream, counted.tools) == (0, False, False)


def test_routes_take_the_first_rule_whose_conditions_hold() -> None:
    router = Router(
        [
            LlmRoute(model="auto", to="small", max_input_tokens=1000, tools=False),
            LlmRoute(model="auto", to="special", roles=("research",)),
            LlmRoute(model="auto", to="large"),
            LlmRoute(model="large", to="large"),
        ]
    )
    assert router.route("auto", input_tokens=1000, tools=False, roles=()).model == "small"
    assert router.route("auto", input_tokens=1001, tools=False, roles=()).model == "large"
    assert router.route("auto", input_tokens=10, tools=True, roles=("dev",)).model == "large"
    assert router.route("auto", input_tokens=10, tools=True, roles=("dev", "research")).model == "special"
    assert router.route("auto", input_tokens=10, tools=False, roles=()).rule == 0
    # A request no rule matches, or a rule that names the same model, is no rewrite.
    assert router.route("other", input_tokens=10, tools=False, roles=()).rule is None
    assert router.route("large", input_tokens=10, tools=False, roles=()).rule is None


def test_a_mistake_in_the_llm_section_names_the_key_the_file_and_the_line(tmp_path: Path) -> None:
    config = tmp_path / "chamberlain.yaml"
    config.write_text(
        "llm:\n"
        "  upstream_url: http://api.example.com\n"  # an API key in the clear off this machine
        "  keys: {main: anthropic/main}\n"
    )
    with pytest.raises(SettingsError) as invalid:
        load_settings(data_dir=tmp_path, config_file=config, environ={})
    assert f"{config}:2" in str(invalid.value)
    assert "llm.upstream_url" in str(invalid.value)
    config.write_text("tenants:\n  acme:\n    llm:\n      default_key: missing\n")
    with pytest.raises(SettingsError) as invalid:
        load_settings(data_dir=tmp_path, config_file=config, environ={})
    assert f"{config}:3" in str(invalid.value)
    assert "no key named 'missing'" in str(invalid.value)


def test_the_default_tenant_takes_the_top_level_llm_and_budgets(tmp_path: Path) -> None:
    from chamberlain.tenancy.effective import from_file

    config = tmp_path / "chamberlain.yaml"
    config.write_text(
        "llm:\n  upstream_url: http://127.0.0.1:9999\n"
        "budgets:\n  - {scope: tenant, limit_usd: 100}\n"
        "tenants:\n  acme:\n    name: Acme\n"
    )
    settings = load_settings(data_dir=tmp_path, config_file=config, environ={})
    default = from_file(settings, settings.tenant)
    assert default.llm == LlmConfig(upstream_url="http://127.0.0.1:9999")
    assert len(default.budgets) == 1
    assert {"llm", "budgets"} <= default.model_fields_set  # so they win over the stored config
    assert from_file(settings, "acme").llm == LlmConfig()
