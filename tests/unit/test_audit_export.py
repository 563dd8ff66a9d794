"""SIEM export formats: OCSF events valid against the OCSF 1.3.0 schema, CEF escaping that survives any string,
RFC 5424 / RFC 6587 framing, the webhook signature, and the sinks' settings."""

from __future__ import annotations

import hashlib
import json
import re
from functools import cache
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from ocsf_json_schema import OcsfJsonSchemaEmbedded, get_ocsf_schema
from pydantic import TypeAdapter, ValidationError

from chamberlain.audit.events import Action, Actor, AuditEvent, Outcome
from chamberlain.audit.export.cef import escape_header, escape_value, to_cef
from chamberlain.audit.export.ocsf import OCSF_VERSION, to_json_lines, to_ocsf
from chamberlain.audit.export.settings import Sinks, SyslogSinkSettings
from chamberlain.audit.export.shipper import backoff
from chamberlain.audit.export.sinks import (
    SinkConfigurationError,
    WebhookSink,
    build_sink,
    octet_counted,
    signature,
    syslog_message,
)
from chamberlain.audit.records import StoredEvent

IP = "203.0.113.77"
USERNAME = "alice.personal@example.com"


def stored(
    event: AuditEvent, *, personal: dict[str, str] | None = None, seq: int = 0, level: str = "detailed"
) -> StoredEvent:
    """The event as `read_events` returns it."""
    return StoredEvent(
        tenant=event.tenant,
        seq=seq,
        event_id=event.id,
        time=event.time,
        action=str(event.action),
        outcome=event.outcome,
        classification=event.classification,
        subject=event.subject,
        level=level,
        public=json.loads(json.dumps(event.public_fields())),
        personal=personal,
        prev_hash=bytes(32),
        hash=hashlib.sha256(event.id.encode()).digest(),
        purged=False,
    )


def event(action: str, outcome: Outcome = "success", **fields: Any) -> AuditEvent:
    fields.setdefault("actor", Actor("user", "user-1"))
    return AuditEvent(action=action, outcome=outcome, tenant="acme", **fields)  # type: ignore[arg-type]


@cache
def ocsf_validator(class_uid: int) -> Draft202012Validator:
    schema = OcsfJsonSchemaEmbedded(get_ocsf_schema(version=OCSF_VERSION))
    class_schema = schema.get_class_schema(class_name=schema.lookup_class_name_from_uid(class_uid), profiles=[])
    return Draft202012Validator(class_schema)


def assert_valid_ocsf(document: dict[str, Any]) -> None:
    errors = [
        f"{list(error.path)}: {error.message}" for error in ocsf_validator(document["class_uid"]).iter_errors(document)
    ]
    assert not errors, errors


# -- OCSF --------------------------------------------------------------------------------------------------------

ACTORS = [
    Actor("user", "user-1"),
    Actor("client", "client-1"),
    Actor("service", "gateway"),
    Actor("system", "chamberlain"),
]


@pytest.mark.parametrize("action", list(Action), ids=str)
@pytest.mark.parametrize("outcome", ["success", "denied"])
@pytest.mark.parametrize("with_personal", [False, True], ids=["public", "personal"])
def test_every_action_is_a_valid_ocsf_event(action: Action, outcome: Outcome, with_personal: bool) -> None:
    for actor in ACTORS:
        source = event(
            action,
            outcome,
            actor=actor,
            target="mcp:github/tools/create_issue",
            reason="policy" if outcome != "success" else None,
            request_id="req-1",
            details={"method": "tools/call", "server": "github", "before": {}, "after": {"role": "admin"}},
        )
        document = to_ocsf(stored(source, personal={"source_ip": IP, "username": USERNAME} if with_personal else None))
        assert_valid_ocsf(document)
        assert document["metadata"]["uid"] == source.id
        assert document["type_uid"] == document["class_uid"] * 100 + document["activity_id"]


def test_an_action_added_later_is_still_valid_api_activity() -> None:
    document = to_ocsf(stored(event("vault.something_new", actor=Actor("client", "c"))))
    assert_valid_ocsf(document)
    assert (document["class_uid"], document["activity_id"]) == (6003, 99)


def test_a_failed_sign_in_is_an_authentication_logon_failure() -> None:
    source = event(Action.SIGN_IN, "failure", reason="bad_password", time=1_700_000_000.1234)
    document = to_ocsf(stored(source, personal={"source_ip": IP}))
    assert (document["class_uid"], document["category_uid"], document["activity_id"]) == (3002, 3, 1)
    assert document["type_uid"] == 300201
    assert document["status_id"] == 2
    assert document["status_detail"] == "bad_password"
    assert document["user"]["uid"] == "user-1"
    assert document["src_endpoint"] == {"ip": IP}
    assert document["time"] == 1_700_000_000_123
    assert document["metadata"]["product"] == {
        "name": "Chamberlain",
        "vendor_name": "Chamberlain project",
        "version": document["metadata"]["product"]["version"],
    }
    assert document["metadata"]["version"] == OCSF_VERSION


def test_sign_out_is_a_logoff_and_mfa_is_flagged() -> None:
    assert to_ocsf(stored(event(Action.SIGN_OUT)))["type_uid"] == 300202
    assert to_ocsf(stored(event(Action.MFA)))["is_mfa"] is True


def test_an_mcp_request_names_its_method_server_and_target() -> None:
    source = event(
        Action.MCP_REQUEST,
        "denied",
        target="mcp:github/create_issue",
        details={"method": "tools/call", "server": "github"},
    )
    document = to_ocsf(stored(source))
    assert document["class_uid"] == 6003
    assert document["api"]["operation"] == "tools/call"
    assert document["api"]["service"] == {"name": "github"}
    assert document["resources"] == [{"uid": "mcp:github/create_issue"}]
    assert document["status_id"] == 2
    assert document["severity_id"] == 2  # refused: Low


@pytest.mark.parametrize(
    ("before", "after", "activity"), [({}, {"x": 1}, 1), ({"x": 1}, {"x": 2}, 3), ({"x": 1}, {}, 4)]
)
def test_an_admin_change_is_a_create_update_or_delete_by_its_before_and_after(
    before: dict[str, int], after: dict[str, int], activity: int
) -> None:
    document = to_ocsf(stored(event(Action.ADMIN_CHANGE, details={"before": before, "after": after})))
    assert document["activity_id"] == activity


@pytest.mark.parametrize(("classification", "severity"), [("restricted", 4), ("confidential", 3), ("internal", 2)])
def test_a_dlp_detection_is_a_finding_as_severe_as_the_data_it_touched(classification: str, severity: int) -> None:
    document = to_ocsf(stored(event(Action.DLP_DETECTION, classification=classification, reason="credit_card")))
    assert (document["class_uid"], document["type_uid"]) == (2004, 200401)
    assert document["severity_id"] == severity
    assert document["finding_info"]["uid"] == document["metadata"]["uid"]


def test_personal_fields_appear_only_when_the_event_carries_them() -> None:
    source = event(Action.SIGN_IN, subject="user-1", details={"method": "local"})
    without = to_json_lines([stored(source)]).decode()
    assert IP not in without
    assert USERNAME not in without
    assert "personal" not in json.loads(without)["unmapped"]["chamberlain"]
    with_personal = to_ocsf(stored(source, personal={"source_ip": IP, "username": USERNAME, "device": "laptop"}))
    assert with_personal["user"]["name"] == USERNAME
    assert with_personal["unmapped"]["chamberlain"]["personal"] == {"device": "laptop"}


def test_json_lines_are_one_compact_document_per_event() -> None:
    events = [stored(event(Action.TOKEN_ISSUED, reason="line\nbreak"), seq=n) for n in range(3)]
    lines = to_json_lines(events).decode().splitlines()
    assert [json.loads(line)["metadata"]["sequence"] for line in lines] == [0, 1, 2]


# -- CEF ---------------------------------------------------------------------------------------------------------


def unescape(value: str) -> str:
    """The CEF reader's side: a backslash takes the next character literally, except n and r (line breaks)."""
    result, characters = [], iter(value)
    for character in characters:
        if character == "\\":
            following = next(characters)
            result.append({"n": "\n", "r": "\r"}.get(following, following))
        else:
            result.append(character)
    return "".join(result)


def split_unescaped(text: str, separator: str, limit: int) -> list[str]:
    """Splits at the first `limit` separators that no backslash escapes; the rest of the text is the last part."""
    parts: list[str] = []
    start = index = 0
    while index < len(text) and len(parts) < limit:
        if text[index] == "\\":
            index += 2
            continue
        if text[index] == separator:
            parts.append(text[start:index])
            start = index + 1
        index += 1
    return [*parts, text[start:]]


def parse_cef(line: str) -> tuple[list[str], dict[str, str]]:
    """Reads a CEF record as a SIEM does: 7 header fields at unescaped pipes, then key=value pairs where a key is
    the word before an unescaped `=` and a value runs to the space before the next key."""
    assert "\n" not in line
    assert "\r" not in line
    *header, extension = split_unescaped(line, "|", 7)
    pairs = list(re.finditer(r"(?:^| )([A-Za-z0-9_]+)=", extension))
    values = {}
    for index, match in enumerate(pairs):
        end = pairs[index + 1].start() if index + 1 < len(pairs) else len(extension)
        values[match.group(1)] = unescape(extension[match.end() : end])
    return [unescape(field) for field in header], values


@given(st.text())
def test_any_extension_value_round_trips(value: str) -> None:
    escaped = escape_value(value)
    assert unescape(escaped) == value
    assert len(split_unescaped(escaped, "=", 1)) == 1  # no bare "=" for a reader to split on
    assert "\n" not in escaped
    assert "\r" not in escaped


@given(st.text())
def test_any_header_value_round_trips(value: str) -> None:
    escaped = escape_header(value)
    assert unescape(escaped) == value
    assert len(split_unescaped(escaped, "|", 1)) == 1


@given(reason=st.text(), target=st.text(), key_like=st.from_regex(r"[a-z]{1,5}=", fullmatch=True))
def test_a_cef_record_parses_back_whatever_its_values_contain(reason: str, target: str, key_like: str) -> None:
    source = event(Action.MCP_REQUEST, "denied", reason=reason + " " + key_like + "x|y\\", target=target or None)
    header, values = parse_cef(to_cef(stored(source, seq=7)))
    assert header[:4] == ["CEF:0", "Chamberlain", "Chamberlain", header[3]]
    assert header[4] == "mcp.request"
    assert header[6] == "3"  # OCSF Low
    assert values["externalId"] == source.id
    assert values["reason"] == reason + " " + key_like + "x|y\\"
    assert values.get("cs4") == (target or None)
    assert values["cn1"] == "7"


def test_cef_carries_personal_fields_only_when_the_event_does() -> None:
    source = event(Action.SIGN_IN, details={"method": "local"})
    _, public = parse_cef(to_cef(stored(source)))
    assert "src" not in public
    assert "suser" not in public
    _, personal = parse_cef(to_cef(stored(source, personal={"source_ip": IP, "username": USERNAME})))
    assert (personal["src"], personal["suser"]) == (IP, USERNAME)
    assert json.loads(personal["cs6"]) == {"method": "local"}


# -- syslog framing ----------------------------------------------------------------------------------------------

RFC5424 = re.compile(
    rb"<(?P<pri>\d{1,3})>1 (?P<time>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (?P<host>[!-~]{1,255}) chamberlain - "
    rb"(?P<msgid>[!-~]{1,32}) - (?P<msg>CEF:0\|.*)",
    re.DOTALL,
)


def test_a_syslog_message_is_rfc_5424_with_cef_inside() -> None:
    source = event(Action.DLP_DETECTION, classification="restricted", time=1_700_000_000.5)
    match = RFC5424.fullmatch(syslog_message(stored(source), facility=13, hostname="gw-1"))
    assert match is not None
    assert int(match["pri"]) == 13 * 8 + 3  # log audit, Error (a High finding)
    assert match["time"] == b"2023-11-14T22:13:20.500Z"
    assert match["host"] == b"gw-1"
    assert match["msgid"] == b"dlp.detection"


def test_octet_counting_prefixes_the_length_in_bytes() -> None:
    message = "ünïcode".encode()
    assert octet_counted(message) == b"9 " + message


# -- webhook signature and settings ------------------------------------------------------------------------------


def test_the_signature_is_hmac_sha256_of_the_body() -> None:
    # RFC 4231 §4.3, test case 2.
    assert signature(b"Jefe", b"what do ya want for nothing?") == (
        "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )


SINKS = TypeAdapter(Sinks)


async def test_a_webhook_sink_needs_a_long_enough_secret_from_the_environment() -> None:
    (settings,) = SINKS.validate_python([{"type": "webhook", "url": "https://siem.example.com/in", "secret_env": "S"}])
    with pytest.raises(SinkConfigurationError, match="set S"):
        build_sink(settings, environ={})
    with pytest.raises(SinkConfigurationError):
        build_sink(settings, environ={"S": "short"})
    sink = build_sink(settings, environ={"S": "x" * 32})
    assert isinstance(sink, WebhookSink)
    await sink.aclose()


@pytest.mark.parametrize(
    "url", ["http://siem.example.com/in", "http://10.0.0.1/in", "ftp://siem.example.com/in", "https:///nohost"]
)
def test_a_webhook_must_be_https_except_on_loopback(url: str) -> None:
    with pytest.raises(ValidationError):
        SINKS.validate_python([{"type": "webhook", "url": url, "secret_env": "S"}])
    SINKS.validate_python([{"type": "webhook", "url": "http://127.0.0.1:9/in", "secret_env": "S"}])


def test_sinks_default_to_tls_and_need_distinct_cursor_names() -> None:
    (syslog,) = SINKS.validate_python([{"type": "syslog", "host": "siem.example.com"}])
    assert isinstance(syslog, SyslogSinkSettings)
    assert syslog.tls
    assert syslog.effective_port == 6514
    assert syslog.cursor_name == "syslog"
    assert not syslog.include_personal
    with pytest.raises(ValidationError, match="unique"):
        SINKS.validate_python([{"type": "syslog", "host": "a"}, {"type": "syslog", "host": "b"}])
    named = SINKS.validate_python([{"type": "syslog", "host": "a"}, {"type": "syslog", "host": "b", "name": "b"}])
    assert [sink.cursor_name for sink in named] == ["syslog", "b"]
    with pytest.raises(ValidationError):
        SINKS.validate_python([{"type": "ocsf_file", "path": "audit.jsonl", "password": "no such field"}])


def test_the_schema_check_is_not_vacuous() -> None:
    document = to_ocsf(stored(event(Action.TOKEN_ISSUED)))
    validator = ocsf_validator(6003)
    assert validator.is_valid(document)
    assert not validator.is_valid({**document, "src_endpoint": {}})  # an endpoint must say something
    assert not validator.is_valid({**document, "activity_id": 7})
    assert not validator.is_valid({**document, "username": "not an OCSF attribute"})
    assert not validator.is_valid({key: value for key, value in document.items() if key != "metadata"})


def test_the_back_off_doubles_up_to_its_cap_however_long_the_outage() -> None:
    assert [backoff(failures, 0.5, 30.0) for failures in (1, 2, 3, 7, 8)] == [0.5, 1.0, 2.0, 30.0, 30.0]
    assert backoff(100_000, 0.5, 30.0) == 30.0
