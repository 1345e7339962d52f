"""Settings: read from INFERPOOL_* variables, wrong values named in the error."""

from __future__ import annotations

import pytest

from inferpool.errors import ConfigurationError
from inferpool.settings import load_settings, settings_environment


def test_nested_sections_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERPOOL_KAFKA_BOOTSTRAP_SERVERS", "kafka-1:9092,kafka-2:9092")
    monkeypatch.setenv("INFERPOOL_REDIS_URL", "rediss://worker:secret@redis:6380/1")
    monkeypatch.setenv("INFERPOOL_MODELS", "echo, mine=pkg.mod:create")
    monkeypatch.setenv("INFERPOOL_MAX_WAIT_MS", "25")
    settings = load_settings(_env_file=None)
    assert settings.kafka.bootstrap_servers == "kafka-1:9092,kafka-2:9092"
    assert settings.redis.url == "rediss://worker:secret@redis:6380/1"
    assert settings.models == ["echo", "mine=pkg.mod:create"]
    assert settings.max_wait_ms == 25


def test_a_wrong_value_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERPOOL_MAX_BATCH_SIZE", "0")
    with pytest.raises(ConfigurationError, match="INFERPOOL_MAX_BATCH_SIZE"):
        load_settings(_env_file=None)


def test_sasl_without_credentials_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERPOOL_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("INFERPOOL_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    with pytest.raises(ConfigurationError, match="INFERPOOL_KAFKA_SASL_USERNAME"):
        load_settings(_env_file=None)


def test_sasl_settings_reach_the_kafka_client_without_leaking(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("INFERPOOL_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("INFERPOOL_KAFKA_SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("INFERPOOL_KAFKA_SASL_USERNAME", "worker")
    monkeypatch.setenv("INFERPOOL_KAFKA_SASL_PASSWORD", "hunter2")
    settings = load_settings(_env_file=None)
    options = settings.kafka.client_options()
    assert options["sasl_mechanism"] == "SCRAM-SHA-256"
    assert options["sasl_plain_username"] == "worker"
    assert options["sasl_plain_password"] == "hunter2"
    assert "hunter2" not in repr(settings)


def test_redis_url_must_have_a_redis_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERPOOL_REDIS_URL", "http://redis:6379")
    with pytest.raises(ConfigurationError, match="INFERPOOL_REDIS_URL"):
        load_settings(_env_file=None)


def test_topic_template_allows_only_the_model_placeholder() -> None:
    assert load_settings(_env_file=None, request_topic="req.{model}").topic_for("m") == "req.m"
    with pytest.raises(ConfigurationError, match="INFERPOOL_REQUEST_TOPIC"):
        load_settings(_env_file=None, request_topic="req.{team}")


def test_settings_travel_to_a_child_process_through_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = load_settings(
        _env_file=None, models=["echo", "mine=pkg.mod:create"], max_wait_ms=7.5,
        create_topics=False, kafka={"sasl_password": "s3cret", "security_protocol": "SASL_SSL",
                                    "sasl_mechanism": "PLAIN", "sasl_username": "u"},
    )
    for name, value in settings_environment(original).items():
        monkeypatch.setenv(name, value)
    assert load_settings(_env_file=None) == original
