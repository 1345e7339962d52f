"""Connecting to Kafka: every aiokafka client (producer, consumer, admin) is started here,
bounded in time, and every way the start can fail ends in one of two clear errors:

- ``BrokerUnavailable`` (retriable): nothing answered, or not in time;
- ``ConfigurationError`` (not retriable): the broker refused our SASL credentials or
  mechanism; retrying cannot help, the settings must change.

Neither message contains the password.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from aiokafka.errors import (
    AuthenticationFailedError,
    AuthenticationMethodNotSupported,
    IllegalSaslStateError,
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)

from inferpool.errors import BrokerUnavailable, ConfigurationError
from inferpool.settings import KafkaSettings

#: Added to the request timeout to bound a whole client start.
GRACE_S = 1.0

_REFUSED: tuple[type[Exception], ...] = (
    AuthenticationFailedError,
    AuthenticationMethodNotSupported,
    IllegalSaslStateError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
# A broker may end a SCRAM exchange with an error message ("e=...") that aiokafka does not
# parse; it then fails with one of these instead of a KafkaError (seen with Tansu).
_SCRAM_PARSE_ERRORS: tuple[type[Exception], ...] = (KeyError, ValueError, UnicodeDecodeError)


def broker_unavailable(kafka: KafkaSettings, what: str) -> BrokerUnavailable:
    """The one message for 'Kafka did not answer': what failed and what to check."""
    return BrokerUnavailable(
        f"{what}: Kafka at {kafka.bootstrap_servers} could not be reached or did not answer "
        f"within {kafka.request_timeout_ms} ms (INFERPOOL_KAFKA_REQUEST_TIMEOUT_MS); check "
        "INFERPOOL_KAFKA_BOOTSTRAP_SERVERS, that the broker is up and reachable from here, and "
        "the security settings (INFERPOOL_KAFKA_SECURITY_PROTOCOL, INFERPOOL_KAFKA_SASL_*)"
    )


def credentials_refused(kafka: KafkaSettings, what: str, reason: str) -> ConfigurationError:
    return ConfigurationError(
        f"{what}: Kafka at {kafka.bootstrap_servers} refused the SASL {kafka.sasl_mechanism} "
        f"login of user {kafka.sasl_username!r} ({reason}); check INFERPOOL_KAFKA_SASL_USERNAME, "
        "INFERPOOL_KAFKA_SASL_PASSWORD and INFERPOOL_KAFKA_SASL_MECHANISM"
    )


async def start_client(
    start: Callable[[], Awaitable[object]],
    stop: Callable[[], Awaitable[object]],
    kafka: KafkaSettings,
    what: str,
) -> None:
    """``await start()``, bounded by the request timeout; on failure ``stop()`` and raise."""
    try:
        await asyncio.wait_for(start(), kafka.request_timeout_ms / 1000 + GRACE_S)
    except _REFUSED as error:
        await _quietly(stop)
        raise credentials_refused(kafka, what, type(error).__name__) from None
    except _SCRAM_PARSE_ERRORS as error:
        await _quietly(stop)
        if kafka.sasl_mechanism is None:
            raise
        raise credentials_refused(kafka, what, f"{type(error).__name__} in the exchange") from None
    except (TimeoutError, KafkaError, OSError):
        await _quietly(stop)
        raise broker_unavailable(kafka, what) from None
    except BaseException:  # cancelled: leave nothing running
        await _quietly(stop)
        raise


async def _quietly(stop: Callable[[], Awaitable[object]]) -> None:
    with contextlib.suppress(Exception):
        await stop()
