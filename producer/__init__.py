"""Publish inference requests to Kafka: ``Producer`` (asyncio) and ``SyncProducer`` (threads).

The wire format is in docs/protocol.md; this package imports only the inferpool foundation.
"""

from inferpool.protocol import RequestEnvelope, new_request_id
from inferpool.topics import ensure_topics
from producer.client import Producer, SubmitRequest
from producer.sync import SyncProducer

__all__ = [
    "Producer",
    "RequestEnvelope",
    "SubmitRequest",
    "SyncProducer",
    "ensure_topics",
    "new_request_id",
]
