"""ensure_topics: create the topics inferpool uses, idempotently, with the admin client."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from inferpool.errors import ConfigurationError
from inferpool.kafka_connect import GRACE_S, broker_unavailable, start_client
from inferpool.logs import get_logger
from inferpool.settings import KafkaSettings

log = get_logger("topics")


async def ensure_topics(
    kafka: KafkaSettings, topics: Iterable[str], partitions: int, replication: int
) -> None:
    """Create each topic that does not exist yet; topics that exist are left as they are."""
    names = sorted(set(topics))
    if not names:
        return
    timeout_s = kafka.request_timeout_ms / 1000 + GRACE_S
    admin = AIOKafkaAdminClient(**kafka.client_options())
    await start_client(admin.start, admin.close, kafka, f"could not create topics {names}")
    try:
        response = await asyncio.wait_for(
            admin.create_topics([NewTopic(name, partitions, replication) for name in names]),
            timeout_s,
        )
    except (TimeoutError, KafkaError, OSError):
        raise broker_unavailable(kafka, f"could not create topics {names}") from None
    finally:
        await admin.close()
    created = [_check_created(kafka, entry) for entry in response.topic_errors]
    log.info("topics.ensured", topics=names, created=[name for name in created if name])


def _check_created(kafka: KafkaSettings, entry: tuple[Any, ...]) -> str | None:
    """The topic's name if this CreateTopics answer says it was created, None if it existed."""
    name, code = str(entry[0]), int(entry[1])
    if code == 0:
        return name
    error = for_code(code)
    if error is TopicAlreadyExistsError:
        return None
    detail = entry[2] if len(entry) > 2 and entry[2] else error.__name__
    if error.retriable:
        raise broker_unavailable(kafka, f"creating topic {name!r} failed ({detail})")
    raise ConfigurationError(
        f"Kafka refused to create topic {name!r}: {detail}; check the topic name, "
        "INFERPOOL_REQUEST_TOPIC_PARTITIONS / INFERPOOL_REQUEST_TOPIC_REPLICATION, and the "
        "client's permissions, or create the topic yourself and set INFERPOOL_CREATE_TOPICS=false"
    )
