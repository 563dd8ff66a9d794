"""Claude Code's usage metrics, as its OpenTelemetry exporter sends them, turned into usage records.

Claude Code (code.claude.com/docs/en/monitoring-usage, "Metrics") increments two counters after each API request:
- `claude_code.cost.usage`, unit USD, attributes `model`, and the standard ones (`session.id`, `user.account_uuid`,
  `user.email`, `organization.id`, …), with `query_source`, `speed`, `effort`, `agent.name`, `skill.name`, … when set;
- `claude_code.token.usage`, unit tokens, the same plus `type`: `input`, `output`, `cacheRead` or `cacheCreation`.
Both are monotonic Sums; Claude Code exports them with delta temporality by default
(OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE), cumulative when configured. Its other metrics are accepted and
ignored.

Who spent it is the authenticated caller (the access token's or virtual key's user), never the attributes: anyone
can write `user.email`. One export's points of a (model, session, collection time) become one UsageRecord of source
"telemetry": tokens by type, and the cost at this gateway's prices (pricing.yaml, the same as proxied requests)
when the model is priced there, else Claude Code's own figure. Telemetry does not say which cache writes were for
one hour, so all are priced as five-minute writes, and fast mode's surcharge is only in Claude Code's own figure.

Temporality (OpenTelemetry metrics data model, "Sums"):
- delta: each point is the increase over [start, time); a point whose series already reported that time again is
  a re-sent export (OTLP delivers at least once) and is skipped;
- cumulative: each point is the total since `start`; the increase is the difference from the series' previous
  point; a new `start` (or a drop) is a restart, whose first point counts whole when the series began after this
  process did, and otherwise only sets the baseline: what it carries was counted before, or is lost with the
  previous process's memory (at most one export interval). Series live in this process: with several replicas,
  cumulative export needs a client's exports to reach one replica (delta, Claude Code's default, has no such need).

A point is rejected (counted in the response's partial_success) when it cannot be a valid increase: no value, a
negative or non-finite one, no `model`, an unknown token `type`, a non-monotonic or unspecified-temporality Sum,
another kind of metric under these names, or a time more than a day old. A future time is taken as now.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Final

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality, DataPointFlags, Metric, NumberDataPoint

from chamberlain.cost.pricing import Pricing
from chamberlain.cost.records import UsageRecord
from chamberlain.cost.usage import TokenUsage

COST_METRIC: Final = "claude_code.cost.usage"
TOKEN_METRIC: Final = "claude_code.token.usage"
TOKEN_TYPES: Final = ("input", "output", "cacheRead", "cacheCreation")
DELTA: Final = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
CUMULATIVE: Final = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
NO_RECORDED_VALUE: Final = DataPointFlags.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK
STALE_AFTER: Final = 86_400.0  # seconds: older points are refused (a budget period must not be rewritten late)
MAX_SERIES: Final = 200_000  # series remembered, least recently seen forgotten first
_NANO: Final = 1_000_000_000
_MAX_REASONS: Final = 3


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated sender: whose usage the points are."""

    tenant: str
    user: str | None
    team: str | None
    client_id: str | None


@dataclass(slots=True)
class Conversion:
    records: list[UsageRecord] = field(default_factory=list)
    rejected: int = 0
    reasons: list[str] = field(default_factory=list)  # distinct, the first few

    def reject(self, count: int, reason: str) -> None:
        if count <= 0:
            return
        self.rejected += count
        if reason not in self.reasons and len(self.reasons) < _MAX_REASONS:
            self.reasons.append(reason)

    @property
    def message(self) -> str:
        return "; ".join(self.reasons)


@dataclass(slots=True)
class _Group:
    tokens: dict[str, float] = field(default_factory=dict)
    reported_cost: Decimal | None = None


_GroupKey = tuple[str, str | None, int]  # (model, session id, time in ns)
_SeriesKey = tuple[str, ...]


class ClaudeCodeMetrics:
    """Turns export requests into usage records; remembers each series' last point (per process)."""

    def __init__(self, *, max_series: int = MAX_SERIES, started: float | None = None) -> None:
        self._series: OrderedDict[_SeriesKey, tuple[int, int, float]] = OrderedDict()  # -> (start, time, value)
        self._max_series = max_series
        self._started_ns = int((time.time() if started is None else started) * _NANO)

    def convert(
        self,
        request: ExportMetricsServiceRequest,
        caller: Caller,
        pricing: Pricing | None,
        *,
        now: float | None = None,
        request_id: str | None = None,
    ) -> Conversion:
        moment = time.time() if now is None else now
        conversion = Conversion()
        groups: dict[_GroupKey, _Group] = {}
        for resource_metrics in request.resource_metrics:
            resource = attributes_of(resource_metrics.resource.attributes)
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    if metric.name in (COST_METRIC, TOKEN_METRIC):
                        self._metric(metric, resource, caller, moment, groups, conversion)
        for (model, session, at_ns), group in groups.items():
            record = _record(caller, model, session, at_ns, group, pricing, request_id)
            if record is not None:
                conversion.records.append(record)
        return conversion

    def _metric(
        self,
        metric: Metric,
        resource: dict[str, str],
        caller: Caller,
        now: float,
        groups: dict[_GroupKey, _Group],
        conversion: Conversion,
    ) -> None:
        kind = metric.WhichOneof("data")
        if kind != "sum":
            count = len(getattr(metric, kind).data_points) if kind is not None else 0
            conversion.reject(count, f"{metric.name} must be a monotonic Sum, not {kind}")
            return
        points = metric.sum.data_points
        temporality = metric.sum.aggregation_temporality
        if not metric.sum.is_monotonic or temporality not in (DELTA, CUMULATIVE):
            conversion.reject(
                len(points), f"{metric.name} must be a monotonic Sum with delta or cumulative temporality"
            )
            return
        for point in points:
            if point.flags & NO_RECORDED_VALUE:
                continue  # a marker that the series has no value now: nothing to count
            problem = self._point(metric.name, temporality, point, resource, caller, now, groups)
            if problem is not None:
                conversion.reject(1, f"{metric.name}: {problem}")

    def _point(
        self,
        name: str,
        temporality: int,
        point: NumberDataPoint,
        resource: dict[str, str],
        caller: Caller,
        now: float,
        groups: dict[_GroupKey, _Group],
    ) -> str | None:
        """Adds one point's increase to its group; returns why it is refused, if it is."""
        which = point.WhichOneof("value")
        if which is None:
            return "a data point without a value"
        value = float(point.as_double if which == "as_double" else point.as_int)
        if not math.isfinite(value) or value < 0:
            return "a counter's value is a finite number, at least 0"
        attributes = {**resource, **attributes_of(point.attributes)}
        model = attributes.get("model", "")
        if not model:
            return "a data point without the model attribute"
        kind = attributes.get("type")
        if name == TOKEN_METRIC and kind not in TOKEN_TYPES:
            return f"the type attribute is one of {', '.join(TOKEN_TYPES)}"
        at_ns = point.time_unix_nano
        if at_ns == 0 or at_ns < (now - STALE_AFTER) * _NANO:
            return "a data point without a time, or older than a day"
        at_ns = min(at_ns, int(now * _NANO))
        series = (caller.tenant, caller.user or "", caller.client_id or "", name, *_flat(attributes))
        increase = self._increase(series, temporality, point.start_time_unix_nano, point.time_unix_nano, value)
        if increase:
            group = groups.setdefault((model, attributes.get("session.id") or None, at_ns), _Group())
            if name == TOKEN_METRIC:
                assert kind is not None
                group.tokens[kind] = group.tokens.get(kind, 0.0) + increase
            else:
                group.reported_cost = (group.reported_cost or Decimal(0)) + Decimal(repr(increase))
        return None

    def _increase(self, series: _SeriesKey, temporality: int, start: int, at: int, value: float) -> float:
        last = self._series.get(series)
        if last is not None:
            self._series.move_to_end(series)
        if temporality == DELTA:
            if last is not None and at <= last[1]:
                return 0.0  # this time was counted: a re-sent export
            self._remember(series, (start, at, value))
            return value
        if last is None or start != last[0]:
            self._remember(series, (start, at, value))
            return value if start and start >= self._started_ns else 0.0
        if at <= last[1]:
            return 0.0
        self._remember(series, (start, at, value))
        return value - last[2] if value >= last[2] else value  # a drop without a new start: a restart

    def _remember(self, series: _SeriesKey, point: tuple[int, int, float]) -> None:
        self._series[series] = point
        if len(self._series) > self._max_series:
            self._series.popitem(last=False)


def attributes_of(pairs: Iterable[KeyValue]) -> dict[str, str]:
    """Attributes as text: strings as they are, other values in a plain form (only strings matter here)."""
    return {pair.key: _text(pair.value) for pair in pairs}


def _text(value: AnyValue) -> str:
    which = value.WhichOneof("value")
    if which == "string_value":
        return value.string_value
    if which in ("bool_value", "int_value", "double_value"):
        return str(getattr(value, which))
    if which == "bytes_value":
        return value.bytes_value.hex()
    if which == "array_value":
        return "[" + ",".join(_text(item) for item in value.array_value.values) + "]"
    if which == "kvlist_value":
        return "{" + ",".join(f"{pair.key}={_text(pair.value)}" for pair in value.kvlist_value.values) + "}"
    return ""


def _flat(attributes: dict[str, str]) -> tuple[str, ...]:
    return tuple(part for key in sorted(attributes) for part in (key, attributes[key]))


def _record(
    caller: Caller,
    model: str,
    session: str | None,
    at_ns: int,
    group: _Group,
    pricing: Pricing | None,
    request_id: str | None,
) -> UsageRecord | None:
    tokens = {kind: round(count) for kind, count in group.tokens.items()}
    usage = TokenUsage(
        input_tokens=tokens.get("input", 0),
        output_tokens=tokens.get("output", 0),
        cache_creation_input_tokens=tokens.get("cacheCreation", 0),
        cache_read_input_tokens=tokens.get("cacheRead", 0),
    )
    at = datetime.fromtimestamp(at_ns / _NANO, UTC)
    if any(tokens.values()) and pricing is not None and pricing.knows(model):
        cost = pricing.cost(model, usage, at=at)
    elif group.reported_cost is not None:
        cost = group.reported_cost
    elif any(tokens.values()):
        cost = Decimal(0)  # tokens of a model priced nowhere: counted for reports, not for spend
    else:
        return None
    return UsageRecord(
        tenant=caller.tenant,
        user=caller.user,
        team=caller.team,
        client_id=caller.client_id,
        model=model,
        requested_model=None,
        usage=usage,
        cost_usd=cost,
        latency_ms=None,
        at=at,
        source="telemetry",
        request_id=request_id,
        session_id=session,
    )
