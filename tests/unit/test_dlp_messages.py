"""Data protection on MCP results and outgoing content (dlp/messages.py), with the real detectors and rules."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from chamberlain.audit.settings import ClassificationRule
from chamberlain.dlp.config import DetectorSetting, DlpConfig
from chamberlain.dlp.engine import DlpEngine
from chamberlain.dlp.levels import Level
from chamberlain.dlp.messages import META_KEY, guard_outgoing, guard_result

RULES = [
    ClassificationRule(pattern="customer_data", classification="confidential", retention_days=30),
    ClassificationRule(pattern="^wiki_", classification="internal", external_lookup=True, retention_days=30),
]
KEY = b"k" * 32
CARD = "4111 1111 1111 1111"


def engine(**config: Any) -> DlpEngine:
    return DlpEngine(DlpConfig(**config), RULES, KEY)


def up_to(level: Level) -> Any:
    return lambda found: found <= level


def response(*items: dict[str, Any], **result: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 1, "result": {"content": list(items), **result}}


def text(value: str, **meta: Any) -> dict[str, Any]:
    return {"type": "text", "text": value, **({"_meta": meta} if meta else {})}


def test_items_above_clearance_are_withheld_and_the_client_is_told() -> None:
    document = response(
        text("lunch menu"),
        text("customer_data: Acme"),
        text("board minutes", classification="restricted"),
    )
    outcome = guard_result(
        engine(), document, "tools/call", clearance=up_to(Level.INTERNAL), declared=Level.PUBLIC, tool="search"
    )
    content = document["result"]["content"]
    assert [item["text"] for item in content[:-1]] == ["lunch menu"]
    assert "2 classified above your clearance" in content[-1]["text"]
    assert document["result"]["_meta"][META_KEY] == {"withheld": 2, "blocked": 0}
    assert outcome.withheld == 2
    assert outcome.level is Level.RESTRICTED
    assert outcome.changed
    assert outcome.sources >= {"rule", "label"}


def test_the_servers_declared_level_and_a_rule_on_the_tool_name_apply_to_every_item() -> None:
    document = response(text("a"), text("b"))
    outcome = guard_result(
        engine(), document, "tools/call", clearance=up_to(Level.INTERNAL), declared=Level.CONFIDENTIAL, tool="x"
    )
    assert outcome.withheld == 2
    named = response(text("a"))
    guard_result(engine(), named, "tools/call", clearance=up_to(Level.PUBLIC), declared=Level.PUBLIC, tool="wiki_get")
    assert named["result"]["_meta"][META_KEY]["withheld"] == 1


def test_a_redacted_value_is_masked_and_the_item_delivered() -> None:
    document = response(text(f"card on file: {CARD}"))
    outcome = guard_result(
        engine(), document, "tools/call", clearance=up_to(Level.INTERNAL), declared=Level.PUBLIC, tool=None
    )
    assert document["result"]["content"] == [text("card on file: [REDACTED:credit_card]")]
    assert outcome.redacted == 1
    assert outcome.detections["credit_card"] == 1
    assert not outcome.withheld


def test_keyed_hash_redaction_keeps_equal_values_joinable_and_unreadable() -> None:
    protect = engine(redaction="hash")
    first, second = response(text(f"a {CARD}")), response(text(f"b {CARD.replace(' ', '')}x"))
    for document in (first, second):
        guard_result(
            protect, document, "tools/call", clearance=up_to(Level.RESTRICTED), declared=Level.PUBLIC, tool=None
        )
    masked = first["result"]["content"][0]["text"]
    assert masked.startswith("a [credit_card:")
    assert CARD not in masked
    other = DlpEngine(DlpConfig(redaction="hash"), RULES, b"o" * 32)
    third = response(text(f"a {CARD}"))
    guard_result(other, third, "tools/call", clearance=up_to(Level.RESTRICTED), declared=Level.PUBLIC, tool=None)
    assert third["result"]["content"][0]["text"] != masked  # another tenant's key: not joinable across tenants


def test_a_block_action_withholds_the_item() -> None:
    protect = engine(detectors={"credit_card": DetectorSetting(action="block")})
    document = response(text(f"card {CARD}"), text("fine"))
    outcome = guard_result(
        protect, document, "tools/call", clearance=up_to(Level.RESTRICTED), declared=Level.PUBLIC, tool=None
    )
    assert outcome.blocked == 1
    assert document["result"]["content"][0] == text("fine")
    assert "1 blocked by a data protection rule" in document["result"]["content"][1]["text"]


def test_structured_search_results_are_filtered_row_by_row() -> None:
    rows = [{"title": "menu"}, {"title": "customer_data export"}, {"title": "plan", "sensitivityLabel": "General"}]
    document = response(structuredContent={"total": 3, "results": rows})
    guard_result(engine(), document, "tools/call", clearance=up_to(Level.INTERNAL), declared=Level.PUBLIC, tool=None)
    assert document["result"]["structuredContent"] == {"total": 3, "results": [rows[0], rows[2]]}


def test_structured_content_above_clearance_as_a_whole_is_removed() -> None:
    document = response(text("x"), structuredContent={"summary": "customer_data totals"})
    guard_result(engine(), document, "tools/call", clearance=up_to(Level.INTERNAL), declared=Level.PUBLIC, tool=None)
    assert "structuredContent" not in document["result"]


def test_resources_are_judged_by_uri_and_text_and_lists_are_filtered() -> None:
    read = {"jsonrpc": "2.0", "id": 2, "result": {"contents": [{"uri": "kb://customer_data/1", "text": "t"}]}}
    guard_result(engine(), read, "resources/read", clearance=up_to(Level.INTERNAL), declared=Level.PUBLIC, tool=None)
    assert read["result"]["contents"] == []
    listed = {"id": 3, "result": {"resources": [{"uri": "kb://a", "name": "a"}, {"uri": "kb://customer_data/1"}]}}
    guard_result(engine(), listed, "resources/list", clearance=up_to(Level.INTERNAL), declared=Level.PUBLIC, tool=None)
    assert listed["result"]["resources"] == [{"uri": "kb://a", "name": "a"}]


def test_delivered_confidential_content_is_recognised_in_later_outgoing_arguments() -> None:
    protect = engine()
    report = "customer_data review: Globex plans to double its order volume before the summer holidays start"
    guard_result(
        protect,
        response(text(report)),
        "tools/call",
        clearance=up_to(Level.CONFIDENTIAL),
        declared=Level.PUBLIC,
        tool=None,
    )
    params = {"name": "web_search", "arguments": {"q": "Globex plans to double its order volume before the summer"}}
    outcome = guard_outgoing(protect, params, "arguments", what="the arguments", target="'web_search'", external=True)
    assert outcome.refusal is not None
    assert "fingerprint" in outcome.refusal
    assert "Globex" not in outcome.refusal
    internal = guard_outgoing(protect, params, "arguments", what="the arguments", target="'x'", external=False)
    assert internal.refusal is None  # an internal tool may receive it


def test_outgoing_redactions_apply_in_place_and_leave_the_rest_intact() -> None:
    params = {"name": "t", "arguments": {"note": f"pay with {CARD}", "n": 3, "nested": ["ok"]}}
    outcome = guard_outgoing(engine(), params, "arguments", what="the arguments", target="'t'", external=True)
    assert outcome.refusal is None
    assert outcome.changed
    assert params["arguments"] == {"note": "pay with [REDACTED:credit_card]", "n": 3, "nested": ["ok"]}


def test_external_levels_can_be_widened_by_rules_or_configuration() -> None:
    params = {"name": "t", "arguments": {"q": "wiki_ page"}}
    assert guard_outgoing(engine(), params, "arguments", what="a", target="t", external=True).refusal is None
    strict = engine(external_levels=("public",))
    assert guard_outgoing(strict, params, "arguments", what="a", target="t", external=True).refusal is not None


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(result=JSON)
def test_any_result_shape_is_handled_and_nothing_above_clearance_survives(result: Any) -> None:
    document = {"jsonrpc": "2.0", "id": 1, "result": {"content": [text("customer_data"), {"x": result}]}}
    before = copy.deepcopy(document)
    guard_result(engine(), document, "tools/call", clearance=up_to(Level.INTERNAL), declared=Level.PUBLIC, tool=None)
    assert text("customer_data") not in document["result"]["content"]
    assert document["id"] == before["id"]
