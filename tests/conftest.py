"""Fixtures: a real Tansu broker and a real redis-server per test session, on free loopback
ports; every test gets its own topics, consumer group and Redis key prefix."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from services import running

from inferpool.embedded import EmbeddedBroker, EmbeddedRedis
from inferpool.settings import InferpoolSettings


@pytest.fixture(scope="session")
def broker(request: pytest.FixtureRequest) -> Iterator[EmbeddedBroker]:
    yield from running(EmbeddedBroker(), request)


@pytest.fixture(scope="session")
def redis_server(request: pytest.FixtureRequest) -> Iterator[EmbeddedRedis]:
    yield from running(EmbeddedRedis(), request)


@pytest.fixture
def namespace() -> str:
    """A name no other test uses: for topics, the consumer group and the key prefix."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def settings(
    broker: EmbeddedBroker, redis_server: EmbeddedRedis, namespace: str
) -> InferpoolSettings:
    """Settings pointing at the session's broker and Redis, isolated to this test."""
    return InferpoolSettings(
        _env_file=None,
        kafka={"bootstrap_servers": broker.bootstrap_servers, "request_timeout_ms": 10_000},
        redis={"url": redis_server.url},
        request_topic=f"{namespace}.requests",
        request_topic_partitions=4,
        dead_letter_topic=f"{namespace}.dead-letter",
        consumer_group=f"{namespace}-workers",
        result_key_prefix=namespace,
        session_timeout_ms=6_000,
        heartbeat_interval_ms=500,
        max_wait_ms=10,
        max_batch_size=16,
        drain_timeout_s=10,
        log_format="console",
        metrics_host="127.0.0.1",
        metrics_port=0,
        fetch_max_wait_ms=20,  # Tansu holds idle fetches for the whole wait
    )
