"""INFERPOOL_REDIS_URL's three forms (one Redis, Sentinel, Redis Cluster), parsed once."""

from __future__ import annotations

import pytest

from inferpool.errors import ConfigurationError
from inferpool.settings import RedisEndpoints, load_settings, parse_redis_url


def test_one_redis_keeps_its_url_as_given() -> None:
    assert parse_redis_url("rediss://u:p@redis:6380/1").kind == "single"
    assert parse_redis_url("unix:///run/redis.sock").kind == "single"


def test_a_sentinel_url_names_the_sentinels_the_primary_and_the_database() -> None:
    parsed = parse_redis_url("rediss+sentinel://worker:s%40cret@s1:26380,s2,[::1]:26381/main/2")
    assert parsed == RedisEndpoints(
        kind="sentinel",
        nodes=(("s1", 26380), ("s2", 26379), ("::1", 26381)),
        service="main",
        db=2,
        tls=True,
        username="worker",
        password="s@cret",
    )
    assert parse_redis_url("redis+sentinel://s1/main").db == 0


def test_a_cluster_url_names_seed_nodes_and_database_zero_only() -> None:
    parsed = parse_redis_url("redis+cluster://n1:7000,n2:7001,n3")
    assert parsed.kind == "cluster" and not parsed.tls and parsed.service is None
    assert parsed.nodes == (("n1", 7000), ("n2", 7001), ("n3", 6379))
    assert parse_redis_url("redis+cluster://:only-a-password@n1/0").password == "only-a-password"


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("http://redis:6379", "must start with"),
        ("redis+cluster://n1/3", "only database 0"),
        ("redis+sentinel://s1:26379", "ends with /<primary name>"),
        ("redis+sentinel://s1/main/x", "ends with /<primary name>"),
        ("redis+cluster://n1:port", "port must be a number"),
        ("redis+cluster:///0", "at least one host"),
        ("redis+cluster://n1?ssl_cert_reqs=none", "no ?options"),
    ],
)
def test_a_wrong_url_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, url: str, complaint: str
) -> None:
    monkeypatch.setenv("INFERPOOL_REDIS_URL", url)
    with pytest.raises(ConfigurationError, match="INFERPOOL_REDIS_URL") as refused:
        load_settings(_env_file=None)
    assert complaint in str(refused.value)


def test_waiting_for_replicas_is_refused_on_a_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERPOOL_REDIS_URL", "redis+cluster://n1")
    monkeypatch.setenv("INFERPOOL_REDIS_WAIT_REPLICAS", "1")
    with pytest.raises(ConfigurationError, match="not yet on Redis Cluster"):
        load_settings(_env_file=None)
    monkeypatch.setenv("INFERPOOL_REDIS_URL", "redis+sentinel://s1/main")
    assert load_settings(_env_file=None).redis.wait_replicas == 1
