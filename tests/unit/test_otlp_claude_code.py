"""Claude Code's usage metrics into usage records: grouping, pricing, temporality, duplicates and refusals."""

from __future__ import annotations

import time
from decimal import Decimal

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    Gauge,
    Metric,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from chamberlain.cost.pricing import Pricing
from chamberlain.cost.usage import TokenUsage
from chamberlain.telemetry.claude_code import CUMULATIVE, DELTA, Caller, ClaudeCodeMetrics

NS = 1_000_000_000
NOW = time.time()
MODEL = "claude-sonnet-4-5-20250929"  # $3 input, $15 output, $3.75 cache write (5 min), $0.30 cache read per MTok
ALICE = Caller("acme", "alice", "platform", "claude-code")
PRICING = Pricing.load()


def attributes(**values: str) -> list[KeyValue]:
    return [KeyValue(key=key.replace("_", "."), value=AnyValue(string_value=value)) for key, value in values.items()]


def point(value: float, *, at: float = NOW, start: float | None = None, **labels: str) -> NumberDataPoint:
    labels.setdefault("model", MODEL)
    labels.setdefault("session_id", "s-1")
    return NumberDataPoint(
        attributes=attributes(**labels),
        start_time_unix_nano=int((at - 60 if start is None else start) * NS),
        time_unix_nano=int(at * NS),
        as_double=value,
    )


def tokens(kind: str, value: float, **options: float | str) -> NumberDataPoint:
    return point(value, type=kind, **options)  # type: ignore[arg-type]


def counter(name: str, points: list[NumberDataPoint], temporality: int = DELTA, monotonic: bool = True) -> Metric:
    return Metric(name=name, sum=Sum(data_points=points, aggregation_temporality=temporality, is_monotonic=monotonic))  # type: ignore[arg-type]


def export(*metrics: Metric, resource: dict[str, str] | None = None) -> ExportMetricsServiceRequest:
    owner = Resource(attributes=attributes(**(resource or {"service_name": "claude-code"})))
    return ExportMetricsServiceRequest(
        resource_metrics=[ResourceMetrics(resource=owner, scope_metrics=[ScopeMetrics(metrics=list(metrics))])]
    )


def one_interval(
    at: float = NOW, temporality: int = DELTA, scale: float = 1.0, start: float | None = None
) -> ExportMetricsServiceRequest:
    """One export of a session's counters: delta over the minute before `at`, or cumulative since `start`."""
    begin = at - 60 if start is None else start
    return export(
        counter(
            "claude_code.token.usage",
            [
                tokens("input", 1000 * scale, at=at, start=begin),
                tokens("output", 500 * scale, at=at, start=begin),
                tokens("cacheRead", 2000 * scale, at=at, start=begin),
                tokens("cacheCreation", 100 * scale, at=at, start=begin),
            ],
            temporality,
        ),
        counter("claude_code.cost.usage", [point(0.0115 * scale, at=at, start=begin)], temporality),
        counter("claude_code.session.count", [point(1, at=at)]),  # other Claude Code metrics: ignored
    )


def test_one_interval_of_one_session_is_one_record_priced_here() -> None:
    conversion = ClaudeCodeMetrics().convert(one_interval(), ALICE, PRICING, now=NOW, request_id="r-1")
    assert conversion.rejected == 0
    (record,) = conversion.records
    assert record.usage == TokenUsage(
        input_tokens=1000, output_tokens=500, cache_read_input_tokens=2000, cache_creation_input_tokens=100
    )
    # 1000 x 3 + 500 x 15 + 2000 x 0.30 + 100 x 3.75 = 11,475 µUSD: our price list, not Claude Code's 0.0115.
    assert record.cost_usd == Decimal("0.011475")
    assert (record.tenant, record.user, record.team, record.client_id) == ("acme", "alice", "platform", "claude-code")
    assert (record.model, record.session_id, record.source, record.request_id) == (MODEL, "s-1", "telemetry", "r-1")
    assert abs(record.at.timestamp() - NOW) < 0.001


def test_the_sender_is_the_authenticated_caller_whatever_the_attributes_say() -> None:
    request = export(
        counter("claude_code.cost.usage", [point(1.0, user_email="ceo@example.com", user_account_uuid="u-9")]),
        resource={"user.email": "ceo@example.com"},
    )
    (record,) = ClaudeCodeMetrics().convert(request, ALICE, PRICING, now=NOW).records
    assert record.user == "alice"


def test_a_model_priced_nowhere_keeps_claude_codes_own_figure() -> None:
    request = export(
        counter("claude_code.token.usage", [tokens("output", 10, model="gpt-oss")]),
        counter("claude_code.cost.usage", [point(0.25, model="gpt-oss")]),
    )
    (record,) = ClaudeCodeMetrics().convert(request, ALICE, PRICING, now=NOW).records
    assert (record.cost_usd, record.usage.output_tokens) == (Decimal("0.25"), 10)


def test_sessions_and_models_are_records_of_their_own_and_other_attributes_are_summed() -> None:
    request = export(
        counter(
            "claude_code.token.usage",
            [
                tokens("output", 10, query_source="main"),
                tokens("output", 5, query_source="subagent"),
                tokens("output", 7, session_id="s-2"),
                tokens("output", 3, model="claude-haiku-4-5"),
            ],
        )
    )
    records = ClaudeCodeMetrics().convert(request, ALICE, PRICING, now=NOW).records
    assert sorted((r.session_id, r.model, r.usage.output_tokens) for r in records) == [
        ("s-1", "claude-haiku-4-5", 3),
        ("s-1", MODEL, 15),
        ("s-2", MODEL, 7),
    ]


def test_a_resent_delta_export_is_counted_once() -> None:
    metrics = ClaudeCodeMetrics()
    first = one_interval()
    assert len(metrics.convert(first, ALICE, PRICING, now=NOW).records) == 1
    assert metrics.convert(first, ALICE, PRICING, now=NOW).records == []  # OTLP's at-least-once delivery
    later = metrics.convert(one_interval(at=NOW + 60), ALICE, PRICING, now=NOW + 60).records
    assert len(later) == 1
    # Another user's identical series is theirs.
    bob = Caller("acme", "bob", None, "claude-code")
    assert len(metrics.convert(first, bob, PRICING, now=NOW).records) == 1


def test_cumulative_points_count_their_increase() -> None:
    began = NOW - 60  # the series began after this process started: its first point counts whole
    metrics = ClaudeCodeMetrics(started=began - 10)

    def cumulative(at: float, scale: float) -> list[TokenUsage]:
        request = one_interval(at=at, temporality=CUMULATIVE, scale=scale, start=began)
        return [record.usage for record in metrics.convert(request, ALICE, PRICING, now=at).records]

    assert [usage.input_tokens for usage in cumulative(NOW, 1)] == [1000]
    assert [(usage.input_tokens, usage.output_tokens) for usage in cumulative(NOW + 60, 3)] == [(2000, 1000)]
    assert cumulative(NOW + 60, 3) == []  # re-sent
    assert cumulative(NOW + 120, 3) == []  # no increase
    # A total that drops without a new start: the process restarted; what it shows is all new.
    assert [usage.input_tokens for usage in cumulative(NOW + 180, 0.5)] == [500]


def test_a_cumulative_series_older_than_the_process_sets_a_baseline_first() -> None:
    metrics = ClaudeCodeMetrics(started=NOW)  # the series' start (NOW - 60) predates us: counted elsewhere, or lost
    first = one_interval(temporality=CUMULATIVE, start=NOW - 60)
    assert metrics.convert(first, ALICE, PRICING, now=NOW).records == []
    after = one_interval(at=NOW + 60, temporality=CUMULATIVE, scale=2, start=NOW - 60)
    assert metrics.convert(after, ALICE, PRICING, now=NOW + 60).records[0].usage.input_tokens == 1000
    # A new start after this process began: a new series, counted whole.
    fresh = one_interval(at=NOW + 120, temporality=CUMULATIVE, scale=1, start=NOW + 90)
    assert metrics.convert(fresh, ALICE, PRICING, now=NOW + 120).records[0].usage.input_tokens == 1000


def test_points_that_cannot_be_an_increase_are_rejected_with_reasons() -> None:
    request = export(
        counter(
            "claude_code.token.usage",
            [
                tokens("output", 10),  # the only good one
                tokens("thinking", 10),
                tokens("output", -1, session_id="s-neg"),
                tokens("output", 10, model=""),
                tokens("output", 10, at=NOW - 2 * 86_400),
                NumberDataPoint(attributes=attributes(model=MODEL, type="output"), time_unix_nano=int(NOW * NS)),
            ],
        ),
        counter("claude_code.cost.usage", [point(1.0), point(2.0)], monotonic=False),
        Metric(name="claude_code.cost.usage", gauge=Gauge(data_points=[point(1.0)])),
        counter("claude_code.cost.usage", [point(1.0)], temporality=0),
        counter("claude_code.cost.usage", [point(float("inf"), session_id="s-inf")]),
    )
    conversion = ClaudeCodeMetrics().convert(request, ALICE, PRICING, now=NOW)
    assert [record.usage.output_tokens for record in conversion.records] == [10]
    assert conversion.rejected == 10
    assert conversion.message == (
        "claude_code.token.usage: the type attribute is one of input, output, cacheRead, cacheCreation; "
        "claude_code.token.usage: a counter's value is a finite number, at least 0; "
        "claude_code.token.usage: a data point without the model attribute"
    )


def test_a_future_time_is_taken_as_now() -> None:
    request = export(counter("claude_code.cost.usage", [point(1.0, at=NOW + 86_400)]))
    (record,) = ClaudeCodeMetrics().convert(request, ALICE, PRICING, now=NOW).records
    assert abs(record.at.timestamp() - NOW) < 0.001


def test_series_memory_is_bounded() -> None:
    metrics = ClaudeCodeMetrics(max_series=3)
    for session in range(10):
        request = export(counter("claude_code.cost.usage", [point(1.0, session_id=f"s-{session}")]))
        metrics.convert(request, ALICE, PRICING, now=NOW)
    assert len(metrics._series) == 3
