"""Where a request's state lives in Redis. Every key of one request shares the hash tag
``{<request id>}``, so they land in one Redis Cluster slot."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "inferpool"


@dataclass(frozen=True, slots=True)
class ResultKeys:
    """Key names under one prefix (a deployment, or a test, uses its own)."""

    prefix: str = DEFAULT_PREFIX

    def result(self, request_id: str) -> str:
        """The final result (``ok`` / ``error`` / ``expired``); written once, with a TTL."""
        return f"{self.prefix}:{{{request_id}}}:result"

    def accepted(self, request_id: str) -> str:
        """Marker set when a worker has taken the request: 'pending' rather than 'unknown'."""
        return f"{self.prefix}:{{{request_id}}}:accepted"

    def attempts(self, request_id: str) -> str:
        """How many times a worker started running the request (poison detection)."""
        return f"{self.prefix}:{{{request_id}}}:attempts"

    def done_channel(self, request_id: str) -> str:
        """Pub/sub channel told when the result is written (a hint; the key is the truth)."""
        return f"{self.prefix}:{{{request_id}}}:done"

    def stream(self, request_id: str) -> str:
        """A generative request's tokens as they are made (a Redis stream); same TTL."""
        return f"{self.prefix}:{{{request_id}}}:stream"

    def cancel(self, request_id: str) -> str:
        """Set by a client to cancel the request (any value, the results' TTL): a worker
        answers ``cancelled`` instead of starting it; a generation stops at its next step."""
        return f"{self.prefix}:{{{request_id}}}:cancel"

    def load(self, model: str) -> str:
        """A hash: each worker's load summary of ``model`` (field = worker id, value = a
        JSON ``LoadSummary``), read by producers that ask for admission at submit."""
        return f"{self.prefix}:load:{{{model}}}"
