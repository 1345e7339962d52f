"""Kafka security as far as the local broker allows.

Tansu 0.6.0 (our test broker) can require SASL (``--authentication``), but a user can only be
created through the broker itself, which then requires a login first, and its TLS listener
never completed a handshake here; so a successful SCRAM login and TLS are covered by the unit
tests of the built client options (tests/unit/test_settings.py). What is tested here, against
the real broker: a refused login is a clear, non-retriable ConfigurationError that names what
to check and never contains the password, for every client the pool starts.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic import SecretStr
from services import running

from inferpool.embedded import EmbeddedBroker
from inferpool.errors import BrokerUnavailable, ConfigurationError
from inferpool.settings import InferpoolSettings, KafkaSettings
from inferpool.topics import ensure_topics
from producer.client import Producer
from worker.consumer import RequestConsumer
from worker.settlement.dead_letter import DeadLetterSink

PASSWORD = "s3cret-never-shown"


@pytest.fixture(scope="module")
def secured_broker() -> Iterator[EmbeddedBroker]:
    yield from running(EmbeddedBroker(authentication=True))


def kafka(broker: EmbeddedBroker, **security: object) -> KafkaSettings:
    return KafkaSettings(
        bootstrap_servers=broker.bootstrap_servers, request_timeout_ms=3000, **security
    )


def scram(broker: EmbeddedBroker) -> KafkaSettings:
    return kafka(
        broker,
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="alice",
        sasl_password=SecretStr(PASSWORD),
    )


def assert_refused_clearly(error: ConfigurationError) -> None:
    message = str(error)
    assert not error.retriable
    assert "SASL SCRAM-SHA-512" in message and "'alice'" in message
    assert "INFERPOOL_KAFKA_SASL_PASSWORD" in message
    assert PASSWORD not in message


async def test_a_refused_scram_login_is_a_clear_configuration_error(
    secured_broker: EmbeddedBroker,
) -> None:
    settings = InferpoolSettings(_env_file=None, kafka=scram(secured_broker))  # type: ignore[call-arg]
    with pytest.raises(ConfigurationError) as producer_error:
        async with Producer(settings):
            pass
    assert_refused_clearly(producer_error.value)
    with pytest.raises(ConfigurationError) as admin_error:
        await ensure_topics(settings.kafka, ["secured"], 1, 1)
    assert_refused_clearly(admin_error.value)

    with pytest.raises(ConfigurationError) as consumer_error:
        async with RequestConsumer(settings, ["secured"]):
            pass
    assert_refused_clearly(consumer_error.value)
    with pytest.raises(ConfigurationError) as dead_letter_error:
        async with DeadLetterSink(settings.kafka, "secured.dlq"):
            pass
    assert_refused_clearly(dead_letter_error.value)


async def test_no_login_where_one_is_required_is_broker_unavailable_naming_security(
    secured_broker: EmbeddedBroker,
) -> None:
    settings = InferpoolSettings(_env_file=None, kafka=kafka(secured_broker))  # type: ignore[call-arg]
    with pytest.raises(BrokerUnavailable, match="INFERPOOL_KAFKA_SECURITY_PROTOCOL"):
        async with Producer(settings):
            pass
