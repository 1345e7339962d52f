"""Configuration: one pydantic-settings model per process, read once, passed explicitly.

Every field can be set from the environment with the ``INFERPOOL_`` prefix (nested
sections too: ``INFERPOOL_KAFKA_BOOTSTRAP_SERVERS``, ``INFERPOOL_REDIS_URL``) or from a
``.env`` file in the working directory. Nothing here is read at import time.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from inferpool.errors import ConfigurationError

ENV_PREFIX = "INFERPOOL_"

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class KafkaSettings(BaseModel):
    """How to reach Kafka, including its security settings."""

    bootstrap_servers: str = "127.0.0.1:9092"
    client_id: str = "inferpool"
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    request_timeout_ms: int = Field(default=30_000, gt=0)

    @model_validator(mode="after")
    def _security_is_complete(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL_"):
            if self.sasl_mechanism is None:
                raise ValueError(
                    f"kafka.sasl_mechanism is required with security_protocol="
                    f"{self.security_protocol}; set INFERPOOL_KAFKA_SASL_MECHANISM"
                )
            if not self.sasl_username or self.sasl_password is None:
                raise ValueError(
                    "kafka.sasl_username and kafka.sasl_password are required with SASL; set "
                    "INFERPOOL_KAFKA_SASL_USERNAME and INFERPOOL_KAFKA_SASL_PASSWORD"
                )
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"kafka.{name}: no such file: {path}")
        return self

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments shared by every aiokafka client we build."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
            "request_timeout_ms": self.request_timeout_ms,
        }
        if self.security_protocol in ("SSL", "SASL_SSL"):
            options["ssl_context"] = self.ssl_context()
        if self.sasl_mechanism is not None:
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.sasl_username
            options["sasl_plain_password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else None
            )
        return options

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(
            cafile=str(self.ssl_cafile) if self.ssl_cafile else None
        )
        if self.ssl_certfile is not None:
            context.load_cert_chain(
                str(self.ssl_certfile), str(self.ssl_keyfile) if self.ssl_keyfile else None
            )
        return context


RedisKind = Literal["single", "sentinel", "cluster"]

#: The URL schemes of each form of ``INFERPOOL_REDIS_URL`` (the ``rediss`` ones use TLS).
REDIS_SCHEMES: dict[str, RedisKind] = {
    "redis": "single",
    "rediss": "single",
    "unix": "single",
    "redis+sentinel": "sentinel",
    "rediss+sentinel": "sentinel",
    "redis+cluster": "cluster",
    "rediss+cluster": "cluster",
}
DEFAULT_PORTS: dict[RedisKind, int] = {"single": 6379, "sentinel": 26379, "cluster": 6379}


@dataclass(frozen=True, slots=True)
class RedisEndpoints:
    """What a sentinel or cluster URL names: where to ask first, and how to log in."""

    kind: RedisKind
    nodes: tuple[tuple[str, int], ...]  # the sentinels, or the cluster's seed nodes
    service: str | None  # the primary's name at the sentinels
    db: int
    tls: bool
    username: str | None
    password: str | None


def _host_port(item: str, default_port: int) -> tuple[str, int]:
    if item.startswith("["):  # [ipv6]:port
        host, _, rest = item[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        host, _, port = item.rpartition(":") if ":" in item else (item, "", "")
    if not host:
        raise ValueError(f"redis.url: empty host in {item!r}")
    if port and not port.isdigit():
        raise ValueError(f"redis.url: port must be a number in {item!r}")
    return host, int(port) if port else default_port


def parse_redis_url(url: str) -> RedisEndpoints:
    """The parts of any ``INFERPOOL_REDIS_URL`` form (see ``RedisSettings``)."""
    scheme, sep, rest = url.partition("://")
    kind = REDIS_SCHEMES.get(scheme.lower()) if sep else None
    if kind is None:
        raise ValueError(
            "redis.url must start with redis://, rediss://, unix:// (one Redis), "
            "redis+sentinel:// or redis+cluster:// (rediss+... for TLS)"
        )
    if kind == "single":
        return RedisEndpoints("single", (), None, 0, scheme == "rediss", None, None)
    if "?" in rest or "#" in rest:
        raise ValueError("redis.url: sentinel and cluster URLs take no ?options; use the "
                         "INFERPOOL_REDIS_* settings")
    userinfo, _, rest = rest.rpartition("@")
    hosts, _, path = rest.partition("/")
    user, _, password = userinfo.partition(":")
    nodes = tuple(_host_port(h, DEFAULT_PORTS[kind]) for h in hosts.split(",") if h)
    if not nodes:
        raise ValueError(f"redis.url: a {kind} URL names at least one host:port")
    parts = [part for part in path.split("/") if part]
    service, db = _service_and_db(kind, parts)
    return RedisEndpoints(
        kind, nodes, service, db, scheme.startswith("rediss"),
        unquote(user) or None, unquote(password) or None,
    )


def _service_and_db(kind: RedisKind, parts: list[str]) -> tuple[str | None, int]:
    if kind == "cluster":
        if parts not in ([], ["0"]):
            raise ValueError("redis.url: Redis Cluster has only database 0 (no /path)")
        return None, 0
    if not parts or len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
        raise ValueError(
            "redis.url: a sentinel URL ends with /<primary name>[/<db>], e.g. "
            "redis+sentinel://s1:26379,s2:26379/inferpool/0"
        )
    return unquote(parts[0]), int(parts[1]) if len(parts) == 2 else 0


class RedisSettings(BaseModel):
    """How to reach Redis: ``url`` in one of three forms (``rediss`` instead of ``redis``
    for TLS; ACL user and password in the URL or in ``username``/``password``, the URL's
    win):

    - one Redis: ``redis://[user:password@]host:port/db`` (or ``unix:///path.sock``);
    - Sentinel: ``redis+sentinel://[user:password@]s1:26379,s2:26379/<primary name>[/db]``:
      the sentinels are asked where the primary is, at start and after every lost
      connection; the user and password are the data nodes' (``sentinel_password`` is the
      sentinels' own, if they require one);
    - Redis Cluster: ``redis+cluster://[user:password@]n1:6379,n2:6379``: any reachable
      nodes of the cluster; the client learns the rest and follows MOVED/ASK.

    ``wait_replicas`` > 0 (one primary only): a result counts as stored, and its offset may
    be committed, only once that many replicas have it (``WAIT``, up to
    ``wait_timeout_ms``; fewer is a retriable store error), so a failover cannot lose it.
    """

    url: str = "redis://127.0.0.1:6379/0"
    username: str | None = None
    password: SecretStr | None = None
    sentinel_password: SecretStr | None = None
    ssl_ca_certs: Path | None = None
    socket_timeout_s: float = Field(default=5.0, gt=0)
    wait_replicas: int = Field(default=0, ge=0)
    wait_timeout_ms: int = Field(default=1000, gt=0)

    @field_validator("url")
    @classmethod
    def _url_form(cls, value: str) -> str:
        parse_redis_url(value)
        return value

    @model_validator(mode="after")
    def _wait_on_one_primary(self) -> RedisSettings:
        if self.wait_replicas and self.endpoints().kind == "cluster":
            raise ValueError(
                "redis.wait_replicas is supported on one primary (redis://, redis+sentinel://)"
                ", not yet on Redis Cluster; set INFERPOOL_REDIS_WAIT_REPLICAS=0"
            )
        return self

    def endpoints(self) -> RedisEndpoints:
        """The URL's parts (``kind`` says which form it is)."""
        return parse_redis_url(self.url)

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for ``redis.asyncio.Redis.from_url`` besides the URL (and, for
        the sentinel and cluster forms, for every data node's connection)."""
        options: dict[str, Any] = {
            "socket_timeout": self.socket_timeout_s,
            "socket_connect_timeout": self.socket_timeout_s,
        }
        if self.username is not None:
            options["username"] = self.username
        if self.password is not None:
            options["password"] = self.password.get_secret_value()
        if self.ssl_ca_certs is not None:
            options["ssl_ca_certs"] = str(self.ssl_ca_certs)
        return options


class InferpoolSettings(BaseSettings):
    """Everything one inferpool process reads from its environment."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="_",
        env_nested_max_split=1,
        env_file=".env",
        extra="ignore",
    )

    kafka: KafkaSettings = KafkaSettings()
    redis: RedisSettings = RedisSettings()

    # Topics and group. ``request_topic`` may contain ``{model}`` to give each model its topic.
    request_topic: str = "inferpool.requests"
    request_topic_partitions: int = Field(default=8, gt=0)
    request_topic_replication: int = Field(default=1, gt=0)
    create_topics: bool = True
    dead_letter_topic: str = "inferpool.dead-letter"
    # How long one dead-letter copy may take to be acknowledged (it is tried a few times,
    # then given up and counted; answers and commits never wait for it).
    dead_letter_timeout_ms: int = Field(default=10_000, gt=0)
    consumer_group: str = "inferpool-workers"

    # Models served by a worker: ``name`` (built in) or ``name=package.module:factory``.
    models: Annotated[list[str], NoDecode] = ["echo"]
    # A TOML file declaring models in full (loader, quantization, device, limits); its
    # models come first, then those of ``models`` that it does not name.
    models_file: Path | None = None
    torch_threads: int | None = Field(default=None, gt=0)

    # Batching.
    max_batch_size: int = Field(default=32, gt=0)
    max_wait_ms: float = Field(default=10.0, ge=0)
    max_inflight_requests: int = Field(default=1024, gt=0)
    # Bytes of fetched-but-unanswered request values a worker holds before it pauses fetching.
    max_inflight_bytes: int = Field(default=268_435_456, gt=0)
    # A request whose runs ended its worker this many times goes to the dead-letter topic.
    max_attempts: int = Field(default=3, gt=0)
    # A stage (prepare a chunk, collate or run a batch) that takes longer is hung: the worker
    # reports itself dead (/healthz 503) and exits, so it is restarted.
    stage_timeout_s: float = Field(default=120.0, gt=0)

    # Priority lanes (docs/protocol.md, "Priority lanes"). The share of
    # max_inflight_requests the normal and the low lane may hold (high may hold all): past
    # it, that lane's partitions are paused, so a low backlog never keeps high requests
    # from being fetched. A queued request counts as one lane higher after every
    # lane_aging_ms it has waited: low never starves.
    lane_share_normal: float = Field(default=0.5, gt=0, le=1)
    lane_share_low: float = Field(default=0.25, gt=0, le=1)
    lane_aging_ms: float = Field(default=2000.0, gt=0)

    # Tenants: "name=share,..." weights for fair share inside a lane (a tenant not named,
    # and requests without a tenant, have share 1), and "name=rps,..." rate limits in
    # requests per second per worker (a tenant not named has none).
    tenant_shares: Annotated[dict[str, float], NoDecode] = {}
    tenant_rate_limits: Annotated[dict[str, float], NoDecode] = {}

    # Load summaries for admission at submit: how often each worker writes them.
    load_report_interval_ms: float = Field(default=1000.0, gt=0)

    # Results.
    result_ttl_s: int = Field(default=3600, gt=0)
    result_key_prefix: str = "inferpool"

    # Limits.
    max_request_bytes: int = Field(default=1_048_576, gt=0)
    # Compressed bytes one fetch may bring (every partition together), and the most one
    # record batch may decompress to: larger batches are refused unread (unreadable_batch).
    fetch_max_bytes: int = Field(default=16_777_216, gt=0)
    max_decompressed_batch_bytes: int = Field(default=67_108_864, gt=0)

    # Worker lifecycle.
    worker_id: str | None = None
    drain_timeout_s: float = Field(default=30.0, gt=0)
    commit_interval_ms: float = Field(default=100.0, ge=0)
    session_timeout_ms: int = Field(default=10_000, gt=0)
    heartbeat_interval_ms: int = Field(default=3_000, gt=0)
    max_poll_interval_ms: int = Field(default=300_000, gt=0)
    # How long the broker may hold a fetch when there is nothing new. Kafka answers as soon as
    # a record arrives; a broker that does not (Tansu: the embedded stack sets 20) adds up to
    # this much latency to a request that arrives while the worker is idle.
    fetch_max_wait_ms: int = Field(default=500, ge=0)
    # Send LeaveGroup when a worker stops, so its partitions move at once (Kafka). False: the
    # broker expires the member after session_timeout_ms instead. The embedded Tansu stack
    # sets False: Tansu 0.6.0 can lose its group leader for good when the leader leaves while
    # the group is rebalancing (docs/operations.md, "Known broker issues").
    leave_group_on_stop: bool = True

    # Metrics and health (GET /metrics, /healthz, /readyz); port 0 picks a free port.
    metrics_host: str = "0.0.0.0"
    metrics_port: int = Field(default=9100, ge=0, le=65535)

    # Logging.
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "console"] = "json"

    @field_validator("models", mode="before")
    @classmethod
    def _split_models(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("models")
    @classmethod
    def _some_model(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("models must name at least one model (INFERPOOL_MODELS=echo)")
        return value

    @field_validator("tenant_shares", "tenant_rate_limits", mode="before")
    @classmethod
    def _split_pairs(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        pairs: dict[str, str] = {}
        for part in (p.strip() for p in value.split(",")):
            name, sep, number = part.partition("=")
            if not part:
                continue
            if not sep or not name.strip():
                raise ValueError(f"expected name=number pairs separated by commas, got {part!r}")
            pairs[name.strip()] = number.strip()
        return pairs

    @field_validator("tenant_shares", "tenant_rate_limits")
    @classmethod
    def _positive(cls, value: dict[str, float]) -> dict[str, float]:
        for name, number in value.items():
            if not number > 0:
                raise ValueError(f"tenant {name!r}: the number must be > 0, got {number}")
        return value

    @field_validator("result_key_prefix")
    @classmethod
    def _no_braces(cls, value: str) -> str:
        if "{" in value or "}" in value:
            raise ValueError("result_key_prefix must not contain '{' or '}' (hash tags)")
        return value

    @field_validator("request_topic")
    @classmethod
    def _topic_template(cls, value: str) -> str:
        try:
            value.format(model="m")
        except (KeyError, IndexError, ValueError):
            raise ValueError(
                "request_topic may contain only the placeholder {model}, e.g. inferpool.{model}"
            ) from None
        return value

    def topic_for(self, model: str) -> str:
        """The request topic a request for ``model`` is published to."""
        return self.request_topic.format(model=model)


def _env_value(value: Any) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, list):
        return ",".join(str(item) for item in value)
    if isinstance(value, dict):
        return ",".join(f"{key}={item}" for key, item in value.items())
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def settings_environment(settings: InferpoolSettings) -> dict[str, str]:
    """The INFERPOOL_* variables that make a child process read exactly these settings."""
    env: dict[str, str] = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, BaseModel):
            for sub in type(value).model_fields:
                sub_value = getattr(value, sub)
                if sub_value is not None:
                    env[f"{ENV_PREFIX}{name}_{sub}".upper()] = _env_value(sub_value)
        elif value is not None:
            env[f"{ENV_PREFIX}{name}".upper()] = _env_value(value)
    return env


def _env_name(location: tuple[int | str, ...]) -> str:
    return ENV_PREFIX + "_".join(str(part) for part in location).upper()


def load_settings(**overrides: Any) -> InferpoolSettings:
    """Read the settings once; a wrong setting becomes a ConfigurationError naming it."""
    try:
        return InferpoolSettings(**overrides)
    except ValidationError as error:
        problems = "; ".join(
            f"{_env_name(problem['loc'])}: {problem['msg']}" for problem in error.errors()
        )
        raise ConfigurationError(f"invalid configuration: {problems}") from None
