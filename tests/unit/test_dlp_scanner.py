"""The DLP scanner (issue 8, "Detectors" and acceptance 5): configuration overrides, detection through JSON escapes
and base64, chunked streams with absolute offsets found exactly once, overlapping detections resolved, and detectors
that crash or time out reported as failures that make the report restricted (fail closed)."""

from __future__ import annotations

import base64
import itertools
import json
import logging
import string
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chamberlain.dlp.config import DetectorSetting, DlpConfig
from chamberlain.dlp.detection import Detection, DetectorFailure
from chamberlain.dlp.detectors import DIGIT, Span, Trigger, trigger_of
from chamberlain.dlp.detectors.assignments import ascii_lower
from chamberlain.dlp.detectors.checksums import iban_mod97, luhn
from chamberlain.dlp.levels import Level
from chamberlain.dlp.patterns_file import CustomPattern
from chamberlain.dlp.scanner import GATE_MAX_LENGTH, MAX_SPAN, Scanner, TextStream, _Active, build_scanner

SCANNER = build_scanner(DlpConfig())
VISA = "4111111111111111"
EMAIL = "jane.doe@example.com"
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"


def spans(report_detections: tuple[Detection, ...]) -> list[tuple[str, int, int]]:
    return [(d.type, d.start, d.end) for d in report_detections]


# -- configuration ---------------------------------------------------------------------------------------------------


def test_defaults_give_each_type_its_level_and_action() -> None:
    report = SCANNER.scan(f"{VISA} {EMAIL} {AWS_KEY} DE89370400440532013000")
    levels = {d.type: (d.classification, d.action) for d in report.detections}
    assert levels == {
        "credit_card": (Level.CONFIDENTIAL, "redact"),
        "email_address": (Level.INTERNAL, "allow"),
        "aws_access_key": (Level.RESTRICTED, "redact"),
        "iban": (Level.CONFIDENTIAL, "allow"),
    }
    assert report.level is Level.RESTRICTED


def test_detector_settings_disable_reclassify_and_change_actions() -> None:
    scanner = build_scanner(
        DlpConfig(
            detectors={
                "email_address": DetectorSetting(enabled=False),
                "iban": DetectorSetting(classification="restricted", action="block"),
            }
        )
    )
    assert "email_address" not in scanner.types
    assert "iban" in scanner.types
    report = scanner.scan(f"{EMAIL} DE89370400440532013000")
    assert [(d.type, d.classification, d.action) for d in report.detections] == [("iban", Level.RESTRICTED, "block")]


def test_level_actions_raise_an_action_but_never_lower_it() -> None:
    scanner = build_scanner(DlpConfig(level_actions={"internal": "alert", "restricted": "allow"}))
    report = scanner.scan(f"{EMAIL} {AWS_KEY}")
    assert {d.type: d.action for d in report.detections} == {"email_address": "alert", "aws_access_key": "redact"}


def test_a_disabled_dlp_section_builds_a_scanner_that_finds_nothing() -> None:
    scanner = build_scanner(DlpConfig(enabled=False))
    assert scanner.types == frozenset()
    assert scanner.scan(VISA).detections == ()


# -- JSON escapes and base64 ----------------------------------------------------------------------------------------


def test_json_escaped_values_are_found_at_their_offsets_as_written() -> None:
    escaped = "jane.doe\\u0040example.com"
    text = '{"note": "mail ' + escaped + '"}'
    [detection] = SCANNER.scan(text).detections
    assert (detection.type, text[detection.start : detection.end], detection.encoding) == (
        "email_address",
        escaped,
        "json",
    )


def test_a_value_after_a_json_newline_escape_is_read_from_its_first_character() -> None:
    text = json.dumps({"body": f"Card:\n{VISA}\nthanks"})
    [detection] = SCANNER.scan(text).detections
    assert text[detection.start : detection.end] == VISA
    assert detection.encoding == "raw"


def test_every_character_escaped_and_json_inside_json_are_seen_through() -> None:
    every = "".join(f"\\u{ord(char):04x}" for char in EMAIL)
    assert [(d.type, d.encoding) for d in SCANNER.scan(f'"{every}"').detections] == [("email_address", "json")]
    inner = json.dumps({"contact": "jane.doe\u0040example.com/", "k": AWS_KEY}, ensure_ascii=True).replace(
        "@", "\\u0040"
    )
    twice = json.dumps({"text": inner})
    assert {d.type for d in SCANNER.scan(twice).detections} == {"email_address", "aws_access_key"}


def test_base64_wrapped_values_are_reported_over_the_whole_run() -> None:
    run = base64.b64encode(f"my card is {VISA}, thanks".encode()).decode()
    text = f"attachment: {run}\n"
    [detection] = SCANNER.scan(text).detections
    assert (detection.type, detection.encoding) == ("credit_card", "base64")
    assert text[detection.start : detection.end] == run
    urlsafe = base64.urlsafe_b64encode(f"key={AWS_KEY}??>".encode()).decode()
    assert [d.type for d in SCANNER.scan(f"data {urlsafe}").detections] == ["aws_access_key"]


def test_base64_of_binary_data_is_not_scanned_as_text() -> None:
    noise = base64.b64encode(bytes(range(256)) * 4).decode()
    assert SCANNER.scan(noise).detections == ()


# -- overlaps --------------------------------------------------------------------------------------------------------


def test_overlapping_detections_keep_the_most_specific() -> None:
    card = "4111 1111 1111 1111"
    assert [d.type for d in SCANNER.scan(f"Phone: {card}").detections] == ["credit_card"]
    header = base64.urlsafe_b64encode(b'{"alg":"HS256"}').rstrip(b"=").decode()
    jwt = f"{header}.eyJzdWIiOiJqYW5lQGV4YW1wbGUuY29tIn0.c2lnbmF0dXJlc2lnbmF0dXJl"
    assert [d.type for d in SCANNER.scan(f"token = {jwt}").detections] == ["jwt"]


def test_a_value_inside_a_longer_confident_detection_is_part_of_it() -> None:
    slack = "xapp-1-A0123456789-4573027102542-" + "fd5cbeff685e0e2b" * 4  # its third part passes for a Visa number
    assert [d.type for d in SCANNER.scan(f"SLACK_BOT_TOKEN={slack}").detections] == ["slack_token"]
    # A container of a lower level hides nothing: the card stays, the email (internal) goes.
    assert [d.type for d in SCANNER.scan(f"{VISA}@example.com").detections] == ["credit_card"]
    # Nor does a generic container: a password value holding an AWS key id is reported as the key id.
    assert [d.type for d in SCANNER.scan(f"password = {AWS_KEY}").detections] == ["aws_access_key"]


# -- failing closed --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Exploding:
    name: str = "exploding"
    type: str = "exploding"
    max_length: int = 10

    def find(self, text: str) -> Iterator[Span]:
        raise RuntimeError(f"cannot handle {text}")


def test_a_crashing_detector_is_reported_and_the_others_still_run(caplog: pytest.LogCaptureFixture) -> None:
    healthy = SCANNER._detectors
    scanner = Scanner([_Active(Exploding(), Level.PUBLIC, "allow"), *healthy], [], 0.05)
    secret_text = f"card {VISA}"
    with caplog.at_level(logging.WARNING, logger="chamberlain.dlp.scanner"):
        report = scanner.scan(secret_text)
    assert report.failures == (DetectorFailure("exploding", "error"),)
    assert [d.type for d in report.detections] == ["credit_card"]
    assert report.level is Level.RESTRICTED
    assert "exploding" in caplog.text
    assert VISA not in caplog.text


def catastrophic(regex: str = r"(a|aa)+$") -> CustomPattern:
    return CustomPattern(name="runaway", regex=regex, classification="public")


@pytest.mark.parametrize("regex", [r"(a|aa)+$", r"(x+x+)+y"])
def test_a_catastrophic_custom_pattern_times_out_and_fails_closed(regex: str) -> None:
    scanner = build_scanner(DlpConfig(detector_timeout_ms=50), [catastrophic(regex)])
    hostile = ("a" if "a" in regex else "x") * 5_000 + "!" + f" {EMAIL}"
    report = scanner.scan(hostile)
    assert report.failures == (DetectorFailure("runaway", "timeout"),)
    assert report.level is Level.RESTRICTED
    assert [d.type for d in report.detections] == ["email_address"]


def test_custom_patterns_report_their_own_type_level_and_action_with_validators() -> None:
    patterns = [
        CustomPattern(name="employee_id", regex=r"\bEMP-\d{6}\b", classification="internal", action="alert"),
        CustomPattern(name="loyalty_card", regex=r"\bLC\d{12}\b", validator="luhn", action="redact"),
    ]
    scanner = build_scanner(DlpConfig(detectors={"employee_id": DetectorSetting(action="block")}), patterns)
    assert {"employee_id", "loyalty_card"} <= scanner.types
    number = next(str(n) for n in range(100000000000, 100000000100) if luhn(str(n)))
    report = scanner.scan(f"EMP-123456 holds LC{number} and LC{int(number) + 1}")  # the second fails Luhn
    assert [(d.type, d.classification, d.action) for d in report.detections] == [
        ("employee_id", Level.INTERNAL, "block"),
        ("loyalty_card", Level.CONFIDENTIAL, "redact"),
    ]


# -- streams ---------------------------------------------------------------------------------------------------------

IBAN = "GB82 WEST 1234 5698 7654 32"
TOKENS = [
    VISA,
    "5555-5555-5555-4444",
    IBAN,
    EMAIL,
    AWS_KEY,
    "SSN 536-22-1234",
    "from 203.0.113.7",
    "(415) 555-2671",
    "jane\\u0040example.com\\n",  # JSON-escaped
    base64.b64encode(f"card {VISA}".encode()).decode(),
]
WORDS = ["the", "report", "shows", "revenue", "grew", "while", "churn", "fell", "in", "north", "deploy", "finished"]


def stream_scan(text: str, cuts: list[int], max_span: int) -> list[tuple[str, int, int]]:
    stream = TextStream(SCANNER, max_span=max_span)
    bounds = [0, *sorted(set(cuts)), len(text)]
    found: list[tuple[str, int, int]] = []
    for start, end in itertools.pairwise(bounds):
        found += spans(stream.feed(text[start:end]).detections)
    return found + spans(stream.close().detections)


documents = st.lists(st.one_of(st.sampled_from(WORDS), st.sampled_from(TOKENS)), min_size=1, max_size=400).flatmap(
    lambda parts: st.tuples(st.just(" ".join(parts)), st.lists(st.integers(0, len(" ".join(parts))), max_size=40))
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(documents)
def test_any_chunking_of_a_stream_gives_the_detections_of_one_scan(document: tuple[str, list[int]]) -> None:
    text, cuts = document
    assert stream_scan(text, cuts, max_span=128) == spans(SCANNER.scan(text).detections)


def test_a_value_split_across_chunks_is_found_once_at_absolute_offsets() -> None:
    filler = "lorem ipsum dolor sit amet " * 1_500  # past the default hold-back, so the stream scans before close()
    text = filler + f"card {VISA} end " + filler + f"key {AWS_KEY} " + filler
    cut_in_card = text.index(VISA) + 7
    cut_in_key = text.index(AWS_KEY) + 5
    found = stream_scan(text, [1_000, cut_in_card, cut_in_key, len(text) - 10], max_span=8192)
    assert found == [
        ("credit_card", text.index(VISA), text.index(VISA) + 16),
        ("aws_access_key", text.index(AWS_KEY), text.index(AWS_KEY) + 20),
    ]
    stream = SCANNER.stream()
    every_char = [d for char in text[:40_000] for d in stream.feed(char).detections] + list(stream.close().detections)
    assert spans(tuple(every_char)) == spans(SCANNER.scan(text[:40_000]).detections)


def test_every_built_in_detector_fits_in_what_a_stream_holds_back() -> None:
    assert all(active.detector.max_length <= MAX_SPAN // 2 for active in SCANNER._detectors)


def test_a_closed_stream_accepts_no_more_text() -> None:
    stream = SCANNER.stream()
    stream.feed("abc")
    stream.close()
    with pytest.raises(ValueError, match="closed"):
        stream.feed("more")


# -- properties ------------------------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=2_000))
def test_random_text_never_crashes_the_scanner(text: str) -> None:
    report = SCANNER.scan(text)
    assert report.failures == ()
    assert all(0 <= d.start < d.end <= len(text) for d in report.detections)
    assert [d.start for d in report.detections] == sorted(d.start for d in report.detections)


NO_DIGITS = st.text(alphabet=string.ascii_letters + " .,;!?\n", max_size=300)


def valid_card(payload: str) -> str:
    payload = "4" + payload[:14]
    return next(payload + digit for digit in string.digits if luhn(payload + digit))


def valid_iban(bban: str) -> str:
    check = next(f"{n:02d}" for n in range(2, 99) if iban_mod97(f"DE{n:02d}{bban}"))
    return f"DE{check}{bban}"


@settings(max_examples=150, deadline=None)
@given(
    NO_DIGITS,
    NO_DIGITS,
    st.text(alphabet=string.digits, min_size=18, max_size=18),
    st.sampled_from(["", " ", "-"]),
    st.booleans(),
)
def test_a_generated_card_or_iban_inserted_into_text_is_found_at_its_offsets(
    before: str, after: str, digits: str, separator: str, use_iban: bool
) -> None:
    if use_iban:
        value, kind = valid_iban(digits), "iban"
        value = " ".join(value[at : at + 4] for at in range(0, len(value), 4)) if separator == " " else value
    else:
        number = valid_card(digits)
        value, kind = separator.join(number[at : at + 4] for at in range(0, 16, 4)), "credit_card"
    text = f"{before} {value} {after}"
    start = len(before) + 1
    assert (kind, start, start + len(value)) in spans(SCANNER.scan(text).detections)


def escape_every_character(text: str) -> str:
    return "".join(f"\\u{ord(char):04x}" for char in text)


@settings(max_examples=150, deadline=None)
@given(
    st.text(alphabet=string.ascii_letters + ' .,\n"\\/é€😀', max_size=60),
    st.text(alphabet=string.ascii_letters + ' .,\n"\\/é€😀', max_size=60),
    st.sampled_from([VISA, "4111-1111-1111-1111", EMAIL, AWS_KEY, "GB82 WEST 1234 5698 7654 32"]),
    st.sampled_from(["plain", "ascii", "every"]),
)
def test_values_in_json_strings_map_back_to_exactly_their_escaped_writing(
    before: str, after: str, value: str, escaping: str
) -> None:
    written = {
        "plain": json.dumps(value, ensure_ascii=False)[1:-1],
        "ascii": json.dumps(value)[1:-1],
        "every": escape_every_character(value),
    }[escaping]
    inside = json.dumps(before + " ", ensure_ascii=escaping != "plain")[1:-1] + written
    text = '{"text": "' + inside + json.dumps(" " + after, ensure_ascii=escaping != "plain")[1:-1] + '"}'
    decoded = [json.loads(f'"{text[d.start : d.end]}"') for d in SCANNER.scan(text).detections]
    assert value in decoded


# -- triggers --------------------------------------------------------------------------------------------------------

# Every detector run on every text: what the trigger fast path must give exactly.
REFERENCE = Scanner(SCANNER._detectors, [], 0.05, triggers=False)

_HEADER = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').decode().rstrip("=")
# Values of every built-in type, triggers on their own (a token prefix, a key name, digits of other scripts), and
# near misses, so that random joins of them land on each side of every trigger and detector.
FRAGMENTS = [
    VISA,
    "4111 1111 1111 1111",
    EMAIL,
    "@",
    "jane\\u0040example.com",
    AWS_KEY,
    "ASIA",
    IBAN,
    "DE89370400440532013000",
    "SSN 536-22-1234",
    "ssn 536221234",
    "AB123456C",
    "AB\u0661\u0662\u0663\u0664\u0665\u0666C",  # a NINO in Arabic-Indic digits: the patterns' `\d` matches them
    "12345678Z",
    "bsn 111222333",
    "(415) 555-2671",
    "tel 4155552671",
    "+44 20 7946 0958",
    "203.0.113.7",
    "2001:db8::1",
    "2001:db8:1::",
    f"{_HEADER}.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJl",
    "eyJ",
    "password = kBrONhLpCEmcxQZPsRfeW",
    "PassWord: ",
    "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "\u017fecret=",  # a long s: lower() and ascii_lower() read it differently
    "token",
    "gh",
    "ghp_",
    "github_pat_",
    "xoxb-1234-5678-abcdEFGH",
    "xapp-",
    "https://hooks.slack.com/services/T000/B000/XXXX",
    "AIza" + "A" * 35,
    "sk_live_" + "a1" * 12,
    "rk_test_",
    "sk-ant-api03-" + "x" * 40,
    "sk-proj-" + "y" * 40,
    "T3BlbkFJ",
    "-----BEGIN PRIVATE KEY-----\\nMIIB\\n-----END PRIVATE KEY-----",
    base64.b64encode(f"mail {EMAIL}".encode()).decode(),
    base64.b64encode(b"nothing to see in here at all").decode(),
    "\\n",
    "\\",
    " ",
    "=",
    ":",
    ".",
    "7",
    "\u0663",
]
texts_with_triggers = st.lists(
    st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=6), st.text(alphabet="0123456789 .-:@", max_size=6)),
    max_size=24,
).flatmap(lambda parts: st.sampled_from(["".join(parts), " ".join(parts), " ".join(parts).swapcase()]))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts_with_triggers)
def test_skipping_detectors_by_trigger_changes_no_report(text: str) -> None:
    assert SCANNER.scan(text) == REFERENCE.scan(text)


def has_trigger(trigger: Trigger, text: str) -> bool:
    """The trigger's meaning, written out independently of the scanner's one-search version of it."""
    haystack = ascii_lower(text) if trigger.folded else text
    digit = trigger.digit and any(char.isdecimal() for char in text)
    return digit or any(literal in haystack for literal in trigger.literals)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts_with_triggers)
def test_no_built_in_detector_finds_anything_in_a_text_without_its_trigger(text: str) -> None:
    for active in SCANNER._detectors:
        trigger = trigger_of(active.detector)
        assert trigger is not None, f"{active.detector.name} declares no trigger: it runs on every text"
        if not has_trigger(trigger, text):
            assert list(active.detector.find(text)) == [], active.detector.name


@dataclass(frozen=True)
class ExplodingOnDigits(Exploding):
    trigger: ClassVar[Trigger] = DIGIT


def test_a_detector_runs_only_on_texts_with_its_trigger_and_one_without_runs_on_all() -> None:
    scanner = Scanner([_Active(ExplodingOnDigits(), Level.PUBLIC, "allow")], [], 0.05)
    assert scanner.scan("Return the text unchanged.").failures == ()
    assert scanner.scan("Return the text 2 times.").failures == (DetectorFailure("exploding", "error"),)
    # Past GATE_MAX_LENGTH triggers are not looked for: every detector runs.
    assert scanner.scan("x" * (GATE_MAX_LENGTH + 1)).failures == (DetectorFailure("exploding", "error"),)
    untriggered = Scanner([_Active(Exploding(), Level.PUBLIC, "allow"), *SCANNER._detectors], [], 0.05)
    assert untriggered.scan("hello").failures == (DetectorFailure("exploding", "error"),)
    # Nor does a custom pattern need a trigger: it runs on every text.
    custom = build_scanner(DlpConfig(), [CustomPattern(name="greeting", regex="hello", classification="internal")])
    assert [d.type for d in custom.scan("hello").detections] == ["greeting"]


def test_detections_inside_one_base64_run_are_resolved_before_they_cover_the_run() -> None:
    """Bench seed 1: a value inside a Slack token, base64-wrapped, was reported over the run in the token's place."""
    slack = "xapp-1-A0123456789-4573027102542-" + "fd5cbeff685e0e2b" * 4
    # A confident custom detection of a lower level, inside the token: part of it as written...
    patterns = [CustomPattern(name="app_id", regex=r"A0123456789", classification="confidential", score=1.0)]
    scanner = build_scanner(DlpConfig(), patterns)
    assert [d.type for d in scanner.scan(f"SLACK_BOT_TOKEN={slack}").detections] == ["slack_token"]
    # ...and so inside the base64 of the same text, though both would cover the whole run and it scores higher.
    run = base64.b64encode(f"SLACK_BOT_TOKEN={slack}".encode()).decode()
    assert [(d.type, d.encoding) for d in scanner.scan(f"data {run}").detections] == [("slack_token", "base64")]


def test_a_slack_token_whose_field_passes_for_a_card_is_found_in_base64() -> None:
    payload = "477166060689"
    visa13 = payload + next(digit for digit in string.digits if luhn(payload + digit))  # a 13-digit Visa by chance
    slack = f"xapp-1-AC8NMFH9B3P-{visa13}-" + "2e060a9d3b4b6" * 4
    assert [d.type for d in SCANNER.scan(f"SLACK_BOT_TOKEN={slack}").detections] == ["slack_token"]
    run = base64.b64encode(f"SLACK_BOT_TOKEN={slack}".encode()).decode()
    text = f'"data": "{run}"'
    [detection] = SCANNER.scan(text).detections
    assert (detection.type, detection.encoding, text[detection.start : detection.end]) == ("slack_token", "base64", run)


def test_a_sixteen_character_base64_run_is_decoded() -> None:
    run = base64.b64encode(b"wdoe@acme.de").decode()
    assert (run, len(run)) == ("d2RvZUBhY21lLmRl", 16)
    text = f"user {run} ok"
    assert [(d.type, d.encoding, text[d.start : d.end]) for d in SCANNER.scan(text).detections] == [
        ("email_address", "base64", run)
    ]
