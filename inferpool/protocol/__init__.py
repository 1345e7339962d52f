"""The wire contract shared by producers, workers and result readers (docs/protocol.md).

Everything a message is made of lives here, in the foundation, so that the producer, the
worker and the results client agree by construction: the request envelope, the result
record and its statuses and timings, the rules for ids and model names, the Kafka header
names, the Redis key layout, and the msgpack/JSON codec with its tensor encoding.
"""

from inferpool.protocol.envelope import FORMAT_VERSION, SUPPORTED_VERSIONS, RequestEnvelope
from inferpool.protocol.fields import (
    MAX_EPOCH_MS,
    MODEL_NAME_PATTERN,
    REQUEST_ID_PATTERN,
    check_model_name,
    check_request_id,
    check_tenant,
    id_from_key,
    new_request_id,
    now_ms,
)
from inferpool.protocol.keys import ResultKeys
from inferpool.protocol.lanes import Priority, lane_of_topic, lane_topic, lane_topics
from inferpool.protocol.load import LoadSummary, predicted_wait_s
from inferpool.protocol.result import (
    RESULT_FORMAT_VERSION,
    ErrorInfo,
    ResultRecord,
    ResultStatus,
    Timings,
    decode_result,
    encode_or_explain,
)
from inferpool.protocol.wire import Encoding, WireTensor

__all__ = [
    "FORMAT_VERSION",
    "MAX_EPOCH_MS",
    "MODEL_NAME_PATTERN",
    "REQUEST_ID_PATTERN",
    "RESULT_FORMAT_VERSION",
    "SUPPORTED_VERSIONS",
    "Encoding",
    "ErrorInfo",
    "LoadSummary",
    "Priority",
    "RequestEnvelope",
    "ResultKeys",
    "ResultRecord",
    "ResultStatus",
    "Timings",
    "WireTensor",
    "check_model_name",
    "check_request_id",
    "check_tenant",
    "decode_result",
    "encode_or_explain",
    "id_from_key",
    "lane_of_topic",
    "lane_topic",
    "lane_topics",
    "new_request_id",
    "now_ms",
    "predicted_wait_s",
]
