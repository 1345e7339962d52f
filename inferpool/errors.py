"""One exception hierarchy for the whole project.

Policy lives on the class: ``code`` is the stable string a client sees in an
error result, ``retriable`` tells a retry loop whether trying again can help.
"""

from __future__ import annotations

from typing import ClassVar


class InferpoolError(Exception):
    """Root of every error raised by inferpool."""

    code: ClassVar[str] = "internal_error"
    retriable: ClassVar[bool] = False


class ConfigurationError(InferpoolError):
    """A setting is missing or wrong; the message names it."""

    code = "invalid_configuration"


class LifecycleError(InferpoolError):
    """An object was started twice, or used before start / after stop."""

    code = "lifecycle_error"


# --- errors attributable to one request: they become an `error` result -----------------


class RequestError(InferpoolError):
    """Something is wrong with one request; it gets an ``error`` result, the pool goes on."""

    code = "invalid_request"


class MalformedRequest(RequestError):
    """The record's value could not be decoded at all (not msgpack / JSON, truncated, ...)."""

    code = "malformed_request"


class UnreadableBatch(MalformedRequest):
    """A Kafka record batch could not be read at all (codec, CRC, corrupt, too large)."""

    code = "unreadable_batch"


class InvalidRequest(RequestError):
    """The value decoded but a field is missing or has the wrong type."""

    code = "invalid_request"


class UnsupportedVersion(RequestError):
    """The request's format version is not one this worker understands."""

    code = "unsupported_version"


class PayloadTooLarge(RequestError):
    """The request exceeds the configured size limit; it was not decoded."""

    code = "payload_too_large"


class UnknownModel(RequestError):
    """The request names a model this pool does not serve."""

    code = "unknown_model"


class InvalidInput(RequestError):
    """The inputs do not fit the model: wrong type, dtype or shape."""

    code = "invalid_input"


class ModelError(RequestError):
    """The model raised while running the batch that held this request."""

    code = "model_error"


class PoisonRequest(RequestError):
    """Every attempt at running this request ended its worker (a crash or a hang)."""

    code = "poison_request"


class InvalidOutput(RequestError):
    """The model's output for this request cannot be encoded (e.g. NaN in a JSON result)."""

    code = "invalid_output"


class StageHung(InferpoolError):
    """A stage (prepare, collate, forward) ran past INFERPOOL_STAGE_TIMEOUT_S: the worker is
    no longer alive (its thread cannot be stopped) and must be restarted."""

    code = "stage_hung"


# --- errors of the services around us -------------------------------------------------


class BrokerUnavailable(InferpoolError):
    """Kafka could not be reached or did not acknowledge in time."""

    code = "broker_unavailable"
    retriable = True


class SubmitError(InferpoolError):
    """Kafka refused a request for a reason that retrying will not fix."""

    code = "submit_failed"


class ResultStoreUnavailable(InferpoolError):
    """Redis could not be reached."""

    code = "result_store_unavailable"
    retriable = True


class ResultTimeout(InferpoolError):
    """No result arrived for a request within the time the caller was willing to wait."""

    code = "result_timeout"


class AdmissionRefused(InferpoolError):
    """``submit(..., admission=True)``: the pool's load says the request would finish past
    its deadline, so it was not published. Retriable: try later, or with a later deadline."""

    code = "admission_refused"
    retriable = True

    def __init__(self, message: str, predicted_wait_ms: float) -> None:
        super().__init__(message)
        self.predicted_wait_ms = predicted_wait_ms
