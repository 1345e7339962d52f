"""The least-privilege Redis ACLs of docs/operations.md are enough, and no more."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import redis
import redis.asyncio

from inferpool.embedded import EmbeddedRedis
from inferpool.errors import ConfigurationError
from inferpool.protocol import ResultKeys, ResultRecord, ResultStatus
from inferpool.protocol.wire import Encoding
from inferpool.settings import RedisSettings
from results.reader import ResultReader
from results.store import RequestState
from results.writer import ResultWriter

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def documented_acls() -> dict[str, str]:
    lines = re.findall(r"^ACL SETUSER (\S+) (.*)$", OPERATIONS.read_text(), flags=re.MULTILINE)
    return dict(lines)


def url(server: EmbeddedRedis, user: str, password: str) -> str:
    return f"redis://{user}:{password}@127.0.0.1:{server.port}/0"


async def test_workers_write_and_clients_read_with_the_documented_acls(
    redis_server: EmbeddedRedis,
    namespace: str,
) -> None:
    acls = documented_acls()
    assert set(acls) == {"inferpool-worker", "inferpool-client"}
    admin = redis.Redis(port=redis_server.port)
    for user, rules in acls.items():
        rules = rules.replace("~inferpool:*", f"~{namespace}:*").replace(
            "&inferpool:*", f"&{namespace}:*"
        )
        admin.execute_command(
            "ACL",
            "SETUSER",
            user,
            "reset",
            *rules.replace(">WORKER_PASSWORD", ">w-pass")
            .replace(">CLIENT_PASSWORD", ">c-pass")
            .split(),
        )
    keys = ResultKeys(namespace)
    worker = RedisSettings(url=url(redis_server, "inferpool-worker", "w-pass"))
    client = RedisSettings(url=url(redis_server, "inferpool-client", "c-pass"))
    record = ResultRecord(id="acl-1", status=ResultStatus.OK, outputs=[1, 2])
    async with ResultWriter(worker, keys, ttl_s=60) as writer:
        assert await writer.count_attempts(["acl-1"]) == [1]
        await writer.mark_accepted(["acl-2"])
        assert await writer.write([(record, Encoding.MSGPACK)]) == 1
    async with ResultReader(client, keys, poll_interval_s=0.2) as reader:
        assert (await reader.get("acl-1")).record == record
        assert (await reader.get("acl-2")).state is RequestState.PENDING
        assert (await reader.wait("acl-1", timeout_s=5)).outputs == [1, 2]
    # and no more: a client cannot write, a worker cannot read
    as_client = redis.Redis(port=redis_server.port, username="inferpool-client", password="c-pass")
    with pytest.raises(redis.exceptions.NoPermissionError):
        as_client.set(keys.result("acl-3"), b"forged")
    as_worker = redis.Redis(port=redis_server.port, username="inferpool-worker", password="w-pass")
    with pytest.raises(redis.exceptions.NoPermissionError):
        as_worker.get(keys.result("acl-1"))
    with pytest.raises(redis.exceptions.NoPermissionError):
        as_worker.set("elsewhere:key", b"x")
    for connection in (as_client, as_worker, admin):
        connection.close()
    admin = redis.Redis(port=redis_server.port)
    admin.execute_command("ACL", "DELUSER", *acls)
    admin.close()


async def test_a_worker_missing_a_permission_is_told_so_at_start(
    redis_server: EmbeddedRedis, namespace: str
) -> None:
    rules = documented_acls()["inferpool-worker"].replace("~inferpool:*", f"~{namespace}:*")
    rules = rules.replace("&inferpool:*", f"&{namespace}:*").replace(">WORKER_PASSWORD", ">p")
    admin = redis.Redis(port=redis_server.port)
    user = f"{namespace}-worker"
    admin.execute_command("ACL", "SETUSER", user, "reset", *rules.replace(" +publish", "").split())
    try:
        lacking = RedisSettings(url=url(redis_server, user, "p"))
        async with ResultWriter(lacking, ResultKeys(namespace), ttl_s=60) as writer:
            with pytest.raises(ConfigurationError, match="publish"):
                await writer.check_access()
        documented = RedisSettings(url=url(redis_server, "inferpool-worker", "w-pass"))
        admin.execute_command("ACL", "SETUSER", "inferpool-worker", "reset",
                              *rules.replace(">p", ">w-pass").split())
        left_by_the_refused_probe = set(admin.scan_iter(f"{namespace}:*"))
        async with ResultWriter(documented, ResultKeys(namespace), ttl_s=60) as writer:
            await writer.check_access()  # the documented permissions are enough
        assert set(admin.scan_iter(f"{namespace}:*")) == left_by_the_refused_probe  # none new
    finally:
        admin.execute_command("ACL", "DELUSER", user, "inferpool-worker")
        admin.close()
