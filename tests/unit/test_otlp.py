"""OTLP/HTTP wire format: content types and codings, the size limit, protobuf and OTLP/JSON decoding, the answers."""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Callable
from typing import Any

import pytest
from google.protobuf import json_format
from google.rpc.status_pb2 import Status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    Exemplar,
    Metric,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)

from chamberlain.telemetry.otlp import (
    OtlpError,
    decode,
    decompressed,
    media_type,
    response_body,
    status_body,
)

# -- content type and coding ------------------------------------------------------------------------------------


def test_the_two_otlp_media_types_are_accepted_with_parameters() -> None:
    assert media_type("application/x-protobuf") == "protobuf"
    assert media_type("Application/JSON; charset=utf-8") == "json"
    for other in (None, "", "text/plain", "application/grpc", "application/jsonl"):
        with pytest.raises(OtlpError) as refused:
            media_type(other)
        assert refused.value.status == 415


def test_gzip_and_identity_are_the_only_codings() -> None:
    assert decompressed(b"abc", None, 10) == b"abc"
    assert decompressed(gzip.compress(b"abc"), "gzip", 10) == b"abc"
    assert decompressed(gzip.compress(b"ab") + gzip.compress(b"cd"), "GZIP", 10) == b"abcd"  # several members
    for coding, status in (("br", 415), ("deflate", 415), ("gzip, br", 415)):
        with pytest.raises(OtlpError) as refused:
            decompressed(b"abc", coding, 10)
        assert refused.value.status == status


def test_a_decompression_bomb_stops_at_the_limit() -> None:
    bomb = gzip.compress(bytes(50 * 1024 * 1024))  # 50 MiB of zeros in about 50 KB
    assert len(bomb) < 100_000
    with pytest.raises(OtlpError) as refused:
        decompressed(bomb, "gzip", 1024 * 1024)
    assert refused.value.status == 413
    assert decompressed(gzip.compress(bytes(1024)), "gzip", 1024) == bytes(1024)  # exactly the limit is fine


@pytest.mark.parametrize("body", [b"not gzip", gzip.compress(b"x" * 1000)[:-12], b"\x1f\x8b"])
def test_broken_gzip_is_bad_data(body: bytes) -> None:
    with pytest.raises(OtlpError) as refused:
        decompressed(body, "gzip", 10_000)
    assert refused.value.status == 400


def refusal(action: Callable[[], object]) -> int | None:
    """The status `action` was refused with, None when it passed; anything but an OtlpError propagates."""
    try:
        action()
    except OtlpError as refused:
        return refused.status
    return None


@given(st.binary(max_size=2000))
def test_any_bytes_as_gzip_give_data_or_a_protocol_error(body: bytes) -> None:
    assert refusal(lambda: decompressed(body, "gzip", 10_000)) in (None, 400, 413)


# -- decoding ---------------------------------------------------------------------------------------------------


def sample() -> ExportMetricsServiceRequest:
    point = NumberDataPoint(
        attributes=[KeyValue(key="type", value=AnyValue(string_value="input"))],
        start_time_unix_nano=1_700_000_000_000_000_000,
        time_unix_nano=1_700_000_060_000_000_000,
        as_double=1234.0,
        exemplars=[Exemplar(as_int=3, span_id=bytes.fromhex("00f067aa0ba902b7"), trace_id=bytes(range(16)))],
    )
    metric = Metric(
        name="claude_code.token.usage",
        unit="tokens",
        sum=Sum(data_points=[point], aggregation_temporality=1, is_monotonic=True),
    )
    return ExportMetricsServiceRequest(
        resource_metrics=[ResourceMetrics(scope_metrics=[ScopeMetrics(metrics=[metric])])]
    )


def otlp_json(message: ExportMetricsServiceRequest) -> dict[str, Any]:
    """The OTLP/JSON form, written independently of the code under test: protobuf's JSON with ids in hex."""
    document = json_format.MessageToDict(message, use_integers_for_enums=True)

    def hexify(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("traceId", "spanId"):
                    node[key] = base64.b64decode(value).hex().upper()  # case-insensitive hex
                else:
                    hexify(value)
        elif isinstance(node, list):
            for item in node:
                hexify(item)

    hexify(document)
    return document


def test_protobuf_and_otlp_json_decode_to_the_same_message() -> None:
    message = sample()
    assert decode(message.SerializeToString(), "protobuf") == message
    document = otlp_json(message)
    point = document["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]["sum"]["dataPoints"][0]
    assert point["timeUnixNano"] == "1700000060000000000"  # int64 as a string
    assert point["exemplars"][0]["spanId"] == "00F067AA0BA902B7"
    assert decode(json.dumps(document).encode(), "json") == message
    point["timeUnixNano"] = 1700000060000000000  # numbers are accepted for int64 too
    assert decode(json.dumps(document).encode(), "json") == message


def test_snake_case_keys_are_unknown_fields_and_ignored() -> None:
    document = otlp_json(sample())
    snake = {"resource_metrics": document["resourceMetrics"]}
    assert decode(json.dumps(snake).encode(), "json") == ExportMetricsServiceRequest()
    document["somethingNew"] = {"x": 1}  # a field from a later OTLP version
    assert decode(json.dumps(document).encode(), "json") == sample()


@pytest.mark.parametrize(
    ("mutate", "complaint"),
    [
        (lambda sum_: sum_.update(aggregationTemporality="AGGREGATION_TEMPORALITY_DELTA"), "integer"),
        (lambda sum_: sum_["dataPoints"][0]["exemplars"][0].update(spanId="not hex!"), "hex"),
        (lambda sum_: sum_["dataPoints"][0]["exemplars"][0].update(traceId=12), "hex"),
        (lambda sum_: sum_.update(dataPoints={"a": 1}), "array"),
        (lambda sum_: sum_["dataPoints"][0].update(asDouble="lots"), "ExportMetricsServiceRequest"),
        (lambda sum_: sum_["dataPoints"][0].update(timeUnixNano="-"), "ExportMetricsServiceRequest"),
        (lambda sum_: sum_["dataPoints"][0].update(attributes=[7]), "object"),
    ],
)
def test_json_that_is_not_otlp_is_bad_data(mutate: Any, complaint: str) -> None:
    document = otlp_json(sample())
    mutate(document["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]["sum"])
    with pytest.raises(OtlpError, match=complaint) as refused:
        decode(json.dumps(document).encode(), "json")
    assert refused.value.status == 400


@pytest.mark.parametrize("body", [b"", b"[]", b'"x"', b"{", b'{"resourceMetrics": NaN}', b"\xff\xfe", b"[" * 5000])
def test_bodies_that_are_not_json_objects_are_bad_data(body: bytes) -> None:
    with pytest.raises(OtlpError) as refused:
        decode(body, "json")
    assert refused.value.status == 400


def test_bytes_that_are_not_protobuf_are_bad_data() -> None:
    with pytest.raises(OtlpError) as refused:
        decode(b"\x0a\xff\xff\xff\xff\x0f", "protobuf")
    assert refused.value.status == 400


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=30,
)
otlp_keys = st.sampled_from(
    [
        *("resourceMetrics", "scopeMetrics", "metrics", "sum", "gauge", "dataPoints", "asInt", "asDouble"),
        *("attributes", "key", "value", "stringValue", "intValue", "timeUnixNano", "aggregationTemporality"),
        *("exemplars", "spanId"),
    ]
)
otlp_shaped = st.recursive(
    json_values,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(otlp_keys, children, max_size=4),
    max_leaves=40,
)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(json_values, otlp_shaped))
def test_any_json_decodes_or_is_refused_as_bad_data(document: Any) -> None:
    assert refusal(lambda: decode(json.dumps(document).encode(), "json")) in (None, 400)


@given(st.binary(max_size=500))
def test_any_bytes_decode_as_protobuf_or_are_refused_as_bad_data(body: bytes) -> None:
    assert refusal(lambda: decode(body, "protobuf")) in (None, 400)


points = st.builds(
    NumberDataPoint,
    start_time_unix_nano=st.integers(0, 2**64 - 1),
    time_unix_nano=st.integers(0, 2**64 - 1),
    as_double=st.floats(allow_nan=False, allow_infinity=False),
    attributes=st.lists(
        st.builds(KeyValue, key=st.text(max_size=10), value=st.builds(AnyValue, string_value=st.text(max_size=10))),
        max_size=3,
    ),
    exemplars=st.lists(
        st.builds(Exemplar, span_id=st.binary(min_size=8, max_size=8), trace_id=st.binary(min_size=16, max_size=16)),
        max_size=2,
    ),
)


@given(st.lists(points, max_size=4), st.text(max_size=30), st.integers(0, 2))
def test_any_request_round_trips_through_both_encodings(
    data_points: list[NumberDataPoint], name: str, temporality: int
) -> None:
    metric = Metric(name=name, sum=Sum(data_points=data_points, aggregation_temporality=temporality))  # type: ignore[arg-type]
    message = ExportMetricsServiceRequest(
        resource_metrics=[ResourceMetrics(scope_metrics=[ScopeMetrics(metrics=[metric])])]
    )
    assert decode(message.SerializeToString(), "protobuf") == message
    assert decode(json.dumps(otlp_json(message)).encode(), "json") == message


# -- answers ----------------------------------------------------------------------------------------------------


def test_full_success_leaves_partial_success_unset() -> None:
    assert response_body(0, "", "json") == b"{}"
    assert not ExportMetricsServiceResponse.FromString(response_body(0, "", "protobuf")).HasField("partial_success")


def test_rejected_points_are_reported_as_partial_success() -> None:
    assert json.loads(response_body(2, "why", "json")) == {
        "partialSuccess": {"rejectedDataPoints": "2", "errorMessage": "why"}
    }
    answer = ExportMetricsServiceResponse.FromString(response_body(3, "because", "protobuf"))
    assert (answer.partial_success.rejected_data_points, answer.partial_success.error_message) == (3, "because")


@pytest.mark.parametrize("message", ["short", "é" * 100, "x" * 300])
def test_failures_carry_a_google_rpc_status(message: str) -> None:
    assert Status.FromString(status_body(message, "protobuf")).message == message
    assert json.loads(status_body(message, "json")) == {"message": message}
